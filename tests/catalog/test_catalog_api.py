"""The catalog API on SQLite and PostgreSQL: registration, idempotency, rollback, queries."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from catalog_helpers import EXTRACT, count_rows, fill, sha
from sqlalchemy import text

from tspipe.catalog import (
    Catalog,
    VideoRow,
    current_revision,
    head_revision,
    make_engine,
    split_metric,
    upgrade,
)
from tspipe.catalog import api as catalog_api
from tspipe.errors import CatalogError
from tspipe.provenance import feature_version_id

TABLES = ("datasets", "videos", "checkpoints", "feature_versions", "evaluations")


def _counts(url: str) -> dict[str, int]:
    return {name: count_rows(url, name) for name in TABLES}


def _execute(url: str, sql: str) -> None:
    engine = make_engine(url)
    try:
        with engine.begin() as connection:
            connection.execute(text(sql))
    finally:
        engine.dispose()


def test_migrate_from_empty_then_every_call(catalog_url: str) -> None:
    assert current_revision(catalog_url) is None
    assert upgrade(catalog_url) == head_revision() == "0004"
    assert current_revision(catalog_url) == "0004"
    with Catalog(catalog_url) as catalog:
        filled = fill(catalog)

        [ds] = catalog.datasets()
        assert (ds.id, ds.name, ds.format, ds.subsets) == (
            filled.dataset_id, "anet", "activitynet", ("training", "validation"))
        assert (ds.num_videos, ds.num_segments, ds.num_classes) == (4, 6, 3)
        assert ds.counts == {"training": 2, "validation": 2}
        assert ds.created_at.tzinfo is not None

        videos = {v.video_id: v for v in catalog.videos(dataset="anet")}
        assert sorted(videos) == ["v1", "v2", "v3", "v4"]
        v1 = videos["v1"]
        assert (v1.subset, v1.source, v1.sha256, v1.duration, v1.fps, v1.num_frames) == (
            "training", "https://example.org/v1", sha("1"), 30.5, 29.97, 914)
        assert (v1.status, v1.reason, v1.dataset_name) == ("ok", None, "anet")
        missing = catalog.videos(status="missing")
        assert [(v.video_id, v.reason) for v in missing] == [("v3", "HTTP 404")]
        assert catalog.videos(dataset=filled.dataset_id, status="failed")[0].video_id == "v4"
        assert catalog.videos(dataset="thumos14") == []
        with pytest.raises(CatalogError, match="status 'lost'"):
            catalog.videos(status="lost")

        official, tsp = filled.official, filled.tsp
        assert official.id == feature_version_id(sha("e"), EXTRACT, sha("d"), "extract-1")
        assert tsp.id == feature_version_id(sha("f"), dict(reversed(EXTRACT.items())),
                                            sha("d"), "extract-1")
        assert [f.id for f in catalog.list_feature_versions()] == [official.id, tsp.id]
        assert [f.id for f in catalog.list_feature_versions(dataset="anet",
                                                            encoder="r2plus1d_34")] == [
            official.id, tsp.id]
        assert catalog.list_feature_versions(encoder="i3d") == []
        assert catalog.list_feature_versions(dataset="nope") == []
        assert (tsp.status, tsp.params, tsp.dataset_name, tsp.checkpoint_sha256) == (
            "pending", EXTRACT, "anet", sha("f"))

        done = catalog.set_feature_status(tsp.id, "complete", storage_uri="features/x",
                                          dvc_md5="0" * 32 + ".dir", num_videos=2,
                                          feature_dim=512)
        assert (done.status, done.storage_uri, done.num_videos, done.feature_dim) == (
            "complete", "features/x", 2, 512)
        assert done.mlflow_run_id == "run-extract-tsp"  # None kept the stored value
        assert done.updated_at >= done.created_at
        with pytest.raises(CatalogError, match="status 'done'"):
            catalog.set_feature_status(tsp.id, "done")
        with pytest.raises(CatalogError, match="not in the catalog"):
            catalog.set_feature_status(sha("9"), "failed")

        lineage = catalog.show(tsp.id[:10])
        assert lineage.feature.id == tsp.id
        assert lineage.dataset.name == "anet"
        assert (lineage.checkpoint.sha256, lineage.checkpoint.origin) == (sha("f"), "pretrain")
        assert lineage.checkpoint.params == {"lr": 0.01, "epochs": 8}
        assert lineage.checkpoint.dataset_id == filled.dataset_id
        assert [a.sha256 for a in lineage.ancestors] == [sha("e")]
        assert [(e.method, e.subset, e.metric, e.value) for e in lineage.evaluations] == [
            ("bmn", "validation", "auc", 0.6890),
            ("gtad", "validation", "ar@100", 0.7512),
            ("gtad", "validation", "average_map", 0.3585)]
        assert lineage.mlflow_run_ids == ("run-extract-tsp", "run-pretrain", "run-gtad-tsp")
        assert lineage.feature.git_commit == "abc123"
    assert _counts(catalog_url) == {"datasets": 1, "videos": 4, "checkpoints": 2,
                                    "feature_versions": 2, "evaluations": 5}


def test_registration_is_idempotent(catalog_url: str) -> None:
    upgrade(catalog_url)
    with Catalog(catalog_url) as catalog:
        first = fill(catalog)
        before = _counts(catalog_url)
        second = fill(catalog)
        assert _counts(catalog_url) == before
        assert (second.dataset_id, second.official.id, second.tsp.id) == (
            first.dataset_id, first.official.id, first.tsp.id)
        assert second.tsp.created_at == first.tsp.created_at  # the stored row, unchanged

        # Upserts replace status/reason and keep what a later row does not know.
        catalog.upsert_videos(first.dataset_id, [
            VideoRow("v1", status="failed", reason="corrupt"), VideoRow("v3", status="ok")])
        videos = {v.video_id: v for v in catalog.videos()}
        assert (videos["v1"].status, videos["v1"].reason, videos["v1"].sha256,
                videos["v1"].duration) == ("failed", "corrupt", sha("1"), 30.5)
        assert (videos["v3"].status, videos["v3"].reason) == ("ok", None)

        # The same params and code again are the same fact: the stored row stays as it was.
        again = catalog.record_evaluation(first.tsp.id, method="gtad", subset="validation",
                                          metric="average_map", value=0.36,
                                          mlflow_run_id="run-other")
        assert again.value == 0.3585 and again.mlflow_run_id == "run-gtad-tsp"
        assert _counts(catalog_url) == before

        with pytest.raises(CatalogError, match="registered as arch 'r2plus1d_34'"):
            catalog.register_checkpoint(sha("f"), arch="i3d", origin="pretrain")


def test_failed_batch_leaves_no_partial_rows(
    catalog: Catalog, catalog_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    ds = catalog.register_dataset("anet", sha("a"), format="activitynet", subsets=["training"],
                                  num_videos=5, num_segments=0, num_classes=0)
    catalog.upsert_videos(ds.id, [VideoRow("v1", status="ok")])
    # Two rows per statement: v1..v4 are written before v5 is found bad.
    monkeypatch.setattr(catalog_api, "_CHUNK_ROWS", 2)
    batch = [VideoRow(f"v{i}", status="failed", reason="x") for i in range(1, 5)]
    with pytest.raises(CatalogError, match=r"video 'v5'.*status 'lost'"):
        catalog.upsert_videos(ds.id, [*batch, VideoRow("v5", status="lost")])
    assert [(v.video_id, v.status) for v in catalog.videos()] == [("v1", "ok")]

    with pytest.raises(CatalogError, match="dataset 999 is not in the catalog"):
        catalog.upsert_videos(999, [VideoRow("v9")])
    with pytest.raises(CatalogError, match=r"checkpoint .* is not in the catalog"):
        catalog.register_feature_version(
            dataset_id=ds.id, checkpoint_sha256=sha("7"), encoder="r2plus1d_34",
            params=EXTRACT, manifest_sha256=sha("d"), code_version="1")
    ckpt = catalog.register_checkpoint(sha("7"), arch="r2plus1d_34", origin="scratch")
    fv = catalog.register_feature_version(
        dataset_id=ds.id, checkpoint_sha256=ckpt.sha256, encoder="r2plus1d_34",
        params=EXTRACT, manifest_sha256=sha("d"), code_version="1")
    with pytest.raises(CatalogError, match=r"'recall'.*not a finite number"):
        catalog.record_evaluations(fv.id, method="gtad", subset="validation",
                                   metrics={"average_map": 0.3, "recall": math.nan})
    with pytest.raises(CatalogError, match="method 'G-TAD'"):
        catalog.record_evaluation(fv.id, method="G-TAD", subset="validation", metric="m",
                                  value=1.0)
    assert _counts(catalog_url) == {"datasets": 1, "videos": 1, "checkpoints": 1,
                                    "feature_versions": 1, "evaluations": 0}


def test_best_and_compare(catalog: Catalog) -> None:
    filled = fill(catalog)
    top = catalog.best("gtad.average_map")
    assert top is not None
    assert (top.feature.id, top.evaluation.value, top.evaluation.subset) == (
        filled.tsp.id, 0.3585, "validation")
    assert catalog.best("average_map", method="gtad", dataset="anet").feature.id == filled.tsp.id
    assert catalog.best("bmn.auc", subset="validation").evaluation.value == 0.6890
    assert catalog.best("gtad.average_map", dataset="thumos14") is None
    assert catalog.best("bmn.average_map") is None
    assert catalog.best("gtad.average_map", subset="testing") is None
    with pytest.raises(CatalogError, match="names method 'gtad'"):
        catalog.best("gtad.average_map", method="bmn")
    # A later evaluation of the official features with other params scores higher: by
    # default (the latest evaluation of each) they are the best; the earlier params'
    # best is still asked for by hash, and --all sees both.
    catalog.record_evaluations(filled.official.id, method="gtad", subset="validation",
                               metrics={"average_map": 0.40, "ar@100": 0.70},
                               params={"seed": 1}, params_hash="beef" * 16)
    assert catalog.best("gtad.average_map").feature.id == filled.official.id
    assert catalog.best("gtad.average_map", params_hash="beef").evaluation.value == 0.40
    assert catalog.best("gtad.average_map", every=True).evaluation.params == {"seed": 1}

    comparison = catalog.compare(filled.official.id[:8], filled.tsp.id)
    assert (comparison.a.id, comparison.b.id) == (filled.official.id, filled.tsp.id)
    rows = [(r.method, r.subset, r.metric, r.value_a, r.value_b, r.params_a)
            for r in comparison.rows]
    assert rows == [("bmn", "validation", "auc", 0.6712, 0.6890, ""),
                    ("gtad", "validation", "ar@100", 0.70, 0.7512, "beef" * 16),
                    ("gtad", "validation", "average_map", 0.40, 0.3585, "beef" * 16)]
    diffs = [r.difference for r in comparison.rows]
    assert diffs[0] == pytest.approx(0.0178)
    assert diffs[1] == pytest.approx(0.0512)
    assert diffs[2] == pytest.approx(-0.0415)
    # Every record, keyed by params hash too: only the legacy gtad rows pair up.
    every = catalog.compare(filled.official.id, filled.tsp.id, every=True)
    assert [(r.metric, r.params_a, r.value_a, r.value_b) for r in every.rows
            if r.method == "gtad"] == [("ar@100", None, None, 0.7512),
                                       ("ar@100", "beef" * 16, 0.70, None),
                                       ("average_map", "", 0.3412, 0.3585),
                                       ("average_map", "beef" * 16, 0.40, None)]
    with pytest.raises(CatalogError, match="matches no feature version"):
        catalog.compare("ffff0000", filled.tsp.id)


def test_unmigrated_database_is_refused(catalog_url: str) -> None:
    with pytest.raises(CatalogError, match="tspipe catalog upgrade") as info:
        Catalog(catalog_url)
    message = str(info.value)
    if catalog_url.startswith("postgresql"):
        assert "not migrated" in message
        assert ":***@" in message and ":postgres@" not in message
    else:
        assert "does not exist" in message
        assert not Path(catalog_url.removeprefix("sqlite:///")).exists()  # not created

    upgrade(catalog_url)
    _execute(catalog_url, "DROP TABLE alembic_version")
    with pytest.raises(CatalogError, match=r"not migrated.*tspipe catalog upgrade"):
        Catalog(catalog_url)


def test_schema_of_a_newer_tspipe_is_refused(catalog_url: str) -> None:
    upgrade(catalog_url)
    _execute(catalog_url, "UPDATE alembic_version SET version_num = '9999'")
    with pytest.raises(CatalogError,
                       match=r"newer tspipe \(revision '9999' unknown.*: upgrade tspipe"):
        Catalog(catalog_url)


def test_feature_version_id_is_a_content_hash() -> None:
    base = feature_version_id(sha("a"), {"stride": 16, "clip_len": 16}, sha("b"), "1")
    assert len(base) == 64
    assert base == feature_version_id(sha("A"), {"clip_len": 16, "stride": 16}, sha("b"), "1")
    changed = {
        feature_version_id(sha("c"), {"stride": 16, "clip_len": 16}, sha("b"), "1"),
        feature_version_id(sha("a"), {"stride": 8, "clip_len": 16}, sha("b"), "1"),
        feature_version_id(sha("a"), {"stride": 16, "clip_len": 16}, sha("c"), "1"),
        feature_version_id(sha("a"), {"stride": 16, "clip_len": 16}, sha("b"), "2"),
    }
    assert len(changed) == 4 and base not in changed
    with pytest.raises(CatalogError, match="checkpoint_sha256 'abc' is not a sha256"):
        feature_version_id("abc", {}, sha("b"), "1")
    with pytest.raises(CatalogError, match="code_version"):
        feature_version_id(sha("a"), {}, sha("b"), "")


@pytest.mark.parametrize(("metric", "method", "expected"), [
    ("gtad.average_map", None, ("gtad", "average_map")),
    ("bmn.ar@100", None, ("bmn", "ar@100")),
    ("average_map", "gtad", ("gtad", "average_map")),
    ("auc", None, (None, "auc")),
    ("map@0.5", None, (None, "map@0.5")),
    ("gtad.map@0.5", "gtad", ("gtad", "map@0.5")),
])
def test_split_metric(metric: str, method: str | None,
                      expected: tuple[str | None, str]) -> None:
    assert split_metric(metric, method) == expected
