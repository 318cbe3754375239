"""``tspipe stack up|down|status``: the team stack on one machine, without Docker.

PostgreSQL (:mod:`tspipe.doors.stack_postgres`), an MLflow tracking server on it with
artifact serving, a Prefect server on it, the ``cpu`` and ``gpu`` work pools with a
process worker each, and ``prefect deploy --all``. Ports, logs and pids live in
``.tspipe/stack/`` (``stack.json``); ``up`` is idempotent and ``down`` stops only the
processes ``up`` started (checked by pid and command line).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tspipe.doors import stack_postgres as pg
from tspipe.doors.stack_postgres import DATABASES, Server, StackError
from tspipe.io import atomic_path
from tspipe.paths import RunPaths

POOLS = ("cpu", "gpu")
DEFAULT_PORTS = {"postgres": 5433, "mlflow": 5000, "prefect": 4200}


@dataclass
class Stack:
    root: Path
    ports: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_PORTS))
    postgres: dict = field(default_factory=dict)  # mode, host, port (, data_dir)
    processes: dict[str, dict] = field(default_factory=dict)  # name -> pid, marker, port

    @property
    def dir(self) -> Path:
        return RunPaths.at(self.root).state / "stack"

    @classmethod
    def load(cls, root: Path) -> Stack:
        stack = cls(Path(root).resolve())
        if (stack.dir / "stack.json").exists():
            raw = json.loads((stack.dir / "stack.json").read_text(encoding="utf-8"))
            stack.ports.update(raw.get("ports", {}))
            stack.postgres = raw.get("postgres", {})
            stack.processes = raw.get("processes", {})
        return stack

    def save(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        with atomic_path(self.dir / "stack.json") as tmp:
            tmp.write_text(json.dumps({"ports": self.ports, "postgres": self.postgres,
                                       "processes": self.processes}, indent=2) + "\n",
                           encoding="utf-8")

    # -- what clients use ---------------------------------------------------------------
    @property
    def server(self) -> Server:
        return Server(self.postgres.get("host", "127.0.0.1"),
                      int(self.postgres.get("port", self.ports["postgres"])))

    def urls(self, secret: str | None = None) -> dict[str, str]:
        """The variables that switch every tspipe, MLflow and Prefect command to the stack
        (``secret`` None: the password as ``${TSPIPE_STACK_PASSWORD}``, for printing)."""
        return {"TSPIPE_CATALOG_URL": self.server.url(DATABASES["catalog"], secret=secret),
                "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{self.ports['mlflow']}",
                "PREFECT_API_URL": f"http://127.0.0.1:{self.ports['prefect']}/api"}

    def ui_lines(self) -> str:
        """Where users look: MLflow in its model-training view (MLflow 3 opens its GenAI
        view unless told), Prefect's dashboard."""
        return (f"MLflow UI:  http://127.0.0.1:{self.ports['mlflow']}/#/experiments"
                "?workflowType=machine_learning\n"
                f"Prefect UI: http://127.0.0.1:{self.ports['prefect']}/dashboard")

    def env_lines(self) -> str:
        return "\n".join(f'export {k}="{v}"' for k, v in self.urls().items())


# -- processes ------------------------------------------------------------------------------
def _alive(info: dict) -> bool:
    """The recorded process is running and is still the one we started."""
    try:
        cmdline = Path(f"/proc/{info['pid']}/cmdline").read_bytes().replace(b"\0", b" ")
    except (OSError, KeyError):
        return False
    return info.get("marker", "").encode() in cmdline


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _http_ok(url: str) -> bool:
    import httpx

    try:
        return httpx.get(url, timeout=3).is_success
    except httpx.HTTPError:
        return False


