"""Stages the params turn off, as DVC sees them: dvc.yaml runs every stage, so a disabled
stage writes markers only (no work, no MLflow run), which the pipeline writes too before
its `dvc commit` (test_dvc_commit.py: an empty path param stops that commit)."""

from __future__ import annotations

import json

import pytest

from tspipe.config import load_params
from tspipe.doors.cli_init import preset_text
from tspipe.doors.runner import run_stage
from tspipe.paths import RunPaths
from tspipe.reporting import NullReporter
from tspipe.stages import instances
from tspipe.stages.contract import DisabledResult


@pytest.mark.parametrize(("preset", "markers"), [
    ("demo", []),
    ("activitynet-tsp", ["synth", "base"]),
    ("thumos14-i3d", ["synth", "base", "gvf", "pretrain@i3d"]),
])
def test_the_disabled_stages_that_leave_markers(tmp_path, preset, markers):
    (tmp_path / "params.yaml").write_text(preset_text(preset))
    params = load_params(tmp_path / "params.yaml")
    assert instances(params, disabled=True) == markers
    assert not set(markers) & set(instances(params))


def test_a_disabled_stage_writes_its_markers_and_nothing_else(tmp_path):
    root = tmp_path / "run"
    root.mkdir()
    (root / "params.yaml").write_text(preset_text("thumos14-i3d"))
    params, paths = load_params(root / "params.yaml"), RunPaths.at(root)
    for stage in ("synth", "gvf"):
        out = run_stage(stage, params, paths, NullReporter(), track=False)
        assert isinstance(out.result, DisabledResult) and out.mlflow_run_id is None
        assert all(p.is_file() for p in out.result.markers)
    assert json.loads((root / "data/gvf/disabled.json").read_text()) == {
        "reason": "gvf.enabled: false"}
    assert json.loads((root / "metrics/gvf.json").read_text()) == {"enabled": 0}
    made = sorted(p.relative_to(root).as_posix() for p in root.rglob("*")
                  if p.is_file() and ".tspipe" not in p.parts)  # the run lock
    assert made == ["data/gvf/disabled.json", "data/synth/disabled.json", "metrics/gvf.json",
                    "params.yaml"]
