"""The stack's PostgreSQL: a ``pg_ctl``-managed data directory under ``.tspipe/stack/pg``,
or an existing server named by an admin URL (``TSPIPE_STACK_POSTGRES_URL``). Either way
the role ``tspipe`` (password: ``TSPIPE_STACK_PASSWORD``) owns one database each for the
catalog, MLflow and Prefect.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from tspipe.errors import TspipeError

ROLE = "tspipe"
DATABASES = {"catalog": "tspipe_catalog", "mlflow": "tspipe_mlflow",
             "prefect": "tspipe_prefect"}
PASSWORD_ENV = "TSPIPE_STACK_PASSWORD"  # noqa: S105 (the variable's name)
ADMIN_URL_ENV = "TSPIPE_STACK_POSTGRES_URL"
_SAFE_PASSWORD = re.compile(r"[A-Za-z0-9._~-]{8,}")


class StackError(TspipeError):
    """The stack cannot start or stop: what, and what to do."""


def password() -> str:
    """The stack role's password, from the environment only (never stored, never logged)."""
    value = os.environ.get(PASSWORD_ENV, "")
    if not value:
        raise StackError(f"{PASSWORD_ENV} is not set: it is the password of the stack's "
                         f"PostgreSQL role {ROLE!r}. Set it first, e.g. "
                         f"export {PASSWORD_ENV}=$(openssl rand -hex 16)")
    if not _SAFE_PASSWORD.fullmatch(value):
        raise StackError(f"{PASSWORD_ENV}: use 8 or more letters, digits and . _ ~ - "
                         "(it goes into database URLs unescaped)")
    return value


@dataclass(frozen=True)
class Server:
    """Where the stack's PostgreSQL listens; ``data_dir`` only when the stack manages it."""

    host: str
    port: int
    data_dir: Path | None = None

    def url(self, database: str, driver: str = "psycopg", secret: str | None = None) -> str:
        """A SQLAlchemy URL of ``database`` as role tspipe; ``secret`` None: the
        placeholder ``${TSPIPE_STACK_PASSWORD}`` a shell expands (for printing)."""
        pw = secret if secret is not None else "${" + PASSWORD_ENV + "}"
        return f"postgresql+{driver}://{ROLE}:{pw}@{self.host}:{self.port}/{database}"


def _connect(conninfo: str, what: str):
    import psycopg

    try:
        return psycopg.connect(conninfo, autocommit=True, connect_timeout=10)
    except psycopg.OperationalError as exc:
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if "password authentication failed" in text:
            raise StackError(f"{what} refused the password: {text}") from None
        raise StackError(f"{what} cannot be reached: {text}") from None


def _ensure_databases(conn) -> None:
    from psycopg import sql

    for name in DATABASES.values():
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
            continue
        conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(
            sql.Identifier(name), sql.Identifier(ROLE)))


# -- an existing server -------------------------------------------------------------------
def external(admin_url: str) -> Server:
    """Create (or update) role tspipe and its databases on the server of ``admin_url``."""
    from psycopg import sql
    from sqlalchemy.engine import make_url

    try:
        url = make_url(admin_url)
    except Exception:
        raise StackError(f"{ADMIN_URL_ENV}: not a database URL") from None
    if not url.drivername.startswith("postgresql"):
        raise StackError(f"{ADMIN_URL_ENV}: a postgresql:// URL is needed, got "
                         f"{url.drivername}://")
    host, port = url.host or "127.0.0.1", url.port or 5432
    conn = _connect(url.set(drivername="postgresql").render_as_string(hide_password=False),
                    f"PostgreSQL at {host}:{port} ({ADMIN_URL_ENV}, user {url.username})")
    with conn:
        secret = password()
        exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (ROLE,)).fetchone()
        verb = "ALTER" if exists else "CREATE"
        conn.execute(sql.SQL(verb + " ROLE {} LOGIN PASSWORD {}").format(
            sql.Identifier(ROLE), sql.Literal(secret)))
        _ensure_databases(conn)
    return Server(host, port)


