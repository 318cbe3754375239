"""Training states: RNG round trip, weights_only reading, a whole state restored into fresh
objects, config checks on resume, and the signal flag."""

from __future__ import annotations

import os
import random
import signal

import numpy as np
import pytest
import torch

from tspipe.config import ClipConfig, PretrainConfig
from tspipe.pretrain.state import (
    Progress,
    StateError,
    StopSignal,
    check_resumable,
    load_state,
    restore_state,
    rng_state,
    run_fingerprint,
    save_state,
    set_rng_state,
    training_state,
)


def draws() -> tuple:
    return (torch.rand(3).tolist(), np.random.rand(3).tolist(), np.random.randn(),
            random.random())


def test_rng_states_survive_a_weights_only_file(tmp_path):
    torch.manual_seed(1)
    np.random.seed(2)
    random.seed(3)
    np.random.randn()  # leaves a cached gaussian in numpy's legacy state
    path = save_state(tmp_path / "state.pt", {"rng": rng_state(), "epoch": 3})
    want = draws()
    state = load_state(path)  # torch.load(weights_only=True) inside
    assert state["epoch"] == 3
    set_rng_state(state["rng"])
    assert draws() == want


def trainables(seed: int) -> dict:
    torch.manual_seed(seed)
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 0.5 ** step)
    return {"model": model, "optimizer": optimizer, "scheduler": scheduler,
            "scaler": torch.amp.GradScaler("cuda", enabled=False)}


def test_a_restored_state_continues_where_the_saved_run_stood(tmp_path):
    run = trainables(0)
    run["model"](torch.ones(4, 3)).sum().backward()
    run["optimizer"].step()  # momentum buffers to save
    run["scheduler"].step()
    fingerprint = run_fingerprint(PretrainConfig(seed=0), ClipConfig(), 5)
    progress = Progress(epoch=1, step=2, history=[{"epoch": 1.0, "train_loss": 0.5}],
                        best={"epoch": 1, "score": 0.25}, running={"loss": 3.0})
    path = save_state(tmp_path / "state.pt", training_state(
        progress=progress, fingerprint=fingerprint, world_size=1, **run))
    want = draws()

    fresh = trainables(1)
    got = restore_state(path, fingerprint, **fresh)
    assert got == progress
    assert draws() == want
    assert all(torch.equal(a, b) for a, b in zip(fresh["model"].parameters(),
                                                 run["model"].parameters(), strict=True))
    assert fresh["optimizer"].state_dict()["state"].keys() == {0, 1}
    assert fresh["scheduler"].get_last_lr() == run["scheduler"].get_last_lr() == [0.05]
    with pytest.raises(StateError, match="num_classes"):
        restore_state(path, run_fingerprint(PretrainConfig(seed=0), ClipConfig(), 6), **fresh)


def test_a_foreign_or_unsafe_file_is_refused(tmp_path):
    path = tmp_path / "x.pt"
    torch.save({"model": {}}, path)
    with pytest.raises(StateError, match="not a tspipe pretrain state"):
        load_state(path)
    torch.save({"format": "tspipe-pretrain-state", "version": 1, "obj": StopSignal()}, path)
    with pytest.raises(StateError, match="cannot be read"):
        load_state(path)


def test_resume_refuses_other_settings_but_allows_more_epochs():
    clip = ClipConfig()
    saved = run_fingerprint(PretrainConfig(seed=0), clip, 5)
    check_resumable("s", saved, run_fingerprint(PretrainConfig(seed=0, epochs=12, workers=0),
                                                clip, 5))
    with pytest.raises(StateError, match=r"pretrain.batch_size, pretrain.seed"):
        check_resumable("s", saved, run_fingerprint(PretrainConfig(seed=1, batch_size=64),
                                                    clip, 5))
    with pytest.raises(StateError, match=r"num_classes"):
        check_resumable("s", saved, run_fingerprint(PretrainConfig(seed=0), clip, 6))


def test_stop_signal_sets_a_flag_and_restores_the_handler():
    before = signal.getsignal(signal.SIGTERM)
    with StopSignal() as stop:
        assert stop.requested is None
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.requested == "SIGTERM"
    assert signal.getsignal(signal.SIGTERM) is before
