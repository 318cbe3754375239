"""A run directory for the team stack: a checkout's flows/, tiny params reading a user's
annotation file (local videos), and the stack's CLI."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import yaml

BIN = Path(sys.executable).parent
PASSWORD = "stack-test-pw-0123"
VARIANT = "main"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tiny_params_writer():
    """tests/doors/conftest.py's ``write_params`` (tiny encoder, localizer, synth sizes)."""
    path = Path(__file__).parents[1] / "doors" / "conftest.py"
    spec = importlib.util.spec_from_file_location("tspipe_tests_doors_tiny", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module.write_params


def make_run_dir(root: Path, repo_root: Path, *, interval_s: int) -> list[str]:
    """``root`` as a team's run directory: the repository's flows/ (the nightly's schedule
    made an interval of ``interval_s``), 4 SynthActions videos in ``incoming/`` of which
    the annotation file lists 3 (returns all 4 ids, the unlisted one last), one variant
    extracting with the base stage's encoder, tiny everything."""
    shutil.copytree(repo_root / "flows", root / "flows")
    spec = yaml.safe_load((root / "flows/prefect.yaml").read_text())
    for dep in spec["deployments"]:
        if dep["name"] == "pipeline-nightly":
            dep["schedules"] = [{"interval": interval_s, "active": True}]
            # Every few seconds, a run that finds the last one going is cancelled rather
            # than queued (the nightly's queue would start one after another all along).
            dep["concurrency_limit"] = {"limit": 1, "collision_strategy": "CANCEL_NEW"}
    (root / "flows/prefect.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    subprocess.run([str(BIN / "tspipe"), "synth", str(root / "incoming"), "--videos", "4",
                    "--classes", "2", "--seed", "3", "--min-duration", "20",
                    "--max-duration", "22", "--fps", "10", "--width", "64", "--height", "48",
                    "--corpus-videos", "2"],
                   check=True, capture_output=True, timeout=300)
    full = json.loads((root / "incoming/synthactions.json").read_text())
    ids = sorted(full["database"], key=lambda v: (full["database"][v]["subset"] != "validation", v))
    # The held-back video is a training one: both subsets stay non-empty either way.
    held = next(v for v in reversed(ids) if full["database"][v]["subset"] == "training")
    write_annotations(root, [v for v in ids if v != held])
    _tiny_params_writer()(root, repo_root)
    raw = yaml.safe_load((root / "params.yaml").read_text())
    raw["synth"]["enabled"] = False
    raw["dataset"]["annotations"] = "incoming/annotations.json"
    raw["compare"] = {"variants": {VARIANT: {}}}
    # The base stage's encoder (trained on the corpus, registered in MLflow) extracts:
    # no fine-tuning, so that a new video changes no encoder.
    raw["base"]["pretrain"]["corpus"] = "incoming/corpus/synthactions_corpus.json"
    raw["pretrain"]["enabled"] = False
    (root / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    return [v for v in ids if v != held] + [held]


def write_annotations(root: Path, ids: list[str]) -> None:
    """incoming/annotations.json: the synth file's entries of ``ids`` only."""
    full = json.loads((root / "incoming/synthactions.json").read_text())
    full["database"] = {v: full["database"][v] for v in ids}
    tmp = root / "incoming/annotations.json.tmp"
    tmp.write_text(json.dumps(full))
    tmp.replace(root / "incoming/annotations.json")


def stack_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("TSPIPE_CATALOG_URL", "MLFLOW_TRACKING_URI", "PREFECT_API_URL",
                        "TSPIPE_STACK_POSTGRES_URL")}
    # Workers poll every 2 s (not 10) and a run queued behind the deployment's
    # concurrency limit retries in 5 s (not 30): the same behaviour, sooner.
    return {**env, "TSPIPE_STACK_PASSWORD": PASSWORD, "PREFECT_WORKER_QUERY_SECONDS": "2",
            "PREFECT_DEPLOYMENT_CONCURRENCY_SLOT_WAIT_SECONDS": "5", **extra}


def stack(root: Path, *args: str, env: dict[str, str] | None = None,
          timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "tspipe"), "stack", *args, "--root", str(root)],
                          env=env or stack_env(), capture_output=True, text=True,
                          timeout=timeout)
