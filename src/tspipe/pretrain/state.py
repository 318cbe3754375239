"""Resumable training state: written atomically, read with ``weights_only=True``.

The state holds the model, optimizer, scheduler and grad-scaler states, the position
(``epoch`` and optimizer ``step`` within it: the sample plans are derived from the seed,
so this is the sampler's whole position), the running sums of the epoch's training
metrics, the history of finished epochs, every optimizer step's row (the steps report of
a resumed run is whole) and the RNG states (torch, CUDA, numpy, python),
all as tensors and plain values so that ``torch.load(weights_only=True)`` reads them: no
pickled object can run code. :func:`training_state` makes it, :func:`save_state` writes
it, :func:`restore_state` loads it back into the model, optimizer, scheduler, grad scaler
and RNGs and returns the run's :class:`Progress`.

:class:`StopSignal` turns SIGTERM / SIGINT into a flag the loop reads after each
optimizer step: it finishes the step, saves and stops (a second signal of the same kind
is the default action again: a stuck run can still be killed).
"""

from __future__ import annotations

import logging
import math
import os
import random
import signal
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from tspipe.config import ClipConfig, PretrainConfig
from tspipe.errors import TspipeError
from tspipe.io import atomic_path

log = logging.getLogger(__name__)

STATE_FORMAT = "tspipe-pretrain-state"
STATE_VERSION = 1
# Settings a run may change when it resumes; any other change refuses the state.
RESUMABLE_CHANGES = frozenset({"epochs", "workers", "device", "amp", "checkpoint_every_steps",
                               "export_epoch"})


class StateError(TspipeError):
    """A training state cannot be read or does not fit this run."""


class TrainingInterrupted(TspipeError):
    """Training stopped on a signal after saving its state; ``resume`` continues it."""

    def __init__(self, signal_name: str, state: Path, epoch: int, step: int,
                 steps: int) -> None:
        self.signal_name, self.state, self.epoch, self.step = signal_name, state, epoch, step
        self.signum = int(getattr(signal, signal_name, signal.SIGTERM))
        super().__init__(f"pretrain stopped by {signal_name} after step {step} of {steps} "
                         f"of epoch {epoch + 1}; the state is saved in {state}: run again "
                         "with resume to continue")


@dataclass
class Progress:
    """Where a run stands and what it has measured: ``epoch`` epochs finished, ``step``
    optimizer steps of the next one done; ``history``: the finished epochs' rows;
    ``best``: the best epoch by validation score (``epoch`` None: none yet); ``running``:
    the sums of the current epoch's training metrics; ``steps``: every optimizer step's
    row so far (kept in the state, so a resumed run reports the steps before the resume)."""

    epoch: int = 0
    step: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    best: dict[str, Any] = field(default_factory=lambda: {"epoch": None, "score": -math.inf})
    running: dict[str, float] = field(default_factory=dict)
    steps: list[dict[str, float]] = field(default_factory=list)


def training_state(*, model: nn.Module, optimizer: Optimizer, scheduler: LRScheduler,
                   scaler: torch.amp.GradScaler, progress: Progress,
                   fingerprint: Mapping[str, Any], world_size: int) -> dict[str, Any]:
    """The state :func:`save_state` writes (``model``: unwrapped from DDP)."""
    return {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
            "epoch": progress.epoch, "step": progress.step, "history": progress.history,
            "best": progress.best, "running": progress.running, "steps": progress.steps,
            "rng": rng_state(),
            "fingerprint": fingerprint, "world_size": world_size}


def restore_state(path: Path, fingerprint: Mapping[str, Any], *, model: nn.Module,
                  optimizer: Optimizer, scheduler: LRScheduler,
                  scaler: torch.amp.GradScaler) -> Progress:
    """Load the state at ``path`` into the objects and the RNGs; its progress. Refuses a
    state of another run (:func:`check_resumable`)."""
    state = load_state(path)
    check_resumable(path, state["fingerprint"], fingerprint)
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    scaler.load_state_dict(state["scaler"])
    set_rng_state(state["rng"])
    if "steps" not in state:
        log.warning("%s: a state written before states kept the step rows: the steps "
                    "report of this run starts at this resume", path)
    return Progress(epoch=int(state["epoch"]), step=int(state["step"]),
                    history=list(state["history"]), best=dict(state["best"]),
                    running=dict(state["running"]), steps=list(state.get("steps", [])))


