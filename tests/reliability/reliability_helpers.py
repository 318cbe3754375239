"""Helpers for the fault and bad-input suite: tiny run directories and the CLI as a user
runs it (a subprocess), with the checks every clean failure must pass."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
# ``TSPIPE_RELIABILITY=full`` (``make reliability``): more kill points and seeds.
FULL = os.environ.get("TSPIPE_RELIABILITY", "").lower() == "full"
TSPIPE = [sys.executable, "-m", "tspipe"]

# SynthActions sized for seconds, encoder runs in the test process, tiny localization.
TINY = {
    "synth": {"videos": 3, "classes": 2, "seed": 1, "min_duration": 20.0,
              "max_duration": 22.0, "fps": 10, "width": 64, "height": 48,
              "min_instances": 1, "max_instances": 2, "min_action": 3.0, "max_action": 5.0,
              "corpus_videos": 0},
    "gvf": {"workers": 0, "batch_size": 16},
    "extract": {"workers": 0, "batch_size": 16},
    "localize": {"temporal_scale": 16, "epochs": 2},
    "pretrain": {"epochs": 1, "batch_size": 8, "clips_per_segment": 1, "workers": 0,
                 "warmup_epochs": 0, "lr_milestones": [1], "init_checkpoint": None},
    "base": {"enabled": False},
    "compare": {"variants": {"main": {}}},
}


def write_params(root: Path, **sections: dict) -> Path:
    """The project's params.yaml made tiny (:data:`TINY`), then updated by ``sections``
    (a section's keys replace the tiny ones; ``compare`` is replaced whole)."""
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    for section, values in [*TINY.items(), *sections.items()]:
        if section == "compare":
            raw[section] = values
        else:
            raw[section].update(values)
    root.mkdir(parents=True, exist_ok=True)
    path = root / "params.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def cli_env(**extra: str) -> dict[str, str]:
    """The test's environment (embedded stores inside the run directory) plus ``extra``;
    log lines wide enough that Rich does not wrap the paths in messages."""
    return {**os.environ, "COLUMNS": "1000", **extra}


def tspipe(root: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 600,
           **popen) -> subprocess.CompletedProcess:
    """``tspipe ARGS`` in ``root``, as a user runs it."""
    return subprocess.run([*TSPIPE, *args], cwd=root, env=env or cli_env(),
                          capture_output=True, text=True, timeout=timeout, **popen)


def tspipe_in_process(monkeypatch, capsys, *args: str) -> subprocess.CompletedProcess:
    """The console script's entry point in this process (what ``tspipe ARGS`` runs, without
    a second start-up of Python and torch)."""
    from tspipe.doors.cli import main

    monkeypatch.setattr(sys, "argv", ["tspipe", *args])
    monkeypatch.setenv("COLUMNS", "1000")
    with pytest.raises(SystemExit) as exit_:  # Typer always ends with one
        main()
    out = capsys.readouterr()
    return subprocess.CompletedProcess(args, exit_.value.code or 0, out.out, out.err)


def assert_clean_failure(proc: subprocess.CompletedProcess, *needles: str) -> str:
    """Exit code 2, no Python traceback, and a message naming each of ``needles``."""
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, f"rc {proc.returncode}\n{out[-3000:]}"
    assert "Traceback" not in out, out[-3000:]
    for needle in needles:
        assert needle in out, f"{needle!r} not in:\n{out[-3000:]}"
    return out
