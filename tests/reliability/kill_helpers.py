"""Kill -9 at random points, and what a run directory must hold afterwards: a fingerprint
of its products and catalog rows that two clean runs share, so that a killed-and-resumed
run can be compared with an uninterrupted one."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import h5py
import yaml
from reliability_helpers import REPO, TSPIPE

# Every stage, in order, on a run directory made with :data:`SECTIONS`.
STAGES = ["synth", "ingest", "download", "decode", "flow", "base", "gvf", "pretrain@main",
          "extract@main", "evaluate@main", "compare"]
_BASE = yaml.safe_load((REPO / "params.yaml").read_text())["base"]["pretrain"]
SECTIONS = {
    "flow": {"enabled": True, "method": "farneback"},
    # The base stage on a 2-file corpus, one step: every stage runs, and dvc.yaml's
    # ${pretrain.init_checkpoint} dependency names a file (DVC cannot take a null path).
    "synth": {"corpus_videos": 2, "corpus_clips": 4, "corpus_clip_seconds": 1.6},
    "base": {"enabled": True, "pretrain": {**_BASE, "epochs": 1, "batch_size": 4,
                                           "lr_milestones": [1]}},
    "pretrain": {"init_checkpoint": "models/pretrain/base/checkpoint.pt"},
}

# The products (DVC outs) a run leaves; .tspipe/ (Prefect's cache records), the stores'
# own bookkeeping and MLflow's run ids differ between clean runs and are not compared.
PRODUCTS = ("data", "features", "models", "results", "metrics", "plots", "reports")
# Keys whose values are clocks or process ids: two clean runs differ there.
VOLATILE_KEYS = ("seconds", "per_s", "pid", "elapsed", "started", "finished", "wall",
                 "bytes")
# What one run of a shard did (a resumed shard computed only what the kill left): the
# features themselves are compared, these counts of the last run's work are not.
RUN_KEYS = {"skipped", "written", "computed", "clips", "reused"}
# Resume bookkeeping: the training's state (its clocks and loader RNG) and run key (which
# hashes reports that hold absolute paths); the weights it leads to are compared.
BOOKKEEPING = {"state.pt", "run.json"}
# Catalog columns that are content (not row ids, times or MLflow run ids).
CATALOG = {
    "feature_versions": "id, checkpoint_sha256, manifest_sha256, code_version, num_videos, "
                        "feature_dim, status",
    "evaluations": "feature_version_id, method, subset, metric, value",
    "checkpoints": "sha256, arch, origin, parent_sha256",
    "videos": "video_id, status, sha256",
    "feature_videos": "feature_version_id, video_id",
}


def _scrub(value):
    if isinstance(value, dict):
        return {k: _scrub(v) for k, v in value.items()
                if not any(w in k for w in VOLATILE_KEYS) and k not in RUN_KEYS}
    if isinstance(value, list):
        return [_scrub(v) for v in value]
    return value


def _h5(path: Path) -> dict[str, object]:
    """An HDF5 file's datasets (sha256 of their bytes) and attributes: HDF5's own layout
    bytes differ between two writes of the same arrays."""
    out: dict[str, object] = {}
    with h5py.File(path, "r") as fh:
        def visit(name, obj):
            attrs = {k: str(v) for k, v in obj.attrs.items()}
            data = (hashlib.sha256(obj[()].tobytes()).hexdigest()
                    if isinstance(obj, h5py.Dataset) else None)
            out[name] = (data, attrs)
        fh.visititems(visit)
        out["/"] = {k: str(v) for k, v in fh.attrs.items()}
    return out


def _csv(text: str) -> list[dict[str, str]]:
    return [{k: v for k, v in row.items() if not any(w in k for w in VOLATILE_KEYS)}
            for row in csv.DictReader(io.StringIO(text))]


def fingerprint(root: Path, *aliases: Path, catalog: Path | None = None
                ) -> dict[str, object]:
    """Per product file its content (JSON and CSV less clocks and pids, HDF5 by arrays and
    attributes, other files by sha256; PNG plots only present; the run directory's path,
    and each of ``aliases`` (where a copied run directory came from), written as
    ``<root>``), and the content rows of the catalog (``catalog``, default the run
    directory's own)."""
    out: dict[str, object] = {}
    for top in PRODUCTS:
        for path in sorted((root / top).rglob("*")):
            rel = path.relative_to(root).as_posix()
            if not path.is_file() or path.name in BOOKKEEPING or "/." in f"/{rel}":
                continue
            if path.suffix in (".json", ".csv", ".md"):
                text = path.read_text(encoding="utf-8")
                for where in (root, *aliases):
                    text = text.replace(str(where), "<root>")
                out[rel] = (_scrub(json.loads(text)) if path.suffix == ".json" else
                            _csv(text) if path.suffix == ".csv" else text)
            elif path.suffix == ".h5":
                out[rel] = _h5(path)
            elif path.suffix == ".png":  # rendered by matplotlib: the CSV beside holds the numbers
                out[rel] = "png"
            else:
                out[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    con = sqlite3.connect(catalog or root / "catalog.db")
    try:
        for table, cols in CATALOG.items():
            out[f"catalog:{table}"] = sorted(con.execute(f"SELECT {cols} FROM {table}"))
    finally:
        con.close()
    return out


def differences(a: dict[str, object], b: dict[str, object]) -> list[str]:
    return [f"{k}: {str(a.get(k))[:200]} != {str(b.get(k))[:200]}"
            for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]


def _env() -> dict[str, str]:
    """The test's environment, with this interpreter's scripts (tspipe, dvc) on PATH:
    dvc.yaml's commands call ``tspipe``."""
    return {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"}


def run_to_end(cmd: list[str], root: Path, timeout: float = 900) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=timeout,
                          env=_env())
    assert proc.returncode == 0, f"{cmd}: rc {proc.returncode}\n{proc.stderr[-3000:]}"
    return proc


def kill_at(cmd: list[str], root: Path, after_s: float) -> bool:
    """Start ``cmd`` in its own process group and kill -9 the whole group (the command and
    every process it started: stage subprocesses, Prefect's server, loader workers) after
    ``after_s``. True if it was still running then."""
    proc = subprocess.Popen(cmd, cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True, env=_env())
    try:
        proc.wait(timeout=after_s)
        return False
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
        return True


def stage_cmd(stage: str) -> list[str]:
    return [*TSPIPE, "stage", stage]


# The reference chain in one interpreter: each stage through the CLI's own command
# (`tspipe stage NAME`), timed; the imports every stage process pays (the CLI, the stages,
# MLflow's store, the catalog), once, timed apart.
_CHAIN = """
import json, sys, time
t0 = time.monotonic()
import mlflow.store.tracking.sqlalchemy_store
import tspipe.catalog, tspipe.doors.recording, tspipe.doors.runner, tspipe.stages
from tspipe.doors.cli import app
startup = time.monotonic() - t0
times = {}
for stage in sys.argv[1:]:
    t = time.monotonic()
    app(["stage", stage], standalone_mode=False)
    times[stage] = time.monotonic() - t
print("\\nCHAIN " + json.dumps({"startup": startup, "times": times}))
"""


def timed_chain(root: Path, stages: list[str]) -> dict[str, float]:
    """Run each stage to its end (the reference), all in one process (what separate
    `tspipe stage` processes make, without paying the imports eleven times); per stage,
    the wall time a process of its own would take: its time plus the imports'."""
    proc = run_to_end([sys.executable, "-c", _CHAIN, *stages], root)
    chain = json.loads(proc.stdout.rsplit("\nCHAIN ", 1)[1])
    return {stage: chain["startup"] + t for stage, t in chain["times"].items()}


def startup_s(root: Path) -> float:
    """What a tspipe command costs before any stage code runs (imports)."""
    t0 = time.monotonic()
    run_to_end([*TSPIPE, "stages"], root)
    return time.monotonic() - t0


def kill_point(rng: random.Random, start: float, end: float) -> float:
    """A uniform time between the end of start-up and the stage's reference end."""
    return rng.uniform(start, max(start + 0.1, end))