def rng_state() -> dict[str, Any]:
    """Every global RNG's state as tensors and plain values."""
    np_state = np.random.get_state(legacy=False)
    version, internal, gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {"bit_generator": np_state["bit_generator"],
                  "key": torch.from_numpy(np_state["state"]["key"].astype(np.int64)),
                  "pos": int(np_state["state"]["pos"]),
                  "has_gauss": int(np_state["has_gauss"]),
                  "gauss": float(np_state["gauss"])},
        "python": {"version": version, "internal": list(internal), "gauss": gauss},
    }


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Inverse of :func:`rng_state` (CUDA states only where as many devices exist)."""
    torch.set_rng_state(state["torch"])
    cuda = list(state.get("cuda") or [])
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)
    n = state["numpy"]
    np.random.set_state({"bit_generator": n["bit_generator"],
                         "state": {"key": n["key"].numpy().astype(np.uint32), "pos": n["pos"]},
                         "has_gauss": n["has_gauss"], "gauss": n["gauss"]})
    p = state["python"]
    random.setstate((p["version"], tuple(p["internal"]), p["gauss"]))


def save_state(path: Path, state: dict[str, Any]) -> Path:
    """Write ``state`` to ``path`` atomically (temp file in the same folder, fsync, rename):
    a kill at any moment leaves the previous state or the new one, never a torn file."""
    payload = {"format": STATE_FORMAT, "version": STATE_VERSION, **state}
    with atomic_path(path) as tmp, tmp.open("wb") as fh:
        torch.save(payload, fh)
        fh.flush()
        os.fsync(fh.fileno())
    return path


def load_state(path: Path) -> dict[str, Any]:
    """A state written by :func:`save_state`, read with ``weights_only=True``."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle refusals, torn or foreign files
        raise StateError(f"{path}: cannot be read as a training state: "
                         f"{type(exc).__name__}: {exc}") from exc
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise StateError(f"{path}: not a tspipe pretrain state")
    if state.get("version") != STATE_VERSION:
        raise StateError(f"{path}: state version {state.get('version')!r}; this tspipe "
                         f"reads version {STATE_VERSION}")
    return state


class StopSignal:
    """While entered, SIGTERM and SIGINT set :attr:`requested` (the signal's name) instead
    of stopping the process. Only the main thread can handle signals: elsewhere (a
    Prefect worker thread) this does nothing and the process keeps the default actions."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self) -> None:
        self.requested: str | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if self.requested == name:  # asked twice: stop now
            signal.signal(signum, self._previous.get(signum, signal.SIG_DFL))
            signal.raise_signal(signum)
            return
        self.requested = name
        log.warning("%s received: finishing the current step, then saving and stopping "
                    "(send it again to stop at once)", name)

    def __enter__(self) -> StopSignal:
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        else:
            log.debug("not in the main thread: SIGTERM/SIGINT keep their default actions")
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()


def run_fingerprint(cfg: PretrainConfig, clip: ClipConfig, num_classes: int) -> dict[str, Any]:
    """What a resumed run must share with the state it resumes."""
    keep = {k: v for k, v in cfg.model_dump(mode="json").items() if k not in RESUMABLE_CHANGES}
    return {"pretrain": keep, "clip": clip.model_dump(mode="json"), "num_classes": num_classes}


def check_resumable(path: Path, saved: Mapping[str, Any], now: Mapping[str, Any]) -> None:
    diff = []
    for section, value in now.items():
        old = saved.get(section)
        if isinstance(value, dict):
            old = old if isinstance(old, dict) else {}
            diff += [f"{section}.{k}" for k in sorted(set(value) | set(old))
                     if old.get(k) != value.get(k)]
        elif old != value:
            diff.append(section)
    if diff:
        raise StateError(f"{path}: the saved run differs from this one in {', '.join(diff)}; "
                         "resume only with the same settings (or start afresh without resume)")
