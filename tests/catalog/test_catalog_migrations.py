"""Migrations: the hand-written revision matches the models; upgrade is safe to rerun,
creates no missing folder and touches no database that is not (yet) this tspipe's."""

from __future__ import annotations

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text

from tspipe.catalog import current_revision, head_revision, make_engine, upgrade
from tspipe.catalog.migrate import alembic_config
from tspipe.catalog.schema import Base
from tspipe.errors import CatalogError

TABLES = {"datasets", "videos", "checkpoints", "feature_versions", "evaluations",
          "feature_videos"}


def test_models_and_migration_agree(catalog_url: str) -> None:
    upgrade(catalog_url)
    engine = make_engine(catalog_url)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            assert compare_metadata(context, Base.metadata) == []
            names = {(t, c["name"]) for t in TABLES
                     for c in inspect(connection).get_unique_constraints(t)}
    finally:
        engine.dispose()
    # The naming convention, not the backend, named the constraints.
    assert names == {("datasets", "uq_datasets_name_annotation_sha256"),
                     ("evaluations", "uq_evaluations_record")}


def test_upgrade_is_idempotent_and_downgrade_undoes_it(catalog_url: str) -> None:
    assert upgrade(catalog_url) == head_revision()
    assert upgrade(catalog_url) == head_revision()  # nothing left to do
    engine = make_engine(catalog_url)
    try:
        assert set(inspect(engine).get_table_names()) >= TABLES
        with engine.begin() as connection:
            command.downgrade(alembic_config(connection), "base")
        assert not TABLES & set(inspect(engine).get_table_names())
    finally:
        engine.dispose()
    assert current_revision(catalog_url) is None
    assert upgrade(catalog_url) == head_revision()


def test_sqlite_connections_are_set_up_for_concurrency(tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'nested' / 'catalog.db'}"
    with pytest.raises(CatalogError, match=r"folder .*nested does not exist: create it"):
        upgrade(url)  # a missing folder is not created (a typo would be silently kept)
    assert not (tmp_path / "nested").exists()
    (tmp_path / "nested").mkdir()
    upgrade(url)
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            pragma = {name: connection.exec_driver_sql(f"PRAGMA {name}").scalar()
                      for name in ("journal_mode", "foreign_keys", "busy_timeout")}
    finally:
        engine.dispose()
    assert pragma == {"journal_mode": "wal", "foreign_keys": 1, "busy_timeout": 30000}


def test_upgrade_refuses_a_foreign_or_newer_database_and_leaves_it(catalog_url: str) -> None:
    engine = make_engine(catalog_url)
    try:
        with engine.begin() as connection:
            connection.execute(text("CREATE TABLE recipes (id INTEGER PRIMARY KEY)"))
        with pytest.raises(CatalogError, match=r"is not a tspipe catalog: it has no "
                           r"alembic_version and holds 1 other tables \(recipes\)"):
            upgrade(catalog_url)
        assert inspect(engine).get_table_names() == ["recipes"]  # nothing added to it

        with engine.begin() as connection:
            connection.execute(text("DROP TABLE recipes"))
        upgrade(catalog_url)
        with engine.begin() as connection:
            connection.execute(text("UPDATE alembic_version SET version_num = 'ffff9999'"))
        with pytest.raises(CatalogError, match=r"created by a newer tspipe \(revision "
                           r"'ffff9999' unknown; .*\): upgrade tspipe"):
            upgrade(catalog_url)
        with engine.connect() as connection:
            assert connection.execute(text("SELECT version_num FROM alembic_version")
                                      ).scalar_one() == "ffff9999"
    finally:
        engine.dispose()
