"""Alembic environment for the tspipe catalog.

``tspipe.catalog.migrate.upgrade`` passes an open connection (inside its transaction) in
``config.attributes["connection"]``. Developers writing a new revision run
``alembic -c src/tspipe/catalog/migrations/alembic.ini revision --autogenerate -m MSG``,
which connects to ``TSPIPE_CATALOG_URL`` (default ``sqlite:///catalog.db``).
"""

from __future__ import annotations

import os

from alembic import context
from sqlalchemy import Connection

from tspipe.catalog.engine import DEFAULT_URL, make_engine, parse_url
from tspipe.catalog.schema import Base


def _configure(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        # SQLite cannot ALTER most things: autogenerate writes batch (copy-and-move) ops.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )


def _run() -> None:
    connection = context.config.attributes.get("connection")
    if connection is not None:
        _configure(connection)
        with context.begin_transaction():
            context.run_migrations()
        return
    url = os.environ.get("TSPIPE_CATALOG_URL", DEFAULT_URL)
    if context.is_offline_mode():  # `alembic upgrade head --sql`: a script for a DBA
        context.configure(url=parse_url(url), target_metadata=Base.metadata,
                          literal_binds=True)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            _configure(connection)
            with context.begin_transaction():
                context.run_migrations()
    finally:
        engine.dispose()


_run()