# -- a managed data directory --------------------------------------------------------------
def _bin(name: str) -> str:
    found = shutil.which(name) or next(iter(sorted(
        (str(p) for p in Path("/usr/lib/postgresql").glob(f"*/bin/{name}")), reverse=True)),
        None)
    if found is None:
        raise StackError(f"PostgreSQL is not installed here (no {name} on PATH or in "
                         "/usr/lib/postgresql/*/bin): install it (Debian: apt-get install "
                         f"postgresql), or set {ADMIN_URL_ENV} to an existing server's admin "
                         "URL")
    return found


def _owner() -> str | None:
    """PostgreSQL refuses to run as root: as root, the cluster runs as user ``postgres``."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        raise StackError("PostgreSQL cannot run as root and there is no 'postgres' user: "
                         f"run the stack as another user, or set {ADMIN_URL_ENV}") from None
    return "postgres"


def _run(cmd: list[str], user: str | None, what: str, timeout: float = 120) -> None:
    done = subprocess.run(cmd, user=user, capture_output=True, text=True, timeout=timeout,
                          cwd="/")
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        raise StackError(f"{what} failed: {' / '.join(tail)}")


def postmaster_pid(data_dir: Path) -> int | None:
    """The running postmaster's pid, from its pid file; None when it is not running."""
    try:
        pid = int((data_dir / "postmaster.pid").read_text().split()[0])
        os.kill(pid, 0)
    except (OSError, ValueError, IndexError):
        return None
    return pid


def managed_up(data_dir: Path, port: int, log: Path) -> Server:
    """initdb (first time), configure the port, start, create the databases."""
    user = _owner()
    secret = password()
    if not (data_dir / "PG_VERSION").exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        pwfile = data_dir.parent / "initdb.pw"
        pwfile.write_text(secret + "\n")
        try:
            for p in (data_dir, pwfile):
                p.chmod(0o700 if p.is_dir() else 0o600)
                if user:
                    shutil.chown(p, user=user)
            _run([_bin("initdb"), "-D", str(data_dir), "-U", ROLE, "--pwfile", str(pwfile),
                  "--auth=scram-sha-256", "-E", "UTF8", "--no-instructions"], user,
                 f"initdb {data_dir}")
        finally:
            pwfile.unlink(missing_ok=True)
    # TCP on the loopback only, no Unix socket (its path may be too long); last line wins.
    (data_dir / "postgresql.auto.conf").write_text(
        "# written by tspipe stack up\n"
        f"port = {port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = ''\n")
    if user:
        shutil.chown(data_dir / "postgresql.auto.conf", user=user)
    if postmaster_pid(data_dir) is None:
        log.parent.mkdir(parents=True, exist_ok=True)
        log.touch()
        if user:
            shutil.chown(log, user=user)
        _run([_bin("pg_ctl"), "-D", str(data_dir), "-l", str(log), "-w", "-t", "60",
              "start"], user, f"starting PostgreSQL (log: {log})")
    server = Server("127.0.0.1", port, data_dir)
    conn = _connect(f"host=127.0.0.1 port={port} dbname=postgres user={ROLE} "
                    f"password={secret}",
                    f"the stack's PostgreSQL ({data_dir}: set {PASSWORD_ENV} to the password "
                    "it was first started with)")
    with conn:
        _ensure_databases(conn)
    return server


def managed_down(data_dir: Path) -> bool:
    """Stop the managed cluster; False when it was not running."""
    if postmaster_pid(data_dir) is None:
        return False
    _run([_bin("pg_ctl"), "-D", str(data_dir), "-m", "fast", "-w", "stop"], _owner(),
         f"stopping PostgreSQL {data_dir}")
    return True


def reachable(server: Server) -> str | None:
    """None when role tspipe can log in; else what went wrong."""
    try:
        _connect(f"host={server.host} port={server.port} dbname={DATABASES['catalog']} "
                 f"user={ROLE} password={password()}", "PostgreSQL").close()
    except StackError as exc:
        return str(exc)
    return None
