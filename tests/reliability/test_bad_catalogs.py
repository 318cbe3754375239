"""Bad catalogs (issue 22): ``TSPIPE_CATALOG_URL`` / ``--url`` at something that is not a
usable tspipe catalog ends with a named CatalogError, exit code 2 and no traceback, both
from ``tspipe catalog list`` and from a stage that records to the catalog (ingest); a
read-only catalog can be listed but not written; and ``tspipe catalog upgrade`` creates
no missing folder.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from reliability_helpers import assert_clean_failure, tspipe_in_process, write_params

from tspipe.catalog import upgrade


def _text(tmp: Path) -> tuple[str, tuple[str, ...]]:
    (tmp / "notes.db").write_text("just some notes, not a database\n")
    return f"sqlite:///{tmp / 'notes.db'}", ("not a SQLite database", "notes.db", "bytes")


def _newer(tmp: Path) -> tuple[str, tuple[str, ...]]:
    with sqlite3.connect(tmp / "newer.db") as db:
        db.execute("CREATE TABLE alembic_version (version_num VARCHAR(32) PRIMARY KEY)")
        db.execute("INSERT INTO alembic_version VALUES ('ffff9999')")
    return f"sqlite:///{tmp / 'newer.db'}", (
        "created by a newer tspipe (revision 'ffff9999' unknown", "upgrade tspipe")


def _empty(tmp: Path) -> tuple[str, tuple[str, ...]]:
    with sqlite3.connect(tmp / "empty.db") as db:  # a real (non-zero) file, no tables
        db.execute("CREATE TABLE t (x)")
        db.execute("DROP TABLE t")
    return f"sqlite:///{tmp / 'empty.db'}", ("not migrated", "run `tspipe catalog upgrade`")


def _other_app(tmp: Path) -> tuple[str, tuple[str, ...]]:
    with sqlite3.connect(tmp / "recipes.db") as db:
        db.execute("CREATE TABLE recipes (id INTEGER PRIMARY KEY, name TEXT)")
        db.execute("CREATE TABLE ingredients (id INTEGER PRIMARY KEY, name TEXT)")
    return f"sqlite:///{tmp / 'recipes.db'}", (
        "is not a tspipe catalog", "no alembic_version", "ingredients, recipes")


def _directory(tmp: Path) -> tuple[str, tuple[str, ...]]:
    (tmp / "folder.db").mkdir()
    return f"sqlite:///{tmp / 'folder.db'}", ("folder.db is a directory",
                                              "not a SQLite database file")


def _postgres_refused(tmp: Path) -> tuple[str, tuple[str, ...]]:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return (f"postgresql://tspipe:hunter2@127.0.0.1:{port}/catalog",
            ("cannot open catalog", f"tspipe:***@127.0.0.1:{port}", "refused",
             "check that the server runs"))


def _missing_folder(tmp: Path) -> tuple[str, tuple[str, ...]]:
    return f"sqlite:///{tmp / 'typo' / 'c.db'}", (f"{tmp / 'typo'} does not exist",)


CASES = {"missing-folder": _missing_folder, "text-file": _text, "newer-revision": _newer,
         "never-upgraded": _empty, "other-app-db": _other_app, "directory": _directory,
         "postgres-refused": _postgres_refused}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A run directory whose ingest needs no synth: one hand-written annotation file."""
    root = tmp_path_factory.mktemp("bad-catalogs") / "run"
    (root / "src").mkdir(parents=True)
    database = {"v1": {"subset": "training", "duration": 20.0, "url": "v1.mp4",
                       "annotations": [{"segment": [1.0, 4.0], "label": "a"}]}}
    (root / "src" / "ann.json").write_text(json.dumps({"database": database}))
    write_params(root, synth={"enabled": False},
                 dataset={"annotations": "src/ann.json", "name": "badcatalogs"})
    return root


