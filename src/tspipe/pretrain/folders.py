"""A training's folder, replaced in one step: nothing lost to a failure or a kill.

A new training is written in a **staging** folder beside the finished one and renamed into
place only when it is complete; until then the finished folder (the encoder extraction
reads) stays as it was. ``run.json`` in each folder holds the run key and whether the
training is ``complete``; a staging folder with the current key is resumed.

The swap is two renames, each atomic on POSIX: ``final`` -> ``retired``, ``staging`` ->
``final``; then ``retired`` is removed. A crash between the renames leaves no ``final``:
:func:`recover`, the first thing every run does, moves the complete staging folder into
place (or, were it not complete, the retired one back) and removes what was retired.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from tspipe.io import atomic_write_json

log = logging.getLogger(__name__)

RUN_MARKER = "run.json"
# What makes a folder a training worth keeping: its weights or its resumable state.
TRAINING_FILES = ("checkpoint.pt", "model.pt", "best_model.pt", "state.pt")


@dataclass(frozen=True)
class TrainingFolders:
    final: Path  # the finished training: what extraction and DVC read
    staging: Path  # a new training, until complete
    retired: Path  # the former final, for the instant of a swap


def read_marker(folder: Path) -> dict[str, object]:
    """``folder``'s ``run.json`` (``{}`` without one). It is written atomically, so an
    unreadable one was edited by hand: it names no run (logged), so the training it
    marks is neither resumed nor taken for complete."""
    path = folder / RUN_MARKER
    if not path.is_file():
        return {}
    try:
        marker = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        log.warning("%s: unreadable run marker (%s): its training is not resumed", path, exc)
        return {}
    return marker if isinstance(marker, dict) else {}


def is_complete(folder: Path, key: str | None = None) -> bool:
    """``folder`` holds a finished training (of run ``key``, when given)."""
    marker = read_marker(folder)
    return marker.get("complete") is True and (key is None or marker.get("key") == key)


def holds_training(folder: Path) -> bool:
    return any((folder / name).exists() for name in TRAINING_FILES)


def start(folder: Path, key: str) -> None:
    """An empty staging folder for run ``key``."""
    folder.mkdir(parents=True)
    atomic_write_json(folder / RUN_MARKER, {"key": key, "complete": False})


def mark_complete(folder: Path, key: str) -> None:
    atomic_write_json(folder / RUN_MARKER, {"key": key, "complete": True})


def recover(dirs: TrainingFolders) -> list[str]:
    """Finish or undo what a crash interrupted (see the module docstring); what it did."""
    done = []
    if not dirs.final.exists():
        if is_complete(dirs.staging):
            dirs.staging.replace(dirs.final)
            done.append(f"moved the complete training {dirs.staging} into place")
        elif holds_training(dirs.retired):
            dirs.retired.replace(dirs.final)
            done.append(f"put the training {dirs.retired} back in place")
    if dirs.retired.exists():
        shutil.rmtree(dirs.retired)
        done.append(f"removed the replaced training {dirs.retired}")
    if done:
        _sync(dirs.final.parent)
    return done


def swap_in(dirs: TrainingFolders) -> None:
    """The complete staging folder becomes ``final``; the former ``final`` is removed."""
    if dirs.retired.exists():  # left by a crash that recover() did not see: never resumed
        shutil.rmtree(dirs.retired)
    if dirs.final.exists():
        dirs.final.replace(dirs.retired)
    dirs.staging.replace(dirs.final)
    _sync(dirs.final.parent)
    if dirs.retired.exists():
        shutil.rmtree(dirs.retired)


def set_aside(dirs: TrainingFolders) -> str | None:
    """Empty ``final`` without losing a training: one it holds moves to the staging slot
    (where a run with its key resumes it: only exported again), replacing what was there
    (an unfinished training is worth less than a finished one); anything else is
    removed. What it did, if anything."""
    if not dirs.final.exists():
        return None
    if holds_training(dirs.final):
        if dirs.staging.exists():
            shutil.rmtree(dirs.staging)
        dirs.final.replace(dirs.staging)
        _sync(dirs.final.parent)
        return f"set the training aside in {dirs.staging}"
    dirs.final.replace(dirs.retired)
    shutil.rmtree(dirs.retired)
    return None


def _sync(folder: Path) -> None:
    """Make the renames in ``folder`` durable (a power cut keeps the swap's outcome)."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
