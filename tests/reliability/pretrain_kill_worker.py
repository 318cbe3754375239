"""``python pretrain_kill_worker.py ROOT STAGE (--at-step N | --in-swap)``: run one pretrain
stage in-process on the run directory ROOT and kill -9 itself at a chosen point, so a test
can look at what a crash there leaves (no timing race: the point is exact).

``--at-step N``: when the training reports its optimizer step N (the state of an earlier
step is on disk, ``checkpoint_every_steps`` permitting). ``--in-swap``: between the two
renames that replace the finished training's folder (the old one moved aside, the new one
not yet in place).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path

import torch

from tspipe.config import load_params
from tspipe.doors.runner import run_stage
from tspipe.paths import RunPaths
from tspipe.reporting import NullReporter


def die() -> None:
    sys.stdout.flush()
    os.kill(os.getpid(), signal.SIGKILL)


class KillAtStep(NullReporter):
    """Kills the process when the training reports ``train/loss`` of step ``step``."""

    def __init__(self, step: int) -> None:
        self.step = step

    def metric(self, key: str, value: float, step: int | None = None) -> None:
        if key == "train/loss" and step == self.step:
            die()


def kill_in_swap(final: Path) -> None:
    """After ``final`` has been renamed aside: the moment both folders are out of place."""
    replace = os.replace

    def replace_then_die(src, dst, *args, **kwargs):
        replace(src, dst, *args, **kwargs)
        if Path(src) == final:
            die()

    os.replace = replace_then_die


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("root", type=Path)
    parser.add_argument("stage")
    point = parser.add_mutually_exclusive_group(required=True)
    point.add_argument("--at-step", type=int)
    point.add_argument("--in-swap", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)  # the test process's numbers (see tests/conftest.py)
    paths = RunPaths.at(args.root)
    params = load_params(args.root / "params.yaml")
    reporter = NullReporter()
    if args.at_step is not None:
        reporter = KillAtStep(args.at_step)
    else:
        variant = args.stage.partition("@")[2] or None
        kill_in_swap(paths.for_variant(variant).model_dir("pretrain"))
    run_stage(args.stage, params, paths, reporter, track=False)
    print("finished without being killed")


if __name__ == "__main__":
    main()
