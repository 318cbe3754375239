"""`tspipe catalog verify`: a catalog whose files, shards, links and MLflow runs are all there
passes; each thing taken away is named."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from catalog_helpers import EXTRACT, sha
from sqlalchemy import text
from typer.testing import CliRunner

from tspipe.catalog import Catalog, FeatureVideoRow, make_engine, upgrade
from tspipe.catalog.verify import local_path, verify
from tspipe.doors.cli import app
from tspipe.io import sha256_bytes

runner = CliRunner()
RUNS = {"run-pretrain", "run-extract", "run-gtad"}


def build(url: str, root: Path) -> dict[str, str]:
    """A run directory with real files and a catalog naming them (relative, file:// and
    https URIs); returns the ids the tests take things away from."""
    weights = b"tsp weights"
    (root / "models" / "tsp").mkdir(parents=True)
    (root / "models" / "tsp" / "checkpoint.pt").write_bytes(weights)
    upgrade(url)
    with Catalog(url) as catalog:
        ds = catalog.register_dataset("anet", sha("a"), format="activitynet",
                                      subsets=["validation"], num_videos=2, num_segments=2,
                                      num_classes=1)
        catalog.register_checkpoint(sha("e"), arch="r2plus1d_34", origin="official",
                                    uri="https://example.org/kinetics.pth")
        tsp = catalog.register_checkpoint(
            sha256_bytes(weights), arch="r2plus1d_34", origin="pretrain",
            uri="models/tsp/checkpoint.pt", mlflow_run_id="run-pretrain",
            parent_sha256=sha("e"), dataset_id=ds.id)
        versions = []
        for ckpt in (sha("e"), tsp.sha256):
            version = catalog.register_feature_version(
                dataset_id=ds.id, checkpoint_sha256=ckpt, encoder="r2plus1d_34",
                params=EXTRACT, manifest_sha256=sha("d"), code_version="extract-1",
                mlflow_run_id="run-extract")
            folder = root / "features" / version.id[:12]
            folder.mkdir(parents=True)
            (folder / "shard-0.h5").write_bytes(b"features")
            catalog.set_feature_status(version.id, "complete", storage_uri=folder.as_uri())
            versions.append(version.id)
        official, mine = versions
        catalog.record_feature_videos(mine, [
            FeatureVideoRow("v1", status="ok", num_clips=3, feature_dim=4, shard="shard-0.h5"),
            FeatureVideoRow("v2", status="ok", num_clips=3, feature_dim=4, shard="shard-0.h5",
                            reused_from=official),
            FeatureVideoRow("v3", status="failed", reason="no frames")])
        catalog.record_evaluation(mine, method="gtad", subset="validation",
                                  metric="average_map", value=0.35, mlflow_run_id="run-gtad")
    return {"official": official, "mine": mine, "checkpoint": tsp.sha256}


def _sql(url: str, statement: str) -> None:
    engine = make_engine(url)
    with engine.begin() as connection:
        connection.execute(text(statement))
    engine.dispose()


def test_local_path(tmp_path: Path) -> None:
    assert local_path("file:///data/a%20b/x.pt", tmp_path) == Path("/data/a b/x.pt")
    assert local_path("file://localhost/data/x.pt", tmp_path) == Path("/data/x.pt")
    assert local_path("models/run/checkpoint.pt", tmp_path) == tmp_path / "models/run/checkpoint.pt"
    assert local_path("/abs/x.pt", tmp_path) == Path("/abs/x.pt")
    for remote in ("https://example.org/x.pth", "s3://bucket/x", "file://host/x"):
        assert local_path(remote, tmp_path) is None


def test_clean_then_each_problem_named(catalog_url: str, tmp_path: Path) -> None:
    ids = build(catalog_url, tmp_path)
    clean = verify(catalog_url, tmp_path, RUNS.__contains__)
    assert clean.ok, clean.problems
    assert clean.checked["checkpoint files"] == 1 and clean.checked["shards"] == 2
    assert clean.checked["mlflow runs"] == 3
    assert clean.not_checked == ["https://example.org/kinetics.pth"]

    (tmp_path / "features" / ids["mine"][:12] / "shard-0.h5").unlink()
    (tmp_path / "models" / "tsp" / "checkpoint.pt").write_bytes(b"corrupted")
    _sql(catalog_url, f"UPDATE feature_videos SET reused_from = '{sha('9')}' "
                      f"WHERE video_id = 'v2'")
    _sql(catalog_url, "UPDATE evaluations SET mlflow_run_id = 'run-gone'")
    found = verify(catalog_url, tmp_path, RUNS.__contains__)
    named = {(p.kind, p.table, p.key) for p in found.problems}
    mine = ids["mine"]
    assert named == {
        ("missing-shard", "feature_videos", f"feature_version_id={mine}, video_id=v1"),
        ("missing-shard", "feature_videos", f"feature_version_id={mine}, video_id=v2"),
        ("sha256-mismatch", "checkpoints", f"sha256={ids['checkpoint']}"),
        ("dangling-link", "feature_videos", f"feature_version_id={mine}, video_id=v2"),
        ("missing-run", "evaluations", "id=1"),
    }
    [dangling] = [p for p in found.problems if p.kind == "dangling-link"]
    assert f"reused_from = {sha('9')}: no such feature_versions.id" in dangling.message

    (tmp_path / "models" / "tsp" / "checkpoint.pt").unlink()
    for folder in (tmp_path / "features").iterdir():
        for file in folder.iterdir():
            file.unlink()
        folder.rmdir()
    kinds = sorted(p.kind for p in verify(catalog_url, tmp_path).problems)
    assert kinds == ["dangling-link", "missing-file", "missing-folder", "missing-folder"]


def test_command_with_a_real_mlflow_store(tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from mlflow import MlflowClient

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    url, store = "sqlite:///catalog.db", f"sqlite:///{tmp_path / 'mlflow.db'}"
    ids = build(url, tmp_path)
    client = MlflowClient(tracking_uri=store)
    experiment = client.create_experiment("tspipe")
    real = {name: client.create_run(experiment).info.run_id for name in sorted(RUNS)}
    for name, run_id in real.items():
        _sql(url, f"UPDATE checkpoints SET mlflow_run_id = '{run_id}' "
                  f"WHERE mlflow_run_id = '{name}'")
        _sql(url, f"UPDATE feature_versions SET mlflow_run_id = '{run_id}' "
                  f"WHERE mlflow_run_id = '{name}'")
        _sql(url, f"UPDATE evaluations SET mlflow_run_id = '{run_id}' "
                  f"WHERE mlflow_run_id = '{name}'")
    args = ["catalog", "verify", "--url", url, "--tracking-uri", store]

    clean = runner.invoke(app, args)
    assert clean.exit_code == 0, clean.output
    assert "clean (checked 1 checkpoint files" in clean.stdout
    assert "3 mlflow runs" in clean.stdout and "1 remote URIs not checked" in clean.stdout

    _sql(url, f"UPDATE feature_versions SET mlflow_run_id = '{'0' * 32}' "
              f"WHERE id = '{ids['official']}'")
    broken = runner.invoke(app, [*args, "--json"])
    assert broken.exit_code == 1, broken.output
    [problem] = json.loads(broken.stdout)["problems"]
    assert (problem["kind"], problem["key"]) == ("missing-run", f"id={ids['official']}")

    table = runner.invoke(app, args)
    assert table.exit_code == 1 and "missing-run" in table.stdout
    assert "1 problems" in table.stdout

    # Without a tracking URI (no params.yaml here, no env) runs are not looked up.
    assert runner.invoke(app, ["catalog", "verify", "--url", url]).exit_code == 0
    unmigrated = runner.invoke(app, ["catalog", "verify", "--url", "sqlite:///other.db"])
    assert unmigrated.exit_code == 2
    assert "tspipe catalog upgrade" in unmigrated.stderr
