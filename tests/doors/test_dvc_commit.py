"""The pipeline's `dvc commit` step on a real DVC project: a commit DVC refuses is a named
warning and a False result, not a failed run after all the work; an empty path param that
dvc.yaml interpolates stops the commit with the key named instead of DVC's "unexpected
error"."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

from tspipe.doors.prefect_pipeline import dvc_commit, empty_path_params
from tspipe.paths import RunPaths

DVC = str(Path(sys.executable).parent / "dvc")


def _project(tmp_path: Path, run_git) -> Path:
    """An empty git + DVC project."""
    root = tmp_path / "proj"
    root.mkdir()
    run_git(root, "init", "-q", "-b", "main")
    subprocess.run([DVC, "init", "-q"], cwd=root, check=True)
    return root


def test_a_refused_commit_is_a_warning_and_the_lock_is_left(tmp_path, caplog, run_git):
    root = _project(tmp_path, run_git)
    (root / "in.txt").write_text("x")
    # A stage whose dependency nothing made (as extract@V's encoder when pretrain is off).
    (root / "dvc.yaml").write_text(
        "stages:\n"
        "  made:\n    cmd: cp in.txt made.txt\n    deps: [in.txt]\n    outs: [made.txt]\n"
        "  late:\n    cmd: cp absent.txt late.txt\n    deps: [absent.txt]\n"
        "    outs: [late.txt]\n")
    (root / "made.txt").write_text("x")
    assert dvc_commit.fn(str(root), ["made"]) is True
    lock = (root / "dvc.lock").read_text()
    (root / "late.txt").write_text("y")
    with caplog.at_level(logging.WARNING, logger="tspipe.doors.prefect_pipeline"):
        assert dvc_commit.fn(str(root), ["made", "late"]) is False
    [record] = [r for r in caplog.records if "dvc commit" in r.getMessage()]
    assert "absent.txt" in record.getMessage() and "dvc.lock not updated" in record.getMessage()
    assert (root / "dvc.lock").read_text() == lock


def test_an_empty_dependency_path_stops_the_commit_with_the_key(tmp_path, caplog, run_git):
    root = _project(tmp_path, run_git)
    (root / "params.yaml").write_text("pretrain:\n  init_checkpoint: null\n")
    (root / "dvc.yaml").write_text(
        "stages:\n  a:\n    cmd: cp w a.txt\n    params: [pretrain.init_checkpoint]\n"
        "    deps: ['${pretrain.init_checkpoint}']\n    outs: [a.txt]\n"
        "  b:\n    foreach: [x]\n    do:\n      cmd: echo ${item}\n")
    (root / "a.txt").write_text("a")
    # What DVC itself says about such a project: nothing a user can act on.
    status = subprocess.run([DVC, "status"], cwd=root, capture_output=True, text=True)
    assert status.returncode != 0 and "unexpected error" in status.stderr
    assert empty_path_params(RunPaths.at(root)) == ["pretrain.init_checkpoint"]
    with caplog.at_level(logging.WARNING, logger="tspipe.doors.prefect_pipeline"):
        assert dvc_commit.fn(str(root), ["a"]) is False
    [record] = [r for r in caplog.records if "dvc commit" in r.getMessage()]
    assert "pretrain.init_checkpoint" in record.getMessage()
    assert not (root / "dvc.lock").exists()
    (root / "params.yaml").write_text("pretrain:\n  init_checkpoint: w\n")
    (root / "w").write_text("weights")
    assert empty_path_params(RunPaths.at(root)) == []
    assert dvc_commit.fn(str(root), ["a"]) is True and (root / "dvc.lock").exists()