@pytest.fixture
def cli(run_dir: Path, monkeypatch, capsys):
    """``tspipe ARGS`` in the run directory, in this process (each case pays no second
    start-up of Python and torch); ``env``: variables set for it and after."""
    monkeypatch.chdir(run_dir)

    def run(*args: str, **env: str) -> subprocess.CompletedProcess:
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        return tspipe_in_process(monkeypatch, capsys, *args)
    return run


INGEST = ("stage", "ingest", "--params", "params.yaml", "--root", ".")


@pytest.mark.parametrize("kind", sorted(CASES))
def test_bad_catalog_is_a_named_error(kind: str, cli, tmp_path: Path, ledger) -> None:
    url, needles = CASES[kind](tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    out = assert_clean_failure(cli("catalog", "list", "--url", url), *needles)
    out += assert_clean_failure(cli(*INGEST, TSPIPE_CATALOG_URL=url), *needles)
    assert "hunter2" not in out
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing created there
    ledger.record("bad_input", f"catalog-{kind}")


def test_upgrade_does_not_create_a_missing_folder(cli, tmp_path: Path, ledger) -> None:
    missing = tmp_path / "some" / "missing" / "dir"
    proc = cli("catalog", "upgrade", "--url", f"sqlite:///{missing / 'c.db'}")
    assert_clean_failure(proc, f"folder {missing} does not exist")
    assert not (tmp_path / "some").exists()
    ledger.record("bad_input", "catalog-missing-folder")


@contextlib.contextmanager
def _read_only(*paths: Path) -> Iterator[None]:
    """``paths`` read-only for this user: ``chmod a-w``, or for root (whom modes do not
    stop) the immutable attribute, taken off again afterwards."""
    root = os.geteuid() == 0
    done: list[Path] = []
    try:
        for path in paths:
            if root:
                proc = subprocess.run(["chattr", "+i", str(path)], capture_output=True,
                                      text=True, check=False)
                if proc.returncode != 0:
                    pytest.skip(f"running as root and chattr +i fails: {proc.stderr}")
            else:
                path.chmod(path.stat().st_mode & ~0o222)
            done.append(path)
        yield
    finally:
        for path in reversed(done):
            if root:
                subprocess.run(["chattr", "-i", str(path)], check=True)
            else:
                path.chmod(path.stat().st_mode | 0o200)


def _catalog(tmp: Path) -> str:
    url = f"sqlite:///{tmp / 'ro.db'}"
    upgrade(url)
    for side in tmp.glob("ro.db-*"):  # SQLite's WAL files, gone on a clean close
        side.unlink()
    return url


def test_read_only_catalog_lists_but_refuses_a_write(cli, tmp_path: Path, ledger) -> None:
    url = _catalog(tmp_path)
    with _read_only(tmp_path / "ro.db"):
        listed = cli("catalog", "list", "--url", url)
        assert listed.returncode == 0, listed.stdout + listed.stderr  # reading is fine
        staged = cli(*INGEST, TSPIPE_CATALOG_URL=url)
    assert_clean_failure(staged, "register dataset 'badcatalogs'", "the catalog is read-only",
                         f"make {tmp_path / 'ro.db'} and its folder writable",
                         "or point --url / TSPIPE_CATALOG_URL at a writable catalog")
    ledger.record("bad_input", "catalog-read-only-file")


def test_read_only_folder_is_a_named_error(cli, tmp_path: Path, ledger) -> None:
    url = _catalog(tmp_path)
    needles = ("cannot open catalog", "unable to open database file",
               f"check that {tmp_path} exists and that this user may read and write ro.db")
    with _read_only(tmp_path / "ro.db", tmp_path):  # no room for SQLite's -wal and -shm
        assert_clean_failure(cli("catalog", "list", "--url", url), *needles)
        assert_clean_failure(cli(*INGEST, TSPIPE_CATALOG_URL=url), *needles)
    ledger.record("bad_input", "catalog-read-only-folder")
