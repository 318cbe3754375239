"""The pretrain stage never loses a finished encoder, and nothing silently stands in for it.

A bad input (a typo in ``pretrain.init_checkpoint``, a corrupt file, a missing GVF file,
corpus or decoded video) fails with the params key and the file named, before any output
is touched; a new training is written beside the finished one and swapped in only when
complete, so a kill -9 during it (or between the swap's two renames) loses neither; a
disabled variant's encoder is set aside, not deleted; extraction refuses to stand random
weights in for a pretrain checkpoint that is missing. The per-step CSV of a killed and
resumed training equals an uninterrupted one's.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from reliability_helpers import assert_clean_failure, cli_env, tspipe, write_params

from tspipe.config import load_params
from tspipe.doors.runner import run_stage
from tspipe.paths import RunPaths
from tspipe.reporting import NullReporter

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]

VARIANT = "main"
PRETRAIN = f"pretrain@{VARIANT}"
CHAIN = ("synth", "ingest", "download", "decode", "gvf")
# A retraining long enough to be killed in its second epoch, a state after every step.
RETRAIN = {"seed": 1, "epochs": 2, "clips_per_segment": 2, "lr_milestones": [2],
           "checkpoint_every_steps": 1}
WORKER = Path(__file__).with_name("pretrain_kill_worker.py")
# Log lines unwrapped: a message's paths stay whole.
WIDE = cli_env(COLUMNS="1000")


def stage(root: Path, name: str):
    """Run ``name`` in this process (no MLflow); its result."""
    params = load_params(root / "params.yaml")
    return run_stage(name, params, RunPaths.at(root), NullReporter(), track=False).result


def paths_of(root: Path) -> RunPaths:
    return RunPaths.at(root).for_variant(VARIANT)


def contents(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` by relative name: its sha256."""
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def leftovers(root: Path) -> list[str]:
    """Staging or retired folders beside the variant's training."""
    return sorted(p.name for p in paths_of(root).model_dir("pretrain").parent.iterdir()
                  if p.name.startswith("."))


def copy_run(src: Path, dest: Path, **pretrain) -> Path:
    shutil.copytree(src, dest, ignore=shutil.ignore_patterns(".tspipe"))
    write_params(dest, pretrain=pretrain)
    return dest


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    """A run directory with the data, the decoded videos and the GVF file."""
    root = tmp_path_factory.mktemp("prepared") / "run"
    write_params(root)
    for name in CHAIN:
        stage(root, name)
    return root


@pytest.fixture(scope="module")
def trained(prepared, tmp_path_factory) -> Path:
    """``prepared`` plus a finished training of the variant."""
    root = copy_run(prepared, tmp_path_factory.mktemp("trained") / "run")
    stage(root, PRETRAIN)
    return root


def _corrupt_init(root: Path) -> dict:
    (root / "init").mkdir()
    (root / "init" / "bad.pt").write_bytes(b"not a checkpoint")
    return {"init_checkpoint": "init/bad.pt"}


def _drop_gvf(root: Path) -> dict:
    paths_of(root).gvf_file.unlink()
    return {}


def _drop_video(root: Path) -> dict:
    report = json.loads(paths_of(root).decode_report.read_text())
    first = next(v for v in report["videos"] if v["status"] == "ok")
    rel = (first.get("standardized") or {}).get("path") or first["source"]
    RunPaths.at(root).resolve(rel).unlink()
    return {"seed": 1}  # a retraining: a finished run is only exported again


