"""Per-video status of a feature version (table feature_videos, revision 0002), on SQLite
and PostgreSQL: upsert, idempotence, validation, queries, counts, CLI, migration."""

from __future__ import annotations

import json

import pytest
from alembic import command
from catalog_helpers import count_rows, fill, sha
from sqlalchemy import inspect, text
from sqlalchemy.exc import IntegrityError
from typer.testing import CliRunner

from tspipe.catalog import (
    Catalog,
    FeatureVideoCounts,
    FeatureVideoRow,
    current_revision,
    head_revision,
    make_engine,
    upgrade,
)
from tspipe.catalog import api as catalog_api
from tspipe.catalog.migrate import alembic_config
from tspipe.doors.cli_catalog import app
from tspipe.errors import CatalogError

runner = CliRunner()
OLD_TABLES = ("datasets", "videos", "checkpoints", "feature_versions", "evaluations")


def _rows(catalog: Catalog, fid: str, status: str | None = None) -> list[tuple]:
    return [(v.video_id, v.status, v.num_clips, v.feature_dim, v.reason, v.reused_from,
             v.shard) for v in catalog.feature_videos(fid, status=status)]


def _record_three(catalog: Catalog, fid: str, reused_from: str) -> int:
    return catalog.record_feature_videos(fid, [
        FeatureVideoRow("v1", "ok", num_clips=30, feature_dim=512, shard="shard-000.h5"),
        FeatureVideoRow("v2", "failed", reason="decode error: no video stream"),
        FeatureVideoRow("v3", "ok", num_clips=12, feature_dim=512, reused_from=reused_from,
                        shard="shard-001.h5"),
    ])


def test_upsert_is_idempotent_and_replaces_a_failed_row(catalog: Catalog,
                                                         catalog_url: str) -> None:
    filled = fill(catalog)
    tsp, official = filled.tsp.id, filled.official.id
    assert catalog.feature_videos(tsp) == []
    assert catalog.show(tsp).video_counts == FeatureVideoCounts(ok=0, failed=0, reused=0)

    assert _record_three(catalog, tsp, reused_from=official) == 3
    expected = [
        ("v1", "ok", 30, 512, None, None, "shard-000.h5"),
        ("v2", "failed", None, None, "decode error: no video stream", None, None),
        ("v3", "ok", 12, 512, None, official, "shard-001.h5"),
    ]
    assert _rows(catalog, tsp) == expected
    first = catalog.feature_videos(tsp)
    assert {v.feature_version_id for v in first} == {tsp}
    assert all(v.updated_at.tzinfo is not None for v in first)
    assert catalog.show(tsp).video_counts == FeatureVideoCounts(ok=2, failed=1, reused=1)

    # The same rows again: the same rows, none added.
    assert _record_three(catalog, tsp, reused_from=official) == 3
    assert _rows(catalog, tsp) == expected
    assert count_rows(catalog_url, "feature_videos") == 3
    assert catalog.feature_videos(official) == []  # other versions untouched

    # v2 recomputed: ok now, and its old reason is gone (every field is replaced).
    assert catalog.record_feature_videos(tsp, [
        FeatureVideoRow("v2", "ok", num_clips=7, feature_dim=512, shard="shard-002.h5")]) == 1
    assert _rows(catalog, tsp, status="failed") == []
    assert [r[0] for r in _rows(catalog, tsp, status="ok")] == ["v1", "v2", "v3"]
    assert _rows(catalog, tsp)[1] == ("v2", "ok", 7, 512, None, None, "shard-002.h5")
    assert catalog.feature_videos(tsp)[1].updated_at >= first[1].updated_at
    assert count_rows(catalog_url, "feature_videos") == 3
    assert catalog.show(tsp[:10]).video_counts == FeatureVideoCounts(ok=3, failed=0, reused=1)

    # A repeated id in one batch: the last row wins, counted once.
    assert catalog.record_feature_videos(official, [
        FeatureVideoRow("v1", "failed", reason="first"),
        FeatureVideoRow("v1", "ok", num_clips=30, feature_dim=512)]) == 1
    assert _rows(catalog, official) == [("v1", "ok", 30, 512, None, None, None)]
    assert count_rows(catalog_url, "feature_videos") == 4
    assert catalog.record_feature_videos(official, []) == 0


