"""Where a result came from: ids and code versions, the git commit, DVC output hashes.

The feature version id (:func:`feature_version_id`) is the catalog's key and the folder
name of a version's shards; the code part of it is a declared revision (below), not a
hash of source text.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import logging
import pkgutil
import re
import shutil
import subprocess
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from tspipe import __version__
from tspipe.errors import CatalogError, ConfigError
from tspipe.io import sha256_bytes, sha256_json

log = logging.getLogger(__name__)

# -- feature version ids ---------------------------------------------------------------------

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
# Bumped only if the recipe below changes; old ids then stay distinct from new ones.
_RECIPE = "tspipe.feature_version/1"

# The code part of a feature (or GVF) version: the revision of the code that decides the
# numbers (decoding, windows, preprocessing, the forward pass, pooling, concatenation),
# declared here instead of hashed from that code's source text, so that moving a function
# or editing a comment does not make every feature a new version (ActivityNet's features
# are hours of GPU time). Each value below is the source hash the code had when the ids
# stopped following the source text (the 2026-12 moving step), so every version made
# before keeps its id. When a change moves the numbers, give the affected entries a new
# value: tests/extract/test_code_revision.py extracts fixed videos and fails when their
# numbers move while these stay.
EXTRACT_CODE = "f3997275fc11e62e1aec81ea769e39fd9cb529c705507c47cb430b91e683d7a9"
"""The extract stage's streams (RGB and optical flow)."""
GVF_CODE = "dfbf2bf749cc4522fb3ab75777c648aa3f8122dc4395be056a23230b5c921cd0"
"""The gvf stage: extraction's clip features pooled per video."""
CONCAT_CODE = "8f034acef77522a21add819bbb0a3e61787cbb870e575d4f66accaa30720f854"
"""Two streams' per-clip concatenation (I3D)."""
FILES_EXTRACT_CODE = "394ea914f4b7947e5abc1bc75b383431386e79087b76993a8238c1242d1752af"
"""``tspipe extract FILES``: extraction outside a run directory."""


def check_sha256(value: str, *, field: str) -> str:
    """``value`` lower-cased if it is 64 hex digits, else CatalogError naming ``field``."""
    digest = value.lower() if isinstance(value, str) else value
    if not isinstance(digest, str) or not _SHA256.match(digest):
        raise CatalogError(f"{field} {value!r} is not a sha256 (64 hex digits)")
    return digest


def feature_version_id(
    checkpoint_sha256: str,
    extract_params: Mapping[str, Any],
    manifest_sha256: str,
    code_version: str,
) -> str:
    """sha256 of the canonical JSON of the checkpoint, the extraction params, the video
    manifest's hash (ids + file hashes) and the extraction code's version.

    Key order in ``extract_params`` does not matter; any value that changes changes the id.
    """
    if not code_version:
        raise CatalogError("code_version is empty: the extraction code's version is part "
                           "of the feature version id")
    return sha256_json({
        "recipe": _RECIPE,
        "checkpoint_sha256": check_sha256(checkpoint_sha256, field="checkpoint_sha256"),
        "extract_params": dict(extract_params),
        "manifest_sha256": check_sha256(manifest_sha256, field="manifest_sha256"),
        "code_version": code_version,
    })


def code_modules(names: Iterable[str]) -> list[str]:
    """The modules of a stage's ``code``: a module as named, a package as every module
    under it (its ``__init__`` included), in name order."""
    out: set[str] = set()
    for name in names:
        spec = importlib.util.find_spec(name)
        if spec is None:
            raise ConfigError(f"code module {name!r}: no such module")
        out.add(name)
        if spec.submodule_search_locations:
            out.update(m.name for m in pkgutil.walk_packages(spec.submodule_search_locations,
                                                             prefix=f"{name}."))
    return sorted(out)


def code_version(names: Iterable[str]) -> str:
    """What versions a stage's run (cache keys, a training's resume key): hash of the
    package version and the source of the modules :func:`code_modules` names. Feature
    versions use the declared revisions above instead."""
    return sha256_json([__version__] + [
        sha256_bytes(inspect.getsource(importlib.import_module(m)).encode())
        for m in code_modules(names)])


# -- where a run came from -------------------------------------------------------------------


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
