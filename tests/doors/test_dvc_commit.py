"""The pipeline's `dvc commit` step on a real DVC project: a commit DVC refuses is a named
warning and a False result, not a failed run after all the work."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

from tspipe.doors.prefect_pipeline import dvc_commit

DVC = str(Path(sys.executable).parent / "dvc")


def test_a_refused_commit_is_a_warning_and_the_lock_is_left(tmp_path, caplog, run_git):
    root = tmp_path / "proj"
    root.mkdir()
    run_git(root, "init", "-q", "-b", "main")
    subprocess.run([DVC, "init", "-q"], cwd=root, check=True)
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
