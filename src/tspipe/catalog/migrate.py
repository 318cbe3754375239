"""Schema migrations: Alembic scripts shipped in the package, applied by a function.

``tspipe catalog upgrade`` calls ``upgrade``; no alembic.ini is needed at runtime (the
one in ``migrations/`` is for developers writing new revisions).
"""

from __future__ import annotations

import logging
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, inspect, text
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError

from tspipe.catalog.engine import (
    READ_ONLY,
    check_sqlite_file,
    driver_problem,
    hidden_url,
    make_engine,
    sqlite_path,
)
from tspipe.catalog.schema import Base
from tspipe.errors import CatalogError

logger = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
# Key of the PostgreSQL advisory lock that serializes concurrent upgrades ("tspipe").
_UPGRADE_LOCK_KEY = 0x747370697065
_UPGRADE_HINT = "run `tspipe catalog upgrade` (same --url / TSPIPE_CATALOG_URL)"


def alembic_config(connection: Connection | None = None) -> Config:
    """An Alembic Config built in code; ``connection`` is what env.py migrates."""
    config = Config()
    # ConfigParser interpolates '%': a path holding one must not be read as a reference.
    config.set_main_option("script_location", str(MIGRATIONS_DIR).replace("%", "%%"))
    config.set_main_option("path_separator", "os")
    config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    """The newest revision this tspipe ships."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:
        raise CatalogError(f"{MIGRATIONS_DIR}: no migration scripts (broken install)")
    return head


def _known_revisions() -> set[str]:
    return {script.revision for script in ScriptDirectory.from_config(alembic_config())
            .walk_revisions()}


def _cannot(action: str, engine: Engine, exc: DBAPIError) -> CatalogError:
    """The driver's error, named, with what to do (``driver_problem``)."""
    return CatalogError(f"cannot {action} catalog {hidden_url(engine.url)}: "
                        f"{driver_problem(engine.url, exc)}")


def _foreign_tables(connection: Connection) -> list[str]:
    """Tables of a database that has no alembic_version and is not tspipe's."""
    ours = set(Base.metadata.tables) | {"alembic_version"}
    return sorted(set(inspect(connection).get_table_names()) - ours)


def _check_revision(where: str, current: str | None, connection: Connection) -> None:
    """Refuse a database a newer tspipe migrated, and one of something else."""
    if current is not None and current not in _known_revisions():
        raise CatalogError(
            f"catalog {where} was created by a newer tspipe (revision {current!r} unknown; "
            f"this tspipe's newest is {head_revision()!r}): upgrade tspipe")
    if current is None and (foreign := _foreign_tables(connection)):
        shown = ", ".join(foreign[:8]) + (", ..." if len(foreign) > 8 else "")
        raise CatalogError(
            f"catalog {where} is not a tspipe catalog: it has no alembic_version and holds "
            f"{len(foreign)} other tables ({shown}): point --url / TSPIPE_CATALOG_URL at a "
            "tspipe catalog, or at a new file")


def _revision_of(engine: Engine) -> str | None:
    check_sqlite_file(engine.url)
    try:
        with engine.execution_options(**{READ_ONLY: True}).connect() as connection:
            current = MigrationContext.configure(connection).get_current_revision()
            _check_revision(hidden_url(engine.url), current, connection)
            return current
    except DBAPIError as exc:
        raise _cannot("open", engine, exc) from exc


def current_revision(url: str | URL) -> str | None:
    """The revision the database at ``url`` is at; None if it was never migrated."""
    path = sqlite_path(url)
    if path is not None and not path.exists():
        return None  # do not create an empty file just to look
    engine = make_engine(url)
    try:
        return _revision_of(engine)
    finally:
        engine.dispose()


def require_head(engine: Engine) -> None:
    """Raise CatalogError unless the database is migrated to ``head_revision()``."""
    where = hidden_url(engine.url)
    path = sqlite_path(engine.url)
    if path is not None and not path.exists():
        missing = (f"file {path} does not exist" if path.parent.is_dir() else
                   f"its folder {path.parent} does not exist either: a typo in the URL?")
        raise CatalogError(f"no catalog at {where} ({missing}): {_UPGRADE_HINT}")
    current, head = _revision_of(engine), head_revision()
    if current == head:
        return
    if current is None:
        raise CatalogError(f"catalog {where} is not migrated (no schema yet): {_UPGRADE_HINT}")
    raise CatalogError(
        f"catalog {where} is at revision {current!r}, older than {head!r}: {_UPGRADE_HINT}"
    )


def upgrade(url: str | URL, revision: str = "head") -> str | None:
    """Migrate the database at ``url`` to ``revision``; return the revision it is at.

    Safe to run again (a no-op at head) and from two processes at once: SQLite's
    BEGIN IMMEDIATE and a PostgreSQL advisory lock let one migrate while the other waits,
    then finds nothing to do. A SQLite file's folder must exist (it is not created), and a
    database of something else or of a newer tspipe is refused (CatalogError).
    """
    check_sqlite_file(url, creating=True)
    engine = make_engine(url)
    where = hidden_url(engine.url)
    try:
        with engine.connect() as connection:
            if engine.dialect.name == "sqlite":
                # Batch migrations copy, drop and rename tables; with foreign keys enforced,
                # dropping a referenced table deletes or rejects rows. The pragma is a no-op
                # inside a transaction, so it is set on the driver connection before BEGIN.
                connection.connection.driver_connection.execute("PRAGMA foreign_keys = OFF")
            with connection.begin():
                if engine.dialect.name == "postgresql":
                    connection.execute(text("SELECT pg_advisory_xact_lock(:key)"),
                                       {"key": _UPGRADE_LOCK_KEY})
                before = MigrationContext.configure(connection).get_current_revision()
                _check_revision(where, before, connection)
                command.upgrade(alembic_config(connection), revision)
                after = MigrationContext.configure(connection).get_current_revision()
    except DBAPIError as exc:
        raise _cannot("upgrade", engine, exc) from exc
    finally:
        engine.dispose()  # also drops the connection whose foreign keys were turned off
    logger.info("catalog %s: revision %s -> %s", where, before, after)
    return after
