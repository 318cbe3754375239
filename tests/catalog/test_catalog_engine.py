"""Catalog URLs: driver rewriting, unsupported backends, passwords never shown."""

from __future__ import annotations

import logging
import sqlite3
import time

import pytest

from tspipe.catalog import Catalog, hidden_url, make_engine, upgrade
from tspipe.catalog.engine import parse_url, sqlite_path
from tspipe.errors import CatalogError


@pytest.mark.parametrize(("given", "driver"), [
    ("postgresql://u:pw@db:5432/cat", "postgresql+psycopg"),
    ("postgres://u:pw@db/cat", "postgresql+psycopg"),
    ("postgresql+psycopg://u:pw@db/cat", "postgresql+psycopg"),
    ("sqlite:///catalog.db", "sqlite"),
])
def test_postgres_urls_use_psycopg(given: str, driver: str) -> None:
    assert parse_url(given).drivername == driver


def test_password_is_hidden_everywhere(caplog: pytest.LogCaptureFixture) -> None:
    url = "postgresql://alice:s3cr3t@db.example:5432/catalog"
    assert hidden_url(url) == "postgresql://alice:***@db.example:5432/catalog"
    with caplog.at_level(logging.DEBUG, logger="tspipe.catalog"):
        engine = make_engine(url)  # connects lazily: nothing to reach here
    engine.dispose()
    assert "s3cr3t" not in caplog.text
    with pytest.raises(CatalogError) as info:
        parse_url("mysql://alice:s3cr3t@db/catalog")
    assert "not supported" in str(info.value) and "s3cr3t" not in str(info.value)
    with pytest.raises(CatalogError) as info:
        parse_url("not a url, but s3cr3t")
    assert "s3cr3t" not in str(info.value)


def test_sqlite_path() -> None:
    assert str(sqlite_path("sqlite:///runs/catalog.db")) == "runs/catalog.db"
    assert sqlite_path("sqlite://") is None
    assert sqlite_path("sqlite:///:memory:") is None
    assert sqlite_path("postgresql+psycopg://u@h/db") is None


def test_sqlite_reads_do_not_wait_for_a_writer(tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'catalog.db'}"
    upgrade(url)
    writer = sqlite3.connect(tmp_path / "catalog.db", isolation_level=None)
    try:
        writer.execute("BEGIN IMMEDIATE")  # another process holds the write lock
        with Catalog(url) as catalog:
            started = time.monotonic()
            assert catalog.datasets() == []  # WAL + a DEFERRED read: no wait
            assert time.monotonic() - started < 5
    finally:
        writer.execute("ROLLBACK")
        writer.close()
