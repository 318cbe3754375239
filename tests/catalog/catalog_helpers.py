"""Shared helpers of the catalog tests (imported by conftest and the test modules)."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select, table

from tspipe.catalog import Catalog, FeatureVersionRecord, VideoRow, make_engine


def count_rows(url: str, name: str) -> int:
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            return connection.scalar(select(func.count()).select_from(table(name)))
    finally:
        engine.dispose()


def sha(char: str) -> str:
    return char * 64


EXTRACT = {"clip_len": 16, "frame_rate": 15, "stride": 16, "resize": [112, 112]}


@dataclass(frozen=True)
class Filled:
    """A small catalog: official Kinetics weights, a TSP pretrain from them, features of
    both, scored by G-TAD and BMN (values chosen so that TSP wins)."""

    dataset_id: int
    official: FeatureVersionRecord
    tsp: FeatureVersionRecord


def fill(catalog: Catalog) -> Filled:
    ds = catalog.register_dataset(
        "anet", sha("a"), format="activitynet", subsets=["training", "validation"],
        num_videos=4, num_segments=6, num_classes=3, counts={"training": 2, "validation": 2})
    catalog.upsert_videos(ds.id, [
        VideoRow("v1", subset="training", source="https://example.org/v1", sha256=sha("1"),
                 duration=30.5, fps=29.97, num_frames=914),
        VideoRow("v2", subset="training", duration=12.0, fps=25.0, num_frames=300),
        VideoRow("v3", subset="validation", status="missing", reason="HTTP 404"),
        VideoRow("v4", subset="validation", status="failed", reason="no video stream"),
    ])
    kinetics = catalog.register_checkpoint(
        sha("e"), arch="r2plus1d_34", origin="official",
        uri="https://example.org/r2plus1d_34-kinetics.pth")
    pretrain = catalog.register_checkpoint(
        sha("f"), arch="r2plus1d_34", origin="pretrain", uri="models/tsp/checkpoint.pt",
        mlflow_run_id="run-pretrain", params={"lr": 0.01, "epochs": 8},
        parent_sha256=kinetics.sha256, dataset_id=ds.id, git_commit="c0ffee")
    versions = [
        catalog.register_feature_version(
            dataset_id=ds.id, checkpoint_sha256=ckpt.sha256, encoder="r2plus1d_34",
            params=EXTRACT, manifest_sha256=sha("d"), code_version="extract-1",
            mlflow_run_id=run, git_commit="abc123")
        for ckpt, run in ((kinetics, "run-extract-k"), (pretrain, "run-extract-tsp"))]
    official, tsp = versions
    catalog.record_evaluations(official.id, method="gtad", subset="validation",
                               metrics={"average_map": 0.3412}, mlflow_run_id="run-gtad-k")
    catalog.record_evaluations(tsp.id, method="gtad", subset="validation",
                               metrics={"average_map": 0.3585, "ar@100": 0.7512},
                               mlflow_run_id="run-gtad-tsp")
    catalog.record_evaluation(official.id, method="bmn", subset="validation", metric="auc",
                              value=0.6712)
    catalog.record_evaluation(tsp.id, method="bmn", subset="validation", metric="auc",
                              value=0.6890)
    return Filled(dataset_id=ds.id, official=official, tsp=tsp)
