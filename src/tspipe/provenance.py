"""Where a result came from: the git commit, the DVC stage hashes, the params hash."""

from __future__ import annotations

import logging
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from tspipe.io import sha256_json

log = logging.getLogger(__name__)


def find_tool(name: str) -> str | None:
    """A command installed beside this Python (the venv's dvc) first, else from PATH."""
    local = Path(sys.executable).parent / name
    return str(local) if local.exists() else shutil.which(name)


def git_commit(root: Path) -> str | None:
    """The checked-out commit of the repository holding ``root`` (``+dirty`` if modified)."""
    git = find_tool("git")
    if git is None:
        return None
    try:
        sha = subprocess.run([git, "rev-parse", "HEAD"], cwd=root, capture_output=True,
                             text=True, check=True, timeout=10).stdout.strip()
        dirty = subprocess.run([git, "status", "--porcelain", "--untracked-files=no"],
                               cwd=root, capture_output=True, text=True, check=True,
                               timeout=30).stdout.strip()
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError):
        return None
    return f"{sha}+dirty" if dirty else sha


def dvc_stage_hashes(root: Path) -> dict[str, str]:
    """Per stage, a hash of its ``dvc.lock`` entry (deps, params and outs as DVC saw them)."""
    lock = root / "dvc.lock"
    if not lock.exists():
        return {}
    try:
        data = yaml.safe_load(lock.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        log.warning("%s: unreadable (%s); DVC stage hashes left out", lock, exc)
        return {}
    return {name: sha256_json(entry) for name, entry in (data.get("stages") or {}).items()}


def dvc_out_md5(root: Path, stage: str, out: str) -> str | None:
    """The md5 ``dvc.lock`` records for output ``out`` of ``stage`` (a folder's ends in
    ``.dir``: what ``dvc checkout`` restores it from), or None."""
    lock = root / "dvc.lock"
    if not lock.exists():
        return None
    try:
        data = yaml.safe_load(lock.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError:
        return None
    for entry in ((data.get("stages") or {}).get(stage) or {}).get("outs") or []:
        if entry.get("path") == out:
            return entry.get("md5")
    return None
