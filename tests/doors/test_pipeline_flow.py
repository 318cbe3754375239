"""The real Prefect pipeline flow on tiny SynthActions: outputs, MLflow runs, catalog rows,
and a second run served from the caches."""

from __future__ import annotations

import json

import pytest
from mlflow import MlflowClient

from tspipe.catalog import Catalog
from tspipe.flows.pipeline import tspipe_pipeline

pytestmark = pytest.mark.slow


def _runs(root):
    client = MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow.db'}")
    exp = client.get_experiment_by_name("tspipe")
    return client.search_runs([exp.experiment_id], max_results=100)


def test_pipeline_flow_end_to_end_then_cached(run_dir):
    root = run_dir
    summary = tspipe_pipeline(params_path="params.yaml", root=str(root))
    assert [r["stage"] for r in summary["stages"]] == [
        "synth", "ingest", "download", "decode", "gvf", "pretrain", "extract", "evaluate"]
    assert not any(r["cached"] for r in summary["stages"])

    videos = sorted((root / "data/synth/videos").glob("*.mp4"))
    assert len(videos) == 3
    ann = json.loads((root / "data/annotations/annotations.json").read_text())
    assert sorted(ann["database"]) == [p.stem for p in videos]
    # urls were rebased: they still point at the videos from the normalized file
    for vid, entry in ann["database"].items():
        assert ((root / "data/annotations" / entry["url"]).resolve()
                == (root / "data/synth/videos" / f"{vid}.mp4").resolve())

    runs = _runs(root)
    parent = [r for r in runs if r.data.tags.get("tspipe.kind") == "pipeline"]
    assert len(parent) == 1
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent[0].info.run_id]
    assert sorted(r.data.tags["tspipe.stage"] for r in children) == [
        "decode", "download", "evaluate", "extract", "gvf", "ingest", "pretrain", "synth"]
    ingest_run = next(r for r in children if r.data.tags["tspipe.stage"] == "ingest")
    assert ingest_run.data.metrics["videos"] == 3.0
    assert ingest_run.data.params["dataset.name"] == "synthactions"
    assert ingest_run.data.tags["tspipe.prefect_flow_run_id"]
    assert all(r.info.status == "FINISHED" for r in runs)

    url = f"sqlite:///{root / 'catalog.db'}"
    with Catalog(url) as cat:
        datasets = cat.datasets()
        assert [(d.name, d.num_videos) for d in datasets] == [("synthactions", 3)]
        rows = cat.videos("synthactions")
        assert sorted(v.video_id for v in rows) == [p.stem for p in videos]
        assert {v.status for v in rows} == {"ok"}
        assert all(v.duration and v.duration >= 20.0 and v.fps == 30.0 for v in rows)
        assert all(v.sha256 == json.loads((root / "data/synth/synth_manifest.json").read_text())
                   ["videos"][v.video_id]["sha256"] for v in rows)
    decode_run = next(r for r in children if r.data.tags["tspipe.stage"] == "decode")
    assert decode_run.data.metrics["ok"] == 3.0
    assert (root / "data/clips/groundtruth.parquet").exists()

    # Extraction: one feature version, complete, its id on the MLflow run and in the file.
    current = json.loads((root / "features/current.json").read_text())
    extract_run = next(r for r in children if r.data.tags["tspipe.stage"] == "extract")
    assert extract_run.data.tags["tspipe.feature_version"] == current["feature_version"]
    assert extract_run.data.metrics["ok"] == 3.0 and extract_run.data.metrics["clips"] > 0
    with Catalog(url) as cat:
        [version] = cat.list_feature_versions()
        assert (version.id, version.status, version.num_videos) == (
            current["feature_version"], "complete", 3)
        assert version.mlflow_run_id == extract_run.info.run_id
        assert [v.status for v in cat.feature_videos(version.id)] == ["ok"] * 3
    # Evaluation: each method's proposal metrics in MLflow and in the catalog.
    eval_run = next(r for r in children if r.data.tags["tspipe.stage"] == "evaluate")
    assert eval_run.data.tags["tspipe.feature_version"] == current["feature_version"]
    assert 0.0 <= eval_run.data.metrics["bmn.auc"] <= 1.0
    client = MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow.db'}")
    logged = {a.path for a in client.list_artifacts(eval_run.info.run_id)}
    assert {"evaluate_ar_an.png", "evaluate_map_tiou.png", "evaluate_losses.png"} <= logged
    with Catalog(url) as cat:
        best = cat.best("uniform.auc")
        assert best is not None and best.feature.id == current["feature_version"]
        assert best.evaluation.value == pytest.approx(eval_run.data.metrics["uniform.auc"])
        assert best.evaluation.mlflow_run_id == eval_run.info.run_id
    gvf_run = next(r for r in children if r.data.tags["tspipe.stage"] == "gvf")
    assert gvf_run.data.metrics["ok"] == 3.0
    assert (root / "data/gvf/gvf.h5").exists()
    # The features come from the pretrain stage's encoder: lineage back to its run.
    pretrain_run = next(r for r in children if r.data.tags["tspipe.stage"] == "pretrain")
    sha = pretrain_run.data.tags["tspipe.checkpoint_sha256"]
    assert extract_run.data.tags["tspipe.checkpoint_sha256"] == sha
    with Catalog(url) as cat:
        lineage = cat.show(current["feature_version"])
    assert (lineage.checkpoint.sha256, lineage.checkpoint.origin) == (sha, "pretrain")
    assert lineage.checkpoint.mlflow_run_id == pretrain_run.info.run_id
    [model] = client.search_model_versions("name = 'tspipe-encoder'")
    assert (model.run_id, model.tags["sha256"]) == (pretrain_run.info.run_id, sha)

    # Second run: everything from the cache, nothing new in the catalog.
    again = tspipe_pipeline(params_path="params.yaml", root=str(root))
    assert all(r["cached"] for r in again["stages"])
    with Catalog(url) as cat:
        assert len(cat.datasets()) == 1
        assert len(cat.videos()) == 3
        assert len(cat.list_feature_versions()) == 1
    assert len([r for r in _runs(root) if r.data.tags.get("tspipe.kind") == "pipeline"]) == 2

    # A deleted output is rebuilt, not served stale from the cache.
    (root / "data/annotations/annotations.json").unlink()
    third = tspipe_pipeline(params_path="params.yaml", root=str(root))
    state = {r["stage"]: r["cached"] for r in third["stages"]}
    assert state == {"synth": True, "ingest": False, "download": True, "decode": True,
                     "gvf": True, "pretrain": True, "extract": True, "evaluate": True}
    assert (root / "data/annotations/annotations.json").exists()
