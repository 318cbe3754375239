"""Prefect's cache for tspipe's stage tasks: the keys (content hashes of what decides a
stage's output), where results are kept (the run directory), and whether a cached result
can be read here.

The flow computes each key once (hashing a stage's inputs reads them whole) and hands it
to the task as its ``cache_key`` argument; the task's policy only reads it back.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefect.cache_policies import CachePolicy
from prefect.context import TaskRunContext

from tspipe.config import Params
from tspipe.paths import RunPaths
from tspipe.stages import Batch, Stage


def stage_cache_key(name: str, stage: Stage, params: Params, paths: RunPaths) -> str:
    """Content hash of the stage's params sections, input files and code. Flow-run ids are
    not part of it, so a later pipeline run reuses the work of an earlier one."""
    return f"{name}-{stage.input_hash(params, paths)}"


def batch_cache_key(name: str, stage: Stage, params: Params, batch: Batch) -> str:
    """One batch's: its content key (ids, their entries or files' sha256) plus the stage's
    params sections and code."""
    return f"{name}-batch-{stage.batch_key(params, batch)}"


@dataclass
class GivenKeyPolicy(CachePolicy):
    """The key the flow computed (the task's ``cache_key`` argument). A run whose outputs
    are missing refreshes the cache instead of reading it (see ``run_stage_flow``): a
    deleted output is rebuilt, never served stale."""

    def compute_key(self, task_ctx: TaskRunContext, inputs: dict[str, Any],
                    flow_parameters: dict[str, Any], **kwargs: Any) -> str | None:
        return inputs["cache_key"]


def task_cache(paths: RunPaths) -> dict[str, Any]:
    """A cached task's options: records (``key_storage``) and results both in the run
    directory, never in one user's Prefect home, so that a worker with another
    ``PREFECT_HOME`` reads what the demo cached."""
    # result_storage a Path (not an unsaved block, which Prefect refuses): a LocalFileSystem.
    return {"cache_policy": GivenKeyPolicy().configure(key_storage=str(paths.prefect_results)),
            "result_storage": paths.prefect_results / "results", "persist_result": True}


def cache_state(key: str, paths: RunPaths) -> str:
    """``"none"``: nothing cached under ``key``; ``"readable"``: a record whose result this
    process can read (the task will be served from it); ``"unreadable"``: a record whose
    result is elsewhere (another Prefect home or run directory) or gone: the task must
    refresh its cache (recompute) instead of failing to read it."""
    from prefect.results import ResultRecordMetadata

    record = paths.prefect_results / key
    if not record.exists():
        return "none"
    try:
        meta = ResultRecordMetadata.load_bytes(record.read_bytes())
    except Exception:
        return "unreadable"
    stored = Path(meta.storage_key or "")
    results = (paths.prefect_results / "results").resolve()
    ok = stored.is_absolute() and stored.resolve().is_relative_to(results) and stored.exists()
    return "readable" if ok else "unreadable"
