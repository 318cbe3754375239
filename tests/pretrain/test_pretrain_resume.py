"""Interrupted runs resume to the very weights of an uninterrupted one (CPU, fixed seed):
after ``kill -9`` in the middle of an epoch, and after SIGTERM (which saves and exits); and
they report its very steps (the rows before the interruption come from the state)."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from pretrain_helpers import (
    CLIP,
    VARIANT,
    SynthSet,
    make_run_dir,
    one_thread,
    pretrain_config,
    state_dict_of,
    subprocess_env,
)

from tspipe.paths import RunPaths
from tspipe.pretrain import train
from tspipe.pretrain.report import rows_csv
from tspipe.pretrain.state import StateError, load_state

STEPS = 6  # 24 training segments x 2 clips / batch 8


def config(data: SynthSet):
    # No validation (quicker); a state after every step, so a kill finds one mid-epoch.
    return pretrain_config(data, epochs=2, clips_per_segment=2, lr_heads=0.01,
                           lr_backbone=0.01, valid_subsets=[], checkpoint_every_steps=1)


@pytest.fixture(scope="module")
def reference(synth_set, tmp_path_factory):
    """The uninterrupted run (module-scoped fixtures run before the autouse one)."""
    out = tmp_path_factory.mktemp("reference")
    with one_thread():
        return train(config(synth_set), CLIP, groundtruth=synth_set.groundtruth,
                     videos=synth_set.videos, out_dir=out, gvf=synth_set.gvf)


def start(params: Path, root: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "tspipe.doors.train", str(params), str(root),
                             *extra], env=subprocess_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def wait_for_step(proc: subprocess.Popen, state: Path, step: int, timeout: float = 120) -> None:
    """Until the saved state is at ``step`` or later of the first epoch."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"finished before the kill:\n{proc.stdout.read()}"
        if state.exists():
            try:
                saved = load_state(state)
            except StateError:  # vanishingly unlikely with the atomic rename; read again
                continue
            if saved["epoch"] > 0 or saved["step"] >= step:
                return
        time.sleep(0.02)
    proc.kill()
    pytest.fail(f"no state at step {step} within {timeout} s")


def assert_same_run(result, reference) -> None:
    got, want = state_dict_of(result.model_checkpoint), state_dict_of(reference.model_checkpoint)
    assert got.keys() == want.keys()
    assert all(torch.equal(got[k], want[k]) for k in want), "weights differ"
    strip = lambda rows: [{k: v for k, v in r.items() if k != "seconds"} for r in rows]  # noqa: E731
    assert strip(result.epochs) == strip(reference.epochs)
    assert result.encoder_sha256 == reference.encoder_sha256


@pytest.mark.slow
def test_kill_9_mid_epoch_then_resume_gives_the_same_weights(synth_set, reference, tmp_path,
                                                             repo_root):
    cfg = config(synth_set)
    params = make_run_dir(synth_set, tmp_path, cfg, repo_root)
    out = RunPaths.at(tmp_path).for_variant(VARIANT).model_dir("pretrain")
    proc = start(params, tmp_path)
    wait_for_step(proc, out / "state.pt", 2)
    proc.send_signal(signal.SIGSTOP)  # freeze it, look at what it saved, then kill it
    saved = load_state(out / "state.pt")
    proc.kill()
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert (saved["epoch"], 0) < (saved["epoch"], saved["step"]) and saved["step"] < STEPS
    assert not (out / "model.pt").exists()

    run = RunPaths.at(tmp_path)
    result = train(cfg, CLIP, groundtruth=run.groundtruth_table, videos=synth_set.videos,
                   out_dir=out, gvf=run.gvf_file, resume=True)
    assert result.resumed_from == {"epoch": saved["epoch"], "step": saved["step"]}
    assert_same_run(result, reference)
    assert len(reference.steps) == 2 * STEPS and result.steps == reference.steps


@pytest.mark.slow
def test_sigterm_saves_exits_and_resume_continues(synth_set, reference, tmp_path, repo_root):
    cfg = config(synth_set)
    params = make_run_dir(synth_set, tmp_path, cfg, repo_root)
    out = RunPaths.at(tmp_path).for_variant(VARIANT).model_dir("pretrain")
    proc = start(params, tmp_path)
    wait_for_step(proc, out / "state.pt", 1)
    proc.send_signal(signal.SIGTERM)
    log, _ = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, log
    assert "stopped by SIGTERM" in log and "resume" in log
    assert "Traceback" not in log
    saved = load_state(out / "state.pt")
    assert saved["epoch"] < 2 and (saved["epoch"], saved["step"]) != (2, 0)

    proc = start(params, tmp_path, "--resume")
    log, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, log
    assert f"resuming from {out / 'state.pt'}" in log
    assert (tmp_path / "metrics" / VARIANT / "pretrain.json").exists()
    got = state_dict_of(out / "model.pt")
    want = state_dict_of(reference.model_checkpoint)
    assert all(torch.equal(got[k], want[k]) for k in want), "weights differ"
    # The door's steps report: every step, those before the stop included.
    steps = (tmp_path / "plots" / VARIANT / "pretrain_steps.csv").read_text()
    assert len(steps.splitlines()) == 1 + 2 * STEPS
    assert steps == rows_csv(reference.steps)


@pytest.mark.slow
def test_resuming_a_finished_run_only_exports_again(synth_set, reference, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(reference.state.parent, out)
    result = train(config(synth_set), CLIP, groundtruth=synth_set.groundtruth,
                   videos=synth_set.videos, out_dir=out, gvf=synth_set.gvf, resume=True)
    assert result.resumed_from == {"epoch": 2, "step": 0}
    assert result.epochs == reference.epochs  # the saved history, seconds included
    assert result.encoder_sha256 == reference.encoder_sha256
