"""The run directory's own MLflow store follows the folder when it is copied or moved:
artifacts are logged into the copy, never into the original's folder."""

from __future__ import annotations

import logging
import shutil
import sqlite3

from tspipe.config import TrackingConfig
from tspipe.paths import RunPaths
from tspipe.tracking import LOCATION_COLUMNS, Tracker, relocate_store


def _locations(db) -> list[str]:
    with sqlite3.connect(db) as con:
        tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master")}
        return [v for t, c in LOCATION_COLUMNS if t in tables
                for (v,) in con.execute(f"SELECT {c} FROM {t}") if v]


def test_a_moved_run_directory_logs_artifacts_into_itself(tmp_path, caplog):
    cfg = TrackingConfig()  # sqlite:///mlflow.db: the run directory's own store
    old = RunPaths.at(tmp_path / "old" / "run")
    old.root.mkdir(parents=True)
    tracker = Tracker(cfg, old)
    with tracker.run("synth", params={}, tags={}) as run:
        run.log_dict({"videos": 3}, "synth_result.json")
    first = run.run_id
    shutil.move(tmp_path / "old", tmp_path / "new")
    new = RunPaths.at(tmp_path / "new" / "run")

    with caplog.at_level(logging.WARNING, logger="tspipe.tracking"):
        tracker = Tracker(cfg, new)
    assert "rewritten" in caplog.text and str(old.root) in caplog.text
    exp = tracker.client.get_experiment(tracker.experiment_id)
    assert exp.artifact_location == (new.root / "mlartifacts").as_uri()
    assert tracker.client.get_run(first).info.artifact_uri.startswith(new.root.as_uri() + "/")
    assert [a.path for a in tracker.client.list_artifacts(first)] == ["synth_result.json"]
    with tracker.run("ingest", params={}, tags={}) as run:
        run.log_dict({"videos": 3}, "ingest_result.json")
    assert (new.root / "mlartifacts" / run.run_id / "artifacts" / "ingest_result.json").exists()
    locations = _locations(new.root / "mlflow.db")
    assert locations and not [v for v in locations if str(old.root) in v]
    assert not (tmp_path / "old").exists()  # nothing was written into the old folder

    caplog.clear()
    Tracker(cfg, new)  # in place: nothing more to rewrite
    assert "rewritten" not in caplog.text


def test_a_store_outside_the_run_directory_is_never_rewritten(tmp_path):
    """A shared store (here a SQLite file elsewhere; a server alike) is not the run
    directory's: its locations are the store's business."""
    shared = tmp_path / "shared" / "mlflow.db"
    shared.parent.mkdir()
    cfg = TrackingConfig(uri=f"sqlite:///{shared}")
    one = RunPaths.at(tmp_path / "one")
    one.root.mkdir()
    Tracker(cfg, one)
    before = _locations(shared)
    two = RunPaths.at(tmp_path / "two")
    two.root.mkdir()
    assert not Tracker(cfg, two).embedded()
    assert _locations(shared) == before
    assert any(v.startswith(one.root.as_uri()) for v in before)  # not rewritten to two


def test_relocate_store_leaves_a_store_in_place_alone(tmp_path):
    root = tmp_path / "run"
    artifacts = root / "mlartifacts"
    assert relocate_store(root / "mlflow.db", artifacts.as_uri(), artifacts) == 0
    # Another layout (a location that is not <root>/mlartifacts): not a move of this one.
    assert relocate_store(root / "mlflow.db", "file:///srv/mlflow/artifacts", artifacts) == 0
    assert relocate_store(root / "mlflow.db", "mlruns/1", artifacts) == 0
    assert not (root / "mlflow.db").exists()
