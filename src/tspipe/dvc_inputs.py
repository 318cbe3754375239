"""The hash of a DVC stage's inputs: its command, its dependencies' hashes and its params.

Computed by DVC's own code from the files before the stage runs
(:func:`stage_inputs_hash`), and from what ``dvc.lock`` recorded afterwards
(:func:`locked_inputs_hashes`); both hash the same fields, so an MLflow run's
``tspipe.dvc_stage_hash`` tag names the ``dvc.lock`` entry of the state it ran on, from the
first run on. DVC keeps file hashes in its state database (by inode, size and mtime), so
the dependencies hashed here are not hashed again by ``dvc repro`` or ``dvc commit``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from dvc.exceptions import DvcException
from dvc.repo import Repo
from dvc.stage.serialize import to_single_stage_lockfile

from tspipe.io import sha256_json

log = logging.getLogger(__name__)


def inputs_hash(entry: Mapping[str, Any]) -> str:
    """sha256 of a ``dvc.lock`` stage entry's inputs: cmd, each dependency's path and
    hash (a folder's ends in ``.dir``), params. Outputs are left out: they come after."""
    deps = sorted([d["path"], d.get("md5") or d.get("etag") or d.get("checksum")]
                  for d in entry.get("deps") or [])
    return sha256_json({"cmd": entry.get("cmd"), "deps": deps,
                        "params": entry.get("params") or {}})


def is_dvc_project(root: Path) -> bool:
    return (root / "dvc.yaml").exists() and (root / ".dvc").is_dir()


def stage_inputs_hash(root: Path, stage: str) -> str | None:
    """The inputs hash of ``stage`` (``NAME`` or ``NAME@VARIANT`` of ``dvc.yaml``) as the
    files are now; None outside a DVC project, for a stage ``dvc.yaml`` lacks, or when DVC
    cannot hash a dependency (one not made yet): said in the log."""
    if not is_dvc_project(root):
        return None
    try:
        with Repo(str(root)) as repo:
            # The run directory's dvc.yaml by path: a bare stage name is looked up in the
            # process's working directory (another project's dvc.yaml, or none).
            found = repo.stage.collect(f"{Path(root).resolve() / 'dvc.yaml'}:{stage}")
            if len(found) != 1:
                return None
            found[0].save_deps()
            return inputs_hash(to_single_stage_lockfile(found[0]))
    except (DvcException, OSError) as exc:
        log.warning("DVC stage %s: inputs not hashed (%s); its runs get no %s tag", stage,
                    exc, "tspipe.dvc_stage_hash")
        return None


def locked_inputs_hashes(root: Path) -> dict[str, str]:
    """Per stage of ``dvc.lock``, the inputs hash of what it recorded."""
    lock = root / "dvc.lock"
    if not lock.exists():
        return {}
    try:
        data = yaml.safe_load(lock.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        log.warning("%s: unreadable (%s); DVC stage hashes left out", lock, exc)
        return {}
    return {name: inputs_hash(entry) for name, entry in (data.get("stages") or {}).items()}
