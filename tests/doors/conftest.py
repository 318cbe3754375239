"""A tiny run directory: SynthActions sized for seconds, embedded stores inside it."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

TINY_SYNTH = {"videos": 3, "classes": 2, "seed": 1, "min_duration": 20.0,
              "max_duration": 22.0, "fps": 10, "width": 64, "height": 48,
              "min_instances": 1, "max_instances": 2, "min_action": 3.0, "max_action": 5.0,
              # The base stage's corpus: 2 files (1 training, 1 validation) of 4 clips.
              "corpus_videos": 2, "corpus_clips": 4, "corpus_clip_seconds": 1.6}


# Encoder runs decode in the test process: spawned workers cost seconds each to start.
TINY_ENCODER_RUN = {"workers": 0, "batch_size": 16}
# BMN and G-TAD at a 16-step scale for 2 epochs: the stage's plumbing, in seconds.
TINY_LOCALIZE = {"temporal_scale": 16, "epochs": 2}
# One epoch of one clip per segment, in the test process.
TINY_PRETRAIN = {"epochs": 1, "batch_size": 8, "clips_per_segment": 1, "workers": 0,
                 "warmup_epochs": 0, "lr_milestones": [1]}
# The base stage's own recipe (on the corpus), cut to one step (its other overrides stay).
TINY_BASE = {"epochs": 1, "batch_size": 4, "lr_milestones": [1]}


def write_params(root: Path, repo_root: Path, **overrides: dict) -> Path:
    raw = yaml.safe_load((repo_root / "params.yaml").read_text())
    raw["synth"].update(TINY_SYNTH)
    raw["gvf"].update(TINY_ENCODER_RUN)
    raw["extract"].update(TINY_ENCODER_RUN)
    raw["localize"].update(TINY_LOCALIZE)
    raw["pretrain"].update(TINY_PRETRAIN)
    raw["base"]["pretrain"].update(TINY_BASE)
    for section, values in overrides.items():
        raw[section].update(values)
    path = root / "params.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


@pytest.fixture
def run_dir(tmp_path: Path, repo_root: Path) -> Path:
    root = tmp_path / "run"
    root.mkdir()
    write_params(root, repo_root)
    return root


def git(root: Path, *args: str) -> str:
    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t", "PATH": "/usr/bin:/bin"}
    return subprocess.run(["git", *args], cwd=root, env=env, check=True, capture_output=True,
                          text=True).stdout


@pytest.fixture
def run_git():
    """``git(root, *args)``: git in a test's project, with a fixed identity; its stdout."""
    return git


@pytest.fixture
def dvc_project(tmp_path: Path, repo_root: Path) -> Path:
    """A copy of this project's DVC side (dvc.yaml, .dvc/config, the stages' code) in a
    fresh git repository, with tiny SynthActions params."""
    root = tmp_path / "proj"
    root.mkdir()
    for name in ("dvc.yaml", ".dvcignore"):
        shutil.copy2(repo_root / name, root / name)
    (root / ".dvc").mkdir()
    shutil.copy2(repo_root / ".dvc" / "config", root / ".dvc" / "config")
    shutil.copytree(repo_root / "src", root / "src",
                    ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    write_params(root, repo_root)
    # The project's own .gitignore: DVC refuses to write a dvc.lock that git ignores.
    shutil.copy2(repo_root / ".gitignore", root / ".gitignore")
    git(root, "init", "-q", "-b", "main")
    git(root, "add", "-A")
    git(root, "commit", "-qm", "project")
    return root