def test_rows_are_sorted_by_video_id_and_written_in_chunks(
    catalog: Catalog, monkeypatch: pytest.MonkeyPatch
) -> None:
    tsp = fill(catalog).tsp.id
    monkeypatch.setattr(catalog_api, "_CHUNK_ROWS", 2)  # 5 rows: 3 statements
    ids = ["c", "a2", "b", "a10", "d"]
    assert catalog.record_feature_videos(
        tsp, [FeatureVideoRow(v, "ok", num_clips=i) for i, v in enumerate(ids)]) == 5
    assert [(v.video_id, v.num_clips) for v in catalog.feature_videos(tsp)] == [
        ("a10", 3), ("a2", 1), ("b", 2), ("c", 0), ("d", 4)]


def test_reused_from_round_trips_and_is_checked(catalog: Catalog) -> None:
    filled = fill(catalog)
    tsp, official = filled.tsp.id, filled.official.id
    catalog.record_feature_videos(tsp, [FeatureVideoRow("v1", "ok", reused_from=official.upper())])
    [row] = catalog.feature_videos(tsp)
    assert row.reused_from == official  # stored lower-case, like every id
    with pytest.raises(CatalogError, match=r"video 'v1': reused_from 'abc' is not a sha256"):
        catalog.record_feature_videos(tsp, [FeatureVideoRow("v1", "ok", reused_from="abc")])
    with pytest.raises(CatalogError, match=r"video 'v1': reused_from names this feature version"):
        catalog.record_feature_videos(tsp, [FeatureVideoRow("v1", "ok", reused_from=tsp)])
    assert catalog.feature_videos(tsp)[0].reused_from == official


def test_bad_rows_and_unknown_versions_write_nothing(catalog: Catalog,
                                                     catalog_url: str) -> None:
    tsp = fill(catalog).tsp.id
    catalog.record_feature_videos(tsp, [FeatureVideoRow("v1", "ok", num_clips=3)])
    good = [FeatureVideoRow("v1", "failed", reason="x"), FeatureVideoRow("v3", "ok")]

    with pytest.raises(CatalogError) as info:
        catalog.record_feature_videos(tsp, [*good, FeatureVideoRow("v2", "lost")])
    assert str(info.value) == (f"feature version {tsp[:12]}, video 'v2': status 'lost' is "
                               "not one of ok, failed")
    with pytest.raises(CatalogError, match=r"video 'v4': num_clips -1 is not an integer >= 0"):
        catalog.record_feature_videos(tsp, [*good, FeatureVideoRow("v4", "ok", num_clips=-1)])
    with pytest.raises(CatalogError, match=r"video 'v5': feature_dim 0 is not an integer >= 1"):
        catalog.record_feature_videos(tsp, [*good, FeatureVideoRow("v5", "ok", feature_dim=0)])
    with pytest.raises(CatalogError, match=r"video '': field video_id must be a non-empty"):
        catalog.record_feature_videos(tsp, [*good, FeatureVideoRow("", "ok")])
    with pytest.raises(CatalogError, match="expected FeatureVideoRow"):
        catalog.record_feature_videos(tsp, [("v6", "ok")])  # type: ignore[list-item]
    unknown = sha("9")
    with pytest.raises(CatalogError) as info:
        catalog.record_feature_videos(unknown, good)
    assert str(info.value) == f"feature version {unknown!r} is not in the catalog"
    # Nothing of the failed batches was written; v1 is as it was.
    assert _rows(catalog, tsp) == [("v1", "ok", 3, None, None, None, None)]
    assert count_rows(catalog_url, "feature_videos") == 1

    with pytest.raises(CatalogError, match="status 'lost' is not one of ok, failed"):
        catalog.feature_videos(tsp, status="lost")
    with pytest.raises(CatalogError, match="matches no feature version"):
        catalog.feature_videos(unknown)
    assert [v.video_id for v in catalog.feature_videos(tsp[:8], status="ok")] == ["v1"]