# case -> (what it breaks, the words the message must hold)
BAD = {
    "init_checkpoint-typo": (lambda root: {"init_checkpoint": "models/pretrain/base/chekpoint.pt"},
                             ("pretrain.init_checkpoint", "chekpoint.pt")),
    "init_checkpoint-corrupt": (_corrupt_init, ("pretrain.init_checkpoint", "bad.pt")),
    "corpus-missing": (lambda root: {"corpus": "data/synth/nope.json"},
                       ("pretrain.corpus", "nope.json")),
    "gvf-missing": (_drop_gvf, ("pretrain.use_gvf", "gvf.h5")),
    "decoded-video-missing": (_drop_video, ("decode", ".mp4")),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_fails_cleanly_and_keeps_the_finished_encoder(trained, tmp_path, case,
                                                                ledger):
    root = copy_run(trained, tmp_path / "run")
    before = contents(paths_of(root).model_dir("pretrain"))
    assert "checkpoint.pt" in before
    breaks, needles = BAD[case]
    write_params(root, pretrain=breaks(root))
    proc = tspipe(root, "stage", PRETRAIN, "--params", "params.yaml", "--root", str(root),
                  env=WIDE)
    assert_clean_failure(proc, *needles)
    assert contents(paths_of(root).model_dir("pretrain")) == before
    assert leftovers(root) == []
    ledger.record("bad_input", f"pretrain:{case}")


def test_extract_and_gvf_never_stand_random_weights_in_for_a_missing_file(prepared, tmp_path,
                                                                          ledger):
    root = copy_run(prepared, tmp_path / "run")
    ckpt = paths_of(root).pretrain_checkpoint
    proc = tspipe(root, "stage", f"extract@{VARIANT}", env=WIDE)
    assert_clean_failure(proc, str(ckpt), f"tspipe stage {PRETRAIN}")
    assert not paths_of(root).features_root.exists()
    ledger.record("bad_input", "extract:pretrain-checkpoint-missing")

    # the GVF encoder's weights: pretrain.init_checkpoint, named but not there
    write_params(root, pretrain={"init_checkpoint": "models/pretrain/base/checkpoint.pt"})
    proc = tspipe(root, "stage", "gvf", env=WIDE)
    assert_clean_failure(proc, "pretrain.init_checkpoint", "models/pretrain/base/checkpoint.pt")
    ledger.record("bad_input", "gvf:init_checkpoint-missing")


def kill_worker(root: Path, *args: str) -> None:
    proc = subprocess.run([sys.executable, str(WORKER), str(root), PRETRAIN, *args],
                          env=cli_env(OMP_NUM_THREADS="1"), capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == -signal.SIGKILL, proc.stdout + proc.stderr[-3000:]


def test_kill_during_a_retraining_keeps_the_finished_encoder_then_resumes(
        prepared, trained, tmp_path, ledger):
    # the uninterrupted retraining, for comparison
    reference = copy_run(prepared, tmp_path / "reference", **RETRAIN)
    want = stage(reference, PRETRAIN)
    want_steps = paths_of(reference).plot("pretrain", "steps").read_text()
    assert want.steps_per_epoch >= 2

    root = copy_run(trained, tmp_path / "run", **RETRAIN)
    final = paths_of(root).model_dir("pretrain")
    before = contents(final)
    kill_at = want.steps_per_epoch + 2  # in the second epoch
    kill_worker(root, "--at-step", str(kill_at))
    assert contents(final) == before  # the finished encoder, untouched
    assert leftovers(root) != []  # the killed training, beside it

    got = stage(root, PRETRAIN)
    assert got.resumed_from == {"epoch": 1, "step": 1}
    assert got.checkpoint == final / "checkpoint.pt"
    assert got.checkpoint_sha256 == want.checkpoint_sha256
    assert paths_of(root).plot("pretrain", "steps").read_text() == want_steps
    assert leftovers(root) == []
    ledger.record("kill", "pretrain:retraining")


def test_kill_between_the_swap_renames_is_finished_on_the_next_run(trained, tmp_path,
                                                                   ledger):
    root = copy_run(trained, tmp_path / "run", seed=1)
    final = paths_of(root).model_dir("pretrain")
    kill_worker(root, "--in-swap")
    assert not final.exists()  # both trainings are aside: the old one and the new one

    got = stage(root, PRETRAIN)
    assert got.resumed_from is not None  # the new training was complete: exported again
    assert contents(final)["checkpoint.pt"] == got.checkpoint_sha256
    assert leftovers(root) == []
    ledger.record("kill", "pretrain:swap")


def test_disabling_sets_the_encoder_aside_and_enabling_brings_it_back(trained, tmp_path,
                                                                      ledger):
    root = copy_run(trained, tmp_path / "run")
    final = paths_of(root).model_dir("pretrain")
    sha = contents(final)["checkpoint.pt"]
    write_params(root, pretrain={"enabled": False})
    stage(root, PRETRAIN)
    assert list(contents(final)) == ["disabled.json"]  # nothing passes for its weights
    assert json.loads(paths_of(root).metrics("pretrain").read_text()) == {"enabled": 0}

    write_params(root, pretrain={"enabled": True})
    again = stage(root, PRETRAIN)
    assert again.resumed_from is not None and again.checkpoint_sha256 == sha
    assert leftovers(root) == []
    ledger.record("bad_input", "pretrain:disabled-then-enabled")
