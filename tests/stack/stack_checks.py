"""What a scheduled pipeline run must leave on the stack's servers."""

from __future__ import annotations

from mlflow import MlflowClient

from tspipe.catalog import Catalog


def check_catalog(url: str, ids: list[str], reused_from: str | None = None) -> str:
    """The newest feature version holds ``ids`` (``reused_from``: all but the last reused
    from that version); every video is ``ok``. Returns the version's id."""
    with Catalog(url) as cat:
        versions = [v for v in cat.list_feature_versions() if v.status == "complete"]
        newest = max(versions, key=lambda v: v.created_at)
        # The annotation file's version the features were made from (a changed file is a
        # new dataset row under the same name).
        videos = cat.videos(newest.dataset_id)
        assert sorted(v.video_id for v in videos) == sorted(ids)
        assert {v.status for v in videos} == {"ok"}
        rows = {r.video_id: r for r in cat.feature_videos(newest.id)}
        assert sorted(rows) == sorted(ids) and {r.status for r in rows.values()} == {"ok"}
        if reused_from is not None:
            assert {v for v, r in rows.items() if r.reused_from == reused_from} == set(ids[:-1])
            assert rows[ids[-1]].reused_from is None  # the new video: computed
        assert cat.show(newest.id).evaluations, "no evaluation recorded"
        return newest.id


def check_mlflow_runs(uri: str, stages: list[str]) -> None:
    """The experiment (classic runs table), the pipeline run with a nested run per stage,
    the evaluate run's metrics and plots (through the server's artifact proxy), the base
    encoder registered with its variant."""
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("tspipe")
    assert exp.tags.get("mlflow.experimentKind") == "custom_model_development"
    runs = client.search_runs([exp.experiment_id], max_results=500)
    [parent] = [r for r in runs if r.data.tags.get("tspipe.kind") == "pipeline"]
    children = {r.info.run_name: r for r in runs
                if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id}
    assert sorted(children) == sorted(stages)
    assert {r.info.status for r in runs} == {"FINISHED"}
    [evaluate] = [r for n, r in children.items() if n.startswith("evaluate@")]
    assert 0.0 <= evaluate.data.metrics["bmn.auc"] <= 1.0
    assert "gtad.average_map" in evaluate.data.metrics
    logged = {a.path for a in client.list_artifacts(evaluate.info.run_id)}
    assert {"evaluate_ar_an.png", "evaluate_map_tiou.png"} <= logged, logged
    local = client.download_artifacts(evaluate.info.run_id, "evaluate_ar_an.png")
    with open(local, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    [model] = client.search_model_versions("name = 'tspipe-encoder'")
    assert model.tags["variant"] == "base" and model.description
    assert client.get_model_version_by_alias("tspipe-encoder", "base").version == model.version
