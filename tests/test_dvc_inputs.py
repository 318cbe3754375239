"""The inputs hash of a DVC stage is the run directory's, whatever the working directory."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tspipe.dvc_inputs import stage_inputs_hash
from tspipe.provenance import find_tool


def _project(root: Path, dep_text: str) -> Path:
    root.mkdir()
    dvc = find_tool("dvc")
    assert dvc is not None
    subprocess.run([dvc, "init", "--no-scm", "-q"], cwd=root, check=True)
    (root / "in.txt").write_text(dep_text)
    (root / "dvc.yaml").write_text("stages:\n  make:\n    cmd: cp in.txt out.txt\n"
                                   "    deps: [in.txt]\n    outs: [out.txt]\n")
    return root


def test_hash_is_the_run_directorys_from_another_project(tmp_path, monkeypatch):
    if find_tool("dvc") is None:
        pytest.skip("dvc is not installed")
    run = _project(tmp_path / "run", "the run's input")
    other = _project(tmp_path / "other", "another project's input")
    monkeypatch.chdir(run)
    own = stage_inputs_hash(run, "make")
    monkeypatch.chdir(other)  # a process started in another DVC project (a repo checkout)
    assert own is not None
    assert stage_inputs_hash(run, "make") == own
    assert stage_inputs_hash(other, "make") not in (None, own)