def test_the_database_enforces_status_and_feature_version(catalog: Catalog,
                                                          catalog_url: str) -> None:
    tsp = fill(catalog).tsp.id
    engine = make_engine(catalog_url)
    insert = text("INSERT INTO feature_videos (feature_version_id, video_id, status, updated_at)"
                  " VALUES (:fid, :vid, :status, CURRENT_TIMESTAMP)")
    try:
        with engine.connect() as connection:
            found = inspect(connection)
            checks = [c["name"] for c in found.get_check_constraints("feature_videos")]
            keys = [(k["name"], k["referred_table"], k["constrained_columns"])
                    for k in found.get_foreign_keys("feature_videos")]
            primary = found.get_pk_constraint("feature_videos")
        assert checks == ["ck_feature_videos_status"]
        assert keys == [("fk_feature_videos_feature_version_id_feature_versions",
                         "feature_versions", ["feature_version_id"])]
        assert primary["constrained_columns"] == ["feature_version_id", "video_id"]
        with pytest.raises(IntegrityError), engine.begin() as connection:
            connection.execute(insert, {"fid": tsp, "vid": "v1", "status": "lost"})
        with pytest.raises(IntegrityError), engine.begin() as connection:
            connection.execute(insert, {"fid": sha("9"), "vid": "v1", "status": "ok"})
        with engine.begin() as connection:
            connection.execute(insert, {"fid": tsp, "vid": "v1", "status": "ok"})
    finally:
        engine.dispose()
    assert _rows(catalog, tsp) == [("v1", "ok", None, None, None, None, None)]


def test_downgrade_to_0001_and_upgrade_again(catalog_url: str) -> None:
    assert head_revision() == "0004"
    assert upgrade(catalog_url, "0001") == "0001"
    engine = make_engine(catalog_url)
    try:
        assert "feature_videos" not in inspect(engine).get_table_names()
        assert upgrade(catalog_url) == "0004"
        with Catalog(catalog_url) as catalog:
            filled = fill(catalog)
            _record_three(catalog, filled.tsp.id, reused_from=filled.official.id)
        before = {name: count_rows(catalog_url, name) for name in OLD_TABLES}
        assert count_rows(catalog_url, "feature_videos") == 3

        with engine.begin() as connection:
            command.downgrade(alembic_config(connection), "0001")
        assert current_revision(catalog_url) == "0001"
        names = set(inspect(engine).get_table_names())
        assert "feature_videos" not in names and set(OLD_TABLES) <= names
        assert {name: count_rows(catalog_url, name) for name in OLD_TABLES} == before
        with pytest.raises(CatalogError, match=r"revision '0001', older than '0004'"):
            Catalog(catalog_url)

        assert upgrade(catalog_url) == "0004"
        assert count_rows(catalog_url, "feature_videos") == 0
        with Catalog(catalog_url) as catalog:
            assert catalog.show(filled.tsp.id).video_counts == FeatureVideoCounts()
            assert _record_three(catalog, filled.tsp.id, reused_from=filled.official.id) == 3
            assert catalog.show(filled.tsp.id).video_counts == FeatureVideoCounts(2, 1, 1)
        assert {name: count_rows(catalog_url, name) for name in OLD_TABLES} == before
    finally:
        engine.dispose()


def test_cli_lists_feature_videos_and_show_counts_them(catalog: Catalog,
                                                       catalog_url: str) -> None:
    filled = fill(catalog)
    tsp = filled.tsp.id
    _record_three(catalog, tsp, reused_from=filled.official.id)
    url = ("--url", catalog_url)

    listed = runner.invoke(app, ["feature-videos", tsp[:12], *url, "--json"])
    assert listed.exit_code == 0, listed.output
    rows = json.loads(listed.stdout)
    assert [(r["video_id"], r["status"], r["num_clips"], r["reused_from"]) for r in rows] == [
        ("v1", "ok", 30, None), ("v2", "failed", None, None),
        ("v3", "ok", 12, filled.official.id)]
    assert {r["feature_version_id"] for r in rows} == {tsp}
    failed = runner.invoke(app, ["feature-videos", tsp, "--status", "failed", *url, "--json"])
    assert failed.exit_code == 0, failed.output
    assert [(r["video_id"], r["reason"]) for r in json.loads(failed.stdout)] == [
        ("v2", "decode error: no video stream")]

    table = runner.invoke(app, ["feature-videos", tsp[:12], *url])
    assert table.exit_code == 0, table.output
    assert "shard-001.h5" in table.stdout and filled.official.id[:12] in table.stdout

    shown = runner.invoke(app, ["show", tsp[:12], *url, "--json"])
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.stdout)["video_counts"] == {"ok": 2, "failed": 1, "reused": 1}
    shown = runner.invoke(app, ["show", tsp[:12], *url])
    assert shown.exit_code == 0, shown.output
    assert "2 ok (1 reused), 1 failed" in shown.stdout

    bad = runner.invoke(app, ["feature-videos", tsp, "--status", "lost", *url])
    assert bad.exit_code == 2 and "not one of ok, failed" in bad.stderr
    unknown = runner.invoke(app, ["feature-videos", "abcdef", *url])
    assert unknown.exit_code == 2 and "matches no feature version" in unknown.stderr
