"""Engines for the catalog: SQLite by default, PostgreSQL (psycopg 3) when asked.

URLs are shown to people only through ``hidden_url``: the password never reaches a log, an
error message or the terminal.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError

from tspipe.errors import CatalogError

logger = logging.getLogger(__name__)

DEFAULT_URL = "sqlite:///catalog.db"
# A writer that finds the database locked waits this long before failing (WAL lets readers
# go on meanwhile); registrations are short, so 30 s covers many queued writers.
SQLITE_BUSY_TIMEOUT_S = 30
# Execution option: the transaction only reads, so SQLite may begin it DEFERRED.
READ_ONLY = "tspipe_read_only"
# Postgres drivers tspipe accepts spelled without a driver; `postgresql+psycopg` is used.
_BARE_POSTGRES = {"postgresql", "postgres"}
# The first bytes of every SQLite 3 database file.
SQLITE_MAGIC = b"SQLite format 3\x00"


def parse_url(url: str | URL) -> URL:
    """The SQLAlchemy URL, with a bare ``postgresql://`` rewritten to psycopg 3."""
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        # SQLAlchemy's message does not repeat the string, which may hold a password.
        raise CatalogError(
            "catalog URL is not a database URL: expected e.g. sqlite:///catalog.db or "
            "postgresql+psycopg://user:password@host:5432/dbname"
        ) from exc
    if parsed.drivername in _BARE_POSTGRES:
        parsed = parsed.set(drivername="postgresql+psycopg")
    backend = parsed.get_backend_name()
    if backend not in ("sqlite", "postgresql"):
        raise CatalogError(
            f"catalog URL {hidden_url(parsed)}: backend {backend!r} is not supported; "
            "use sqlite:///PATH or postgresql+psycopg://..."
        )
    return parsed


def hidden_url(url: str | URL) -> str:
    """The URL as people may see it: the password replaced by ``***``."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<unparsable URL>"


def sqlite_path(url: str | URL) -> Path | None:
    """The database file of a file-backed SQLite URL, else None (memory or PostgreSQL)."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return None
    database = parsed.database or ""
    if database in ("", ":memory:") or database.startswith("file:"):
        return None
    return Path(database)


def check_sqlite_file(url: str | URL, *, creating: bool = False) -> None:
    """Raise a CatalogError naming what is wrong with a SQLite catalog's file before
    SQLite touches it: a directory, a file that is not a SQLite database, or (when
    ``creating``) a folder that does not exist. Memory and PostgreSQL URLs pass."""
    path = sqlite_path(url)
    if path is None:
        return
    where, hint = hidden_url(url), "point --url / TSPIPE_CATALOG_URL at a tspipe catalog"
    if path.is_dir():
        raise CatalogError(f"catalog {where}: {path} is a directory, not a SQLite database "
                           f"file: {hint} (a file path)")
    if path.is_file():
        with path.open("rb") as fh:
            head = fh.read(len(SQLITE_MAGIC))
        if head and head != SQLITE_MAGIC:  # an empty file is an empty SQLite database
            raise CatalogError(
                f"catalog {where}: not a SQLite database: {path} ({path.stat().st_size} "
                f"bytes, no SQLite header): {hint}, or at a new file that `tspipe catalog "
                "upgrade` creates")
    elif creating and not path.parent.is_dir():
        raise CatalogError(f"catalog {where}: folder {path.parent} does not exist: create "
                           "it first, or point --url / TSPIPE_CATALOG_URL elsewhere")


def driver_problem(url: str | URL, exc: DBAPIError) -> str:
    """The driver's error on one line, and what to do about it. ``exc.orig`` is the
    driver's own exception, which never repeats the URL's password (SQLAlchemy's wrapper
    adds the statement, not needed here)."""
    said = " ".join(str(exc.orig).split())  # one line: psycopg's messages span several
    text, path = said.lower(), sqlite_path(url)
    if "readonly database" in text or "read-only" in text:
        hint = (f"the catalog is read-only: make {path} and its folder writable"
                if path is not None else "the catalog is read-only for this user: grant it "
                "write access") + ", or point --url / TSPIPE_CATALOG_URL at a writable catalog"
    elif "disk is full" in text:
        hint = "the disk or quota is full: free space and rerun"
    elif "database is locked" in text:
        hint = (f"another process held the write lock for over {SQLITE_BUSY_TIMEOUT_S} s: "
                "rerun when it is done")
    elif path is not None and "unable to open" in text:
        hint = (f"check that {path.parent} exists and that this user may read and write "
                f"{path.name} there (SQLite also writes {path.name}-wal and -shm beside it)")
    elif path is None and make_url(url).get_backend_name() == "postgresql":
        hint = "check that the server runs and the URL's host, port and database"
    else:
        hint = "point --url / TSPIPE_CATALOG_URL at a tspipe catalog"
    return f"{type(exc.orig).__name__}: {said}: {hint}"


def make_engine(url: str | URL, **kwargs: Any) -> Engine:
    """An engine for the catalog at ``url``.

    SQLite: WAL journal (readers do not block the writer), a busy timeout, foreign keys
    enforced, and write transactions that begin IMMEDIATE. Two writers that both began
    DEFERRED and then both try to write deadlock, and SQLite fails one of them at once
    instead of waiting; taking the write lock at BEGIN makes them queue on busy_timeout.
    PostgreSQL: psycopg 3, connections checked before use, a bounded connect timeout.
    """
    parsed = parse_url(url)
    if parsed.get_backend_name() == "postgresql":
        engine = create_engine(
            parsed, pool_pre_ping=True, connect_args={"connect_timeout": 10}, **kwargs
        )
    else:
        engine = create_engine(
            parsed, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_S}, **kwargs
        )
        event.listen(engine, "connect", _sqlite_on_connect)
        event.listen(engine, "begin", _sqlite_on_begin)
    logger.debug("catalog engine for %s", hidden_url(parsed))
    return engine


def _sqlite_on_connect(dbapi_connection: Any, _record: Any) -> None:
    # pysqlite's own implicit BEGIN is turned off: `_sqlite_on_begin` emits ours.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        # busy_timeout first: switching to WAL needs a lock another process may hold.
        cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_S * 1000}")
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.execute("PRAGMA journal_mode = WAL")
    finally:
        cursor.close()


def _sqlite_on_begin(connection: Any) -> None:
    read_only = connection.get_execution_options().get(READ_ONLY, False)
    connection.exec_driver_sql("BEGIN DEFERRED" if read_only else "BEGIN IMMEDIATE")
