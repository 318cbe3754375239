"""Prefect deployment steps of flows/prefect.yaml (run by a worker before each flow run)."""

from __future__ import annotations

import os
from pathlib import Path

from tspipe.errors import TspipeError

ROOT_ENV = "TSPIPE_ROOT"


def enter_run_directory(directory: str | None = None) -> dict[str, str]:
    """``cd`` into the run directory: ``directory``, else ``$TSPIPE_ROOT`` of the worker.
    It must be a checkout of the repository (the deployments' entry points are its
    ``flows/``), holding the run's params file."""
    root = directory or os.environ.get(ROOT_ENV, "")
    if not root:
        raise TspipeError(f"{ROOT_ENV} is not set on this worker: start the worker with "
                          f"{ROOT_ENV}=/path/to/the/run/directory (a checkout of the tspipe "
                          "repository); `tspipe stack up` sets it for its own workers")
    path = Path(root).expanduser()
    if not (path / "flows").is_dir():
        raise TspipeError(f"{ROOT_ENV}={root}: no flows/ folder there; it must be a checkout "
                          "of the tspipe repository (the run directory)")
    os.chdir(path)
    return {"directory": str(path.resolve())}