def _wait(check: Callable[[], bool], what: str, log: Path, proc: subprocess.Popen | None,
          timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if proc is not None and proc.poll() is not None:
            raise StackError(f"{what} exited with code {proc.returncode}; its log: {log}\n"
                             + _tail(log))
        if time.monotonic() > deadline:
            raise StackError(f"{what} did not become healthy in {timeout:.0f} s; its log: "
                             f"{log}\n" + _tail(log))
        time.sleep(0.5)


def _tail(log: Path, lines: int = 8) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _spawn(stack: Stack, name: str, cmd: list[str], env: dict[str, str], marker: str,
           port: int | None = None) -> subprocess.Popen:
    log = stack.dir / "logs" / f"{name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        proc = subprocess.Popen(cmd, env={**os.environ, **env}, stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                cwd=stack.root, start_new_session=True)
    stack.processes[name] = {"pid": proc.pid, "marker": marker, "port": port,
                             "log": str(log)}
    stack.save()
    return proc


def _stop(infos: dict[str, dict], timeout: float = 20) -> dict[str, bool]:
    """SIGTERM to each process group (a worker's flow runs too) at once, then SIGKILL to
    what is left after ``timeout``; per name, whether it was running."""
    groups = {name: os.getpgid(info["pid"]) for name, info in infos.items() if _alive(info)}
    for pgid in groups.values():
        os.killpg(pgid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    left = dict(groups)
    while left and time.monotonic() < deadline:
        for name, pgid in list(left.items()):
            try:
                os.killpg(pgid, 0)
            except ProcessLookupError:
                del left[name]
        time.sleep(0.2)
    for pgid in left.values():
        os.killpg(pgid, signal.SIGKILL)
    return {name: name in groups for name in infos}


# -- the services, in start order --------------------------------------------------------------
def _python(*args: str) -> list[str]:
    return [sys.executable, "-m", *args]


def _launch_server(stack: Stack, name: str, cmd: list[str], env: dict[str, str],
                   health: str, say: Callable[[str], None]) -> Callable[[float], None]:
    """Start ``name`` unless it runs and answers; returns the wait for its health check
    (so that servers start side by side)."""
    port = stack.ports[name]
    info = stack.processes.get(name)
    if info and _alive(info) and _http_ok(health):
        say(f"{name}: running (pid {info['pid']}, port {port})")
        return lambda timeout: None
    if not _port_free(port):
        raise StackError(f"port {port} ({name}) is taken by a program this stack did not "
                         f"start: stop it, or choose another with --{name}-port")
    t0 = time.monotonic()
    proc = _spawn(stack, name, cmd, env, marker=f"--port {port}", port=port)

    def wait(timeout: float) -> None:
        _wait(lambda: _http_ok(health), name, stack.dir / "logs" / f"{name}.log", proc,
              timeout)
        say(f"{name}: started on 127.0.0.1:{port} in {time.monotonic() - t0:.1f} s "
            f"(pid {proc.pid})")

    return wait


def _postgres_up(stack: Stack, say: Callable[[str], None]) -> None:
    admin = os.environ.get(pg.ADMIN_URL_ENV)
    t0 = time.monotonic()
    if admin:
        server = pg.external(admin)
        stack.postgres = {"mode": "external", "host": server.host, "port": server.port}
        say(f"postgres: using the server at {server.host}:{server.port} "
            f"({pg.ADMIN_URL_ENV}); databases {', '.join(DATABASES.values())}")
    else:
        data = stack.dir / "pg"
        if stack.postgres.get("mode") != "managed" and not _port_free(stack.ports["postgres"]) \
                and pg.postmaster_pid(data) is None:
            raise StackError(f"port {stack.ports['postgres']} (postgres) is taken by a "
                             "program this stack did not start: choose another with "
                             f"--postgres-port, or name that server with {pg.ADMIN_URL_ENV}")
        server = pg.managed_up(data, stack.ports["postgres"], stack.dir / "logs" / "postgres.log")
        stack.postgres = {"mode": "managed", "host": server.host, "port": server.port,
                          "data_dir": str(data)}
        say(f"postgres: {data} on 127.0.0.1:{server.port} ready in "
            f"{time.monotonic() - t0:.1f} s")
    stack.save()
    from tspipe.catalog import upgrade

    upgrade(stack.server.url(DATABASES["catalog"], secret=pg.password()))


def _ensure_pools(stack: Stack, say: Callable[[str], None]) -> None:
    import httpx

    api = stack.urls()["PREFECT_API_URL"]
    for pool in POOLS:
        r = httpx.post(f"{api}/work_pools/", json={"name": pool, "type": "process"},
                       timeout=30)
        if r.status_code not in (200, 201, 409):
            raise StackError(f"creating work pool {pool!r}: HTTP {r.status_code} {r.text}")
    say(f"work pools: {', '.join(POOLS)}")


def _worker_online(stack: Stack, pool: str) -> bool:
    import httpx

    api = stack.urls()["PREFECT_API_URL"]
    try:
        r = httpx.post(f"{api}/work_pools/{pool}/workers/filter", json={}, timeout=5)
    except httpx.HTTPError:
        return False
    return r.is_success and any(w.get("status") == "ONLINE" for w in r.json())


def _launch_workers(stack: Stack, env: dict[str, str], say: Callable[[str], None]
                    ) -> Callable[[], None]:
    """Start a worker per pool unless it runs; returns the wait until each is online."""
    started = {}
    for pool in POOLS:
        name = f"worker-{pool}"
        info = stack.processes.get(name)
        if info and _alive(info):
            say(f"{name}: running (pid {info['pid']})")
            continue
        started[pool] = _spawn(stack, name, _python(
            "prefect", "worker", "start", "--pool", pool, "--type", "process", "--name",
            f"{socket.gethostname()}-{pool}"), env, marker=f"--pool {pool}")

    def wait() -> None:
        for pool, proc in started.items():
            _wait(lambda pool=pool: _worker_online(stack, pool), f"worker-{pool}",
                  stack.dir / "logs" / f"worker-{pool}.log", proc, 120)
            say(f"worker-{pool}: online (pid {proc.pid})")

    return wait


def _deploy(stack: Stack, prefect_file: Path, env: dict[str, str],
            say: Callable[[str], None]) -> None:
    log = stack.dir / "logs" / "deploy.log"
    t0 = time.monotonic()
    with log.open("ab") as out:
        done = subprocess.run(_python("prefect", "--no-prompt", "deploy", "--all",
                                      "--prefect-file", str(prefect_file)),
                              env={**os.environ, **env}, cwd=stack.root, stdout=out,
                              stderr=subprocess.STDOUT, timeout=600)
    if done.returncode != 0:
        raise StackError(f"prefect deploy --all failed (exit {done.returncode}); its log: "
                         f"{log}\n" + _tail(log))
    say(f"deployments: {prefect_file} deployed in {time.monotonic() - t0:.1f} s")


def service_env(stack: Stack) -> dict[str, str]:
    """What the servers, workers and flow runs see: the stack's URLs (password included,
    in the environment only), the run directory as TSPIPE_ROOT, Prefect's home here."""
    secret = pg.password()
    return {**stack.urls(secret), "TSPIPE_ROOT": str(stack.root),
            "PREFECT_HOME": str(stack.dir / "prefect-home"),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}


def up(root: Path, ports: dict[str, int | None], prefect_file: Path | None,
       say: Callable[[str], None]) -> Stack:
    stack = Stack.load(root)
    stack.ports.update({k: v for k, v in ports.items() if v})
    stack.dir.mkdir(parents=True, exist_ok=True)
    _postgres_up(stack, say)
    env = service_env(stack)
    secret = pg.password()
    # The two servers start side by side (each mostly imports), then each is waited for.
    mlflow_up = _launch_server(stack, "mlflow", _python(
        "mlflow", "server", "--host", "127.0.0.1", "--port", str(stack.ports["mlflow"]),
        "--serve-artifacts", "--artifacts-destination", str(stack.dir / "mlartifacts"),
        "--workers", "2"),
        {**env, "MLFLOW_BACKEND_STORE_URI": stack.server.url(DATABASES["mlflow"],
                                                             secret=secret)},
        f"{stack.urls()['MLFLOW_TRACKING_URI']}/health", say)
    prefect_up = _launch_server(stack, "prefect", _python(
        "prefect", "server", "start", "--host", "127.0.0.1", "--port",
        str(stack.ports["prefect"])),
        {**env, "PREFECT_API_DATABASE_CONNECTION_URL": stack.server.url(
            DATABASES["prefect"], driver="asyncpg", secret=secret),
         # The UI asks this address for its data (else :4200, whatever the port).
         "PREFECT_UI_API_URL": stack.urls()["PREFECT_API_URL"],
         # A new database connection may take over Prefect's default 5 s on a busy
         # machine; at startup that fails the server ("Application startup failed").
         "PREFECT_SERVER_DATABASE_CONNECTION_TIMEOUT": "30"},
        f"{stack.urls()['PREFECT_API_URL']}/health", say)
    mlflow_up(300)
    prefect_up(300)
    _ensure_pools(stack, say)
    workers_online = _launch_workers(stack, env, say)  # they poll while the deploy runs
    if prefect_file is not None:
        _deploy(stack, prefect_file, env, say)
    workers_online()
    return stack


def down(root: Path, say: Callable[[str], None]) -> Stack:
    stack = Stack.load(root)
    workers = {n: stack.processes[n] for n in (f"worker-{p}" for p in POOLS)
               if n in stack.processes}
    servers = {n: stack.processes[n] for n in ("prefect", "mlflow") if n in stack.processes}
    for group in (workers, servers):  # workers first: they report to the Prefect server
        for name, was_running in _stop(group).items():
            say(f"{name}: {'stopped' if was_running else 'was not running'}")
            del stack.processes[name]
        stack.save()
    if stack.postgres.get("mode") == "managed":
        stopped = pg.managed_down(Path(stack.postgres["data_dir"]))
        say(f"postgres: {'stopped' if stopped else 'was not running'}")
    elif stack.postgres.get("mode") == "external":
        say("postgres: left running (not started by this stack)")
    return stack


def status(root: Path) -> list[dict]:
    """One row per service: name, state, pid, where."""
    stack = Stack.load(root)
    rows = []
    if stack.postgres:
        if stack.postgres["mode"] == "managed":
            pid = pg.postmaster_pid(Path(stack.postgres["data_dir"]))
        else:
            pid = None
        problem = pg.reachable(stack.server) if (pid or stack.postgres["mode"] ==
                                                  "external") else "stopped"
        rows.append({"service": "postgres", "state": problem or "healthy", "pid": pid,
                     "where": f"{stack.server.host}:{stack.server.port} "
                              f"({stack.postgres['mode']})"})
    urls = stack.urls()
    health = {"mlflow": f"{urls['MLFLOW_TRACKING_URI']}/health",
              "prefect": f"{urls['PREFECT_API_URL']}/health"}
    for name, info in stack.processes.items():
        alive = _alive(info)
        if name in health:
            state = ("healthy" if _http_ok(health[name]) else "not answering") if alive \
                else "stopped"
            where = f"127.0.0.1:{info['port']}"
        else:
            pool = name.removeprefix("worker-")
            state = ("online" if _worker_online(stack, pool) else "offline") if alive \
                else "stopped"
            where = f"pool {pool}"
        rows.append({"service": name, "state": state, "pid": info["pid"] if alive else None,
                     "where": where})
    return rows
