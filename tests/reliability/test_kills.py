"""kill -9 at random points in every stage, through every door, then a rerun: the run
directory ends with exactly the products and catalog rows of an uninterrupted run.

The reference (conftest's ``reference``) is one uninterrupted chain of ``tspipe stage``
commands (in one process: the products do not depend on it) on a tiny SynthActions run
(optical flow on, Farneback; the base stage on a corpus). Each case kills a whole process
group (the command and all it started) at a uniform random time after start-up, reruns the
same command to its end, and compares :func:`kill_helpers.fingerprint` with the
reference's. Sized down in CI (one seed per door); ``TSPIPE_RELIABILITY=full`` runs five
seeds of the stage door and three of each pipeline door.
"""

from __future__ import annotations

import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from kill_helpers import (
    PRODUCTS,
    SECTIONS,
    STAGES,
    differences,
    fingerprint,
    kill_at,
    kill_point,
    run_to_end,
    stage_cmd,
)
from reliability_helpers import FULL, REPO, TSPIPE, write_params

pytestmark = [pytest.mark.slow, pytest.mark.timeout(3600)]

# What a pipeline door reruns in the sized-down cases: the variant's last stages.
LATE = ["extract@main", "evaluate@main", "compare"]


@pytest.mark.parametrize("seed", range(5) if FULL else [0])
def test_kill_in_every_stage_through_tspipe_stage(reference, tmp_path, seed, ledger) -> None:
    _, expected, times, start = reference
    root = tmp_path / "run"
    write_params(root, **SECTIONS)
    rng = random.Random(seed)
    killed = []
    for stage in STAGES:
        if kill_at(stage_cmd(stage), root, kill_point(rng, start, times[stage])):
            killed.append(stage)
        run_to_end(stage_cmd(stage), root)
    assert differences(fingerprint(root), expected) == []
    for stage in killed:
        ledger.record("kill", f"tspipe-stage:{stage.partition('@')[0]}")
    assert killed, "no kill landed while a stage ran"


def _late_copy(ref_root: Path, dest: Path) -> Path:
    """The reference run directory less the variant's features, results and comparison:
    a pipeline door reruns extract, evaluate and compare there (the rest is cached)."""
    shutil.copytree(ref_root, dest, ignore=shutil.ignore_patterns(".tspipe"))
    return _drop_late(dest)


def _drop_late(dest: Path) -> Path:
    for rel in ("features", "results", "reports", "metrics/main/extract.json",
                "metrics/main/localize.json", "metrics/compare.json"):
        target = dest / rel
        shutil.rmtree(target) if target.is_dir() else target.unlink()
    return dest


@pytest.mark.parametrize("seed", range(3) if FULL else [0])
def test_kill_tspipe_run_then_rerun(reference, tmp_path, seed, ledger) -> None:
    ref_root, expected, times, start = reference
    rng = random.Random(100 + seed)
    if FULL:  # the whole pipeline from nothing
        root = tmp_path / "run"
        write_params(root, **SECTIONS)
        span = sum(times.values())
    else:
        root = _late_copy(ref_root, tmp_path / "run")
        span = sum(times[s] for s in LATE)
    # Prefect's temporary API server takes seconds to start before the first stage.
    killed = kill_at([*TSPIPE, "run"], root, kill_point(rng, start + 8, start + 8 + span))
    run_to_end([*TSPIPE, "run"], root, timeout=1800)
    # A copy's cached reports still name the reference's folder (absolute paths).
    assert differences(fingerprint(root, ref_root), expected) == []
    assert killed, "tspipe run ended before the kill"
    ledger.record("kill", "tspipe-run")


@pytest.fixture
def dvc_run(tmp_path: Path) -> Path:
    """The project's DVC side (dvc.yaml, its config, the stages' code) in a fresh git
    repository with the reference's params."""
    root = tmp_path / "proj"
    root.mkdir()
    for name in ("dvc.yaml", ".dvcignore", ".gitignore"):
        shutil.copy2(REPO / name, root / name)
    (root / ".dvc").mkdir()
    shutil.copy2(REPO / ".dvc" / "config", root / ".dvc" / "config")
    shutil.copytree(REPO / "src", root / "src",
                    ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    write_params(root, **SECTIONS)
    for args in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-qm", "project"]):
        subprocess.run(["git", *args], cwd=root, env=GIT_ENV, check=True, capture_output=True)
    return root


GIT_ENV = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t", "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin"}


@pytest.mark.parametrize("seed", range(3) if FULL else [0])
def test_kill_dvc_repro_then_repro(reference, dvc_run, seed, ledger) -> None:
    ref_root, expected, times, start = reference
    rng = random.Random(200 + seed)
    dvc = [str(Path(sys.executable).with_name("dvc")), "repro", "--quiet"]
    if FULL:  # the whole pipeline from nothing
        span = sum(times.values())
    else:  # the reference's products, committed to dvc.lock; the variant's last stages gone
        for name in (*PRODUCTS, "catalog.db", "mlflow.db"):
            src = ref_root / name
            if src.is_dir():
                shutil.copytree(src, dvc_run / name)
            elif src.exists():
                shutil.copy2(src, dvc_run / name)
        run_to_end([dvc[0], "commit", "--force", "--quiet"], dvc_run)
        _drop_late(dvc_run)
        span = sum(times[s] for s in LATE)
    killed = kill_at(dvc, dvc_run, kill_point(rng, start, start + span))
    run_to_end(dvc, dvc_run, timeout=1800)
    status = subprocess.run([dvc[0], "status", "--json"], cwd=dvc_run, capture_output=True,
                            text=True, check=True)
    assert status.stdout.strip() in ("{}", ""), status.stdout
    assert differences(fingerprint(dvc_run, ref_root), expected) == []
    assert killed, "dvc repro ended before the kill"
    ledger.record("kill", "dvc-repro")
