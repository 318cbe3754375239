"""Catalog URLs: driver rewriting, unsupported backends, passwords never shown; what is
wrong with a database file or a driver's error, named with what to do."""

from __future__ import annotations

import logging
import sqlite3
import time

import pytest
from sqlalchemy.exc import OperationalError

from tspipe.catalog import Catalog, hidden_url, make_engine, upgrade
from tspipe.catalog.engine import check_sqlite_file, driver_problem, parse_url, sqlite_path
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


def test_sqlite_file_checks_name_the_file(tmp_path) -> None:
    (tmp_path / "dir.db").mkdir()
    (tmp_path / "notes.db").write_text("SECRET notes\n")
    (tmp_path / "empty.db").write_bytes(b"")  # SQLite's own empty database: fine
    for name, words in [("dir.db", "is a directory, not a SQLite database file"),
                        ("notes.db", "not a SQLite database: ")]:
        with pytest.raises(CatalogError, match=words) as info:
            check_sqlite_file(f"sqlite:///{tmp_path / name}")
        assert str(tmp_path / name) in str(info.value) and "SECRET" not in str(info.value)
    check_sqlite_file(f"sqlite:///{tmp_path / 'empty.db'}")
    missing = f"sqlite:///{tmp_path / 'no' / 'c.db'}"
    check_sqlite_file(missing)  # only refused where it would be created
    with pytest.raises(CatalogError, match=f"folder {tmp_path / 'no'} does not exist"):
        check_sqlite_file(missing, creating=True)


@pytest.mark.parametrize(("url", "said", "hint"), [
    ("sqlite:////r/c.db", "attempt to write a readonly database",
     "the catalog is read-only: make /r/c.db and its folder writable, or point"),
    ("postgresql://u:pw@h/db", "permission denied: read-only transaction",
     "the catalog is read-only for this user: grant it write access, or point"),
    ("sqlite:////r/c.db", "database or disk is full", "free space and rerun"),
    ("sqlite:////r/c.db", "database is locked", "held the write lock for over 30 s"),
    ("sqlite:////r/c.db", "unable to open database file",
     "check that /r exists and that this user may read and write c.db there"),
    ("postgresql://u:pw@h/db", "connection refused\n  Is the server running?",
     "check that the server runs and the URL's host, port and database"),
])
def test_driver_errors_say_what_to_do(url: str, said: str, hint: str) -> None:
    exc = OperationalError("SELECT 1", {}, sqlite3.OperationalError(said))
    problem = driver_problem(url, exc)
    assert problem.startswith(f"OperationalError: {' '.join(said.split())}: ")
    assert hint in problem and "\n" not in problem and "pw" not in problem
