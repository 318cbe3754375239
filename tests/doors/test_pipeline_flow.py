"""The real Prefect pipeline flow on tiny SynthActions: outputs, MLflow runs, catalog rows,
and a second run served from the caches."""

from __future__ import annotations

import json

import pytest
from mlflow import MlflowClient

from tspipe.catalog import Catalog
from tspipe.doors.prefect_pipeline import tspipe_pipeline

pytestmark = pytest.mark.slow


def _runs(root):
    client = MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow.db'}")
    exp = client.get_experiment_by_name("tspipe")
    return client.search_runs([exp.experiment_id], max_results=100)


RUNS = ["synth", "ingest", "download", "decode", "flow", "base", "gvf", "pretrain@tsp",
        "pretrain@tac", "extract@tsp", "extract@tac", "evaluate@tsp", "evaluate@tac", "compare"]


def test_pipeline_flow_end_to_end_then_cached(run_dir):
    root = run_dir
    summary = tspipe_pipeline(params_path="params.yaml", root=str(root))
    assert [r["stage"] for r in summary["stages"]] == RUNS
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
    assert sorted(r.info.run_name for r in children) == sorted(RUNS)
    by_name = {r.info.run_name: r for r in children}
    assert {(r.data.tags["tspipe.stage"], r.data.tags.get("tspipe.variant"))
            for r in children if "@" in r.info.run_name} == {
        (s, v) for s in ("pretrain", "extract", "evaluate") for v in ("tsp", "tac")}
    ingest_run = by_name["ingest"]
    assert ingest_run.data.metrics["videos"] == 3.0
    assert ingest_run.data.params["dataset.name"] == "synthactions"
    assert ingest_run.data.tags["tspipe.prefect_flow_run_id"]
    from tspipe.config import load_params
    from tspipe.stages import STAGES
    from tspipe.tracking import numbers_hash

    assert ingest_run.data.tags["tspipe.params_hash"] == numbers_hash(
        load_params(root / "params.yaml"), STAGES["ingest"].sections)
    assert all(r.info.status == "FINISHED" for r in runs)
    # A variant's run logs its own params: the overrides applied.
    assert by_name["pretrain@tac"].data.params["pretrain.mode"] == "tac"
    assert by_name["pretrain@tsp"].data.params["pretrain.mode"] == "tsp"
    assert by_name["base"].data.params["pretrain.init_checkpoint"] == "None"

    url = f"sqlite:///{root / 'catalog.db'}"
    with Catalog(url) as cat:
        datasets = cat.datasets()
        # the benchmark and the base stage's trimmed-clip corpus (2 files)
        assert sorted((d.name, d.num_videos) for d in datasets) == [
            ("synthactions", 3), ("synthactions_corpus", 2)]
        rows = cat.videos("synthactions")
        assert sorted(v.video_id for v in rows) == [p.stem for p in videos]
        assert {v.status for v in rows} == {"ok"}
        assert all(v.duration and v.duration >= 20.0 and v.fps == 30.0 for v in rows)
        assert all(v.sha256 == json.loads((root / "data/synth/synth_manifest.json").read_text())
                   ["videos"][v.video_id]["sha256"] for v in rows)
    assert by_name["decode"].data.metrics["ok"] == 3.0
    assert (root / "data/clips/groundtruth.parquet").exists()

    # The base stage's encoder is what the GVF and both fine-tunes start from.
    base_sha = by_name["base"].data.tags["tspipe.checkpoint_sha256"]
    assert (root / "models/pretrain/base/checkpoint.pt").exists()
    with Catalog(url) as cat:  # trained on the corpus, not on the benchmark's segments
        [base_row] = [c for c in cat.checkpoints() if c.sha256 == base_sha]
        names = {d.id: d.name for d in cat.datasets()}
    assert names[base_row.dataset_id] == "synthactions_corpus"
    assert by_name["base"].data.metrics["count_train_videos"] == 1.0  # 1 of 2 corpus files
    assert by_name["gvf"].data.metrics["ok"] == 3.0
    assert (root / "data/gvf/gvf.h5").exists()
    client = MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow.db'}")
    versions = {}
    for variant in ("tsp", "tac"):
        # Extraction: one feature version per variant, complete, id on the run and file.
        current = json.loads((root / f"features/{variant}/current.json").read_text())
        versions[variant] = current["feature_version"]
        extract_run = by_name[f"extract@{variant}"]
        assert extract_run.data.tags["tspipe.feature_version"] == current["feature_version"]
        assert extract_run.data.metrics["ok"] == 3.0 and extract_run.data.metrics["clips"] > 0
        # The features come from the variant's pretrain encoder, itself from the base's.
        pretrain_run = by_name[f"pretrain@{variant}"]
        sha = pretrain_run.data.tags["tspipe.checkpoint_sha256"]
        assert pretrain_run.data.tags["tspipe.pretrain_mode"] == variant
        assert extract_run.data.tags["tspipe.checkpoint_sha256"] == sha != base_sha
        with Catalog(url) as cat:
            lineage = cat.show(current["feature_version"])
            assert (lineage.feature.status, lineage.feature.num_videos) == ("complete", 3)
            assert lineage.feature.mlflow_run_id == extract_run.info.run_id
            assert [v.status for v in cat.feature_videos(lineage.feature.id)] == ["ok"] * 3
            assert (lineage.checkpoint.sha256, lineage.checkpoint.origin) == (sha, "pretrain")
            assert lineage.checkpoint.mlflow_run_id == pretrain_run.info.run_id
            assert lineage.checkpoint.parent_sha256 == base_sha
            [base_row] = [c for c in cat.checkpoints() if c.sha256 == base_sha]
            assert (base_row.origin, base_row.parent_sha256) == ("pretrain", None)
        # Evaluation: each method's metrics in MLflow and in the catalog.
        eval_run = by_name[f"evaluate@{variant}"]
        assert eval_run.data.tags["tspipe.feature_version"] == current["feature_version"]
        assert 0.0 <= eval_run.data.metrics["bmn.auc"] <= 1.0
        logged = {a.path for a in client.list_artifacts(eval_run.info.run_id)}
        assert {"evaluate_ar_an.png", "evaluate_map_tiou.png", "evaluate_losses.png"} <= logged
        scores = json.loads((root / f"metrics/{variant}/localize.json").read_text())
        assert scores["gtad"]["auc"] == pytest.approx(eval_run.data.metrics["gtad.auc"])
        # Each score carries the params behind it: their hash is the run's tag.
        with Catalog(url) as cat:
            scored = cat.show(current["feature_version"]).evaluations
        assert {e.params_hash for e in scored} == {eval_run.data.tags["tspipe.params_hash"]}
        assert {e.mlflow_run_id for e in scored} == {eval_run.info.run_id}
        assert scored[0].params["localize"]["seed"] == load_params(root / "params.yaml") \
            .localize.seed
        assert scored[0].code_version == STAGES["evaluate"].code_version()
    assert versions["tsp"] != versions["tac"]
    with Catalog(url) as cat:
        assert {v.id for v in cat.list_feature_versions()} == set(versions.values())
        best = cat.best("bmn.auc")
        assert best is not None and best.feature.id in set(versions.values())
    models = client.search_model_versions("name = 'tspipe-encoder'")
    assert sorted(m.tags["mode"] for m in models) == ["tac", "tac", "tsp"]  # base, tac, tsp
    assert base_sha in {m.tags["sha256"] for m in models}
    # Each version names its variant, and is that variant's alias; `best` is the variant
    # whose features scored best (G-TAD's average mAP).
    by_variant = {m.tags["variant"]: m for m in models}
    assert set(by_variant) == {"base", "tsp", "tac"}
    assert by_variant["base"].tags["sha256"] == base_sha
    for variant, mv in by_variant.items():
        assert client.get_model_version_by_alias("tspipe-encoder", variant).version == mv.version
        assert variant in mv.description

    # The comparison: one row per variant and method, the numbers of each variant's
    # metrics, as a file, on the compare run and on the pipeline's own run.
    table = json.loads((root / "metrics/compare.json").read_text())
    assert set(table) == {"tsp", "tac"}
    for variant in ("tsp", "tac"):
        scores = json.loads((root / f"metrics/{variant}/localize.json").read_text())
        for method in ("bmn", "gtad", "uniform"):
            assert table[variant][method]["auc"] == scores[method]["auc"]
            assert table[variant][method]["average_map"] == scores[method]["average_map"]
    report = (root / "reports/compare.md").read_text()
    for variant in ("tsp", "tac"):
        auc = table[variant]["bmn"]["auc"] * 100
        assert f"| {variant} | {versions[variant][:12]} | bmn | {auc:.2f} |" in report
    compare_run = by_name["compare"]
    assert compare_run.data.metrics["tac.gtad.auc"] == pytest.approx(table["tac"]["gtad"]["auc"])
    parent_run = client.get_run(parent[0].info.run_id)
    assert parent_run.data.metrics["compare.tsp.bmn.auc"] == pytest.approx(
        table["tsp"]["bmn"]["auc"])
    assert "compare.md" in {a.path for a in client.list_artifacts(parent[0].info.run_id)}
    gtad = {v: table[v]["gtad"]["average_map"] for v in ("tsp", "tac")}
    best = max(gtad, key=lambda v: (gtad[v], v))
    assert client.get_model_version_by_alias("tspipe-encoder", "best").version == \
        by_variant[best].version
    assert client.get_experiment_by_name("tspipe").tags["mlflow.experimentKind"] == \
        "custom_model_development"
    assert "bmn/train_loss" in by_name["evaluate@tsp"].data.metrics
    runs_before = len(_runs(root))

    # Second run: everything from the cache, nothing new in the catalog.
    again = tspipe_pipeline(params_path="params.yaml", root=str(root))
    assert all(r["cached"] for r in again["stages"])
    with Catalog(url) as cat:
        assert len(cat.datasets()) == 2
        assert len(cat.videos()) == 3
        assert len(cat.list_feature_versions()) == 2
    assert len([r for r in _runs(root) if r.data.tags.get("tspipe.kind") == "pipeline"]) == 2
    # ... and one MLflow run only, the pipeline's, saying so: no stage run was made, and
    # the catalog keeps its links to the runs that computed.
    assert len(_runs(root)) == runs_before + 1
    assert all(r["mlflow_run_id"] is None for r in again["stages"])
    cached_parent = client.get_run(again["mlflow_run_id"])
    assert cached_parent.data.tags["tspipe.cached"] == "true"
    assert cached_parent.info.run_name == "pipeline (nothing new)"
    with Catalog(url) as cat:
        assert cat.show(versions["tsp"]).feature.mlflow_run_id == \
            by_name["extract@tsp"].info.run_id

    # A deleted output is rebuilt, not served stale from the cache; a variant's output
    # only reruns that variant's stage.
    (root / "data/annotations/annotations.json").unlink()
    (root / "metrics/tac/localize.json").unlink()
    third = tspipe_pipeline(params_path="params.yaml", root=str(root))
    state = {r["stage"]: r["cached"] for r in third["stages"]}
    assert state == {**{n: True for n in RUNS}, "ingest": False, "evaluate@tac": False}
    third_parent = third["mlflow_run_id"]
    assert sorted(r.info.run_name for r in _runs(root)
                  if r.data.tags.get("mlflow.parentRunId") == third_parent) == [
        "evaluate@tac", "ingest"]
    assert (root / "data/annotations/annotations.json").exists()

    # Another localize seed: evaluation reruns (tsp's, through its stage flow) and adds
    # records; the earlier scores stay, with their run links, and queries choose (latest by
    # default, or by params hash).
    import yaml

    from tspipe.doors.prefect_stages import STAGE_FLOWS

    def evaluations(**choice) -> dict[tuple[str, str, str, str], float]:
        with Catalog(url) as cat:
            return {(e.feature_version_id, e.method, e.metric, e.params_hash): e.value
                    for v in versions.values()
                    for e in cat.show(v, **choice).evaluations}

    first_scores = evaluations()
    raw = yaml.safe_load((root / "params.yaml").read_text())
    raw["localize"]["seed"] += 1
    (root / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    reseeded = STAGE_FLOWS["evaluate"](params_path="params.yaml", root=str(root),
                                       variant="tsp")
    assert not reseeded["cached"]
    new_hash = client.get_run(reseeded["mlflow_run_id"]).data.tags["tspipe.params_hash"]
    every = evaluations(every=True)
    assert {k: v for k, v in every.items() if k in first_scores} == first_scores
    of_tsp = {k for k in first_scores if k[0] == versions["tsp"]}
    assert len(every) == len(first_scores) + len(of_tsp)
    assert {k[3] for k in evaluations() if k[0] == versions["tsp"]} == {new_hash}
    old_hash = next(iter({k[3] for k in first_scores}))
    assert old_hash != new_hash
    assert evaluations(params_hash=old_hash[:8]) == first_scores
    with Catalog(url) as cat:  # the run that computed them, still
        assert {e.mlflow_run_id for e in cat.show(versions["tsp"], params_hash=old_hash)
                .evaluations} == {by_name["evaluate@tsp"].info.run_id}

    # The per-stage flow of a variant whose training is off writes markers only (no
    # MLflow run); the pipeline flow leaves that variant's pretrain out altogether.
    raw = yaml.safe_load((root / "params.yaml").read_text())
    raw["compare"]["variants"]["off"] = {"pretrain": {"enabled": False}}
    (root / "off.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    runs_before = len(_runs(root))
    out = STAGE_FLOWS["pretrain"](params_path="off.yaml", root=str(root), variant="off")
    assert out["metrics"] == {"enabled": 0.0} and out["mlflow_run_id"] is None
    assert json.loads((root / "models/pretrain/off/disabled.json").read_text()) == {
        "reason": "pretrain.enabled: false"}
    assert len(_runs(root)) == runs_before
