"""Prefect's cache for tspipe's stage tasks: the keys (content hashes of what decides a
stage's output), where results are kept (the run directory), and whether a cached result
can be read here."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefect.cache_policies import CachePolicy
from prefect.context import TaskRunContext

from tspipe.config import Params, load_params
from tspipe.paths import RunPaths
from tspipe.stages import Batch, Stage, bind


def load(params_path: str, root: str) -> tuple[Params, RunPaths]:
    paths = RunPaths.at(root)
    return load_params(paths.resolve(params_path)), paths


def load_bound(params_path: str, root: str, name: str) -> tuple[Stage, Params, RunPaths]:
    """The stage of the stage run ``name`` (``NAME`` or ``NAME@VARIANT``) and the params
    and paths it runs with."""
    return bind(name, *load(params_path, root))


@dataclass
class StageInputsPolicy(CachePolicy):
    """Cache key = content hash of the stage's params sections, input files and code.

    Flow-run ids are not part of the key, so a later pipeline run reuses the work of an
    earlier one. A run whose outputs are missing refreshes the cache instead of reading it
    (see ``run_stage_flow``): a deleted output is rebuilt, never served stale.
    """

    def compute_key(self, task_ctx: TaskRunContext, inputs: dict[str, Any],
                    flow_parameters: dict[str, Any], **kwargs: Any) -> str | None:
        stage, params, paths = load_bound(inputs["params_path"], inputs["root"], inputs["name"])
        return f"{inputs['name']}-{stage.input_hash(params, paths)}"


@dataclass
class BatchInputsPolicy(CachePolicy):
    """Cache key of one batch = its content key (ids, their entries or files' sha256) plus
    the stage's params sections and code. A batch whose outputs are missing refreshes."""

    def compute_key(self, task_ctx: TaskRunContext, inputs: dict[str, Any],
                    flow_parameters: dict[str, Any], **kwargs: Any) -> str | None:
        stage, params, _ = load_bound(inputs["params_path"], inputs["root"], inputs["name"])
        batch = Batch(tuple(inputs["ids"]), inputs["batch_key"])
        return f"{inputs['name']}-batch-{stage.batch_key(params, batch)}"


def task_storage(paths: RunPaths) -> dict[str, Any]:
    """Where cached tasks keep their results: in the run directory, beside the cache
    records (``key_storage``), never in one user's Prefect home, so that a worker with
    another ``PREFECT_HOME`` reads what the demo cached."""
    # A Path (not an unsaved block, which Prefect refuses): a LocalFileSystem there.
    return {"result_storage": paths.prefect_results / "results", "persist_result": True}


def cache_state(policy: CachePolicy, inputs: dict[str, Any], paths: RunPaths) -> str:
    """``"none"``: nothing cached for ``inputs``; ``"readable"``: a record whose result this
    process can read (the task will be served from it); ``"unreadable"``: a record whose
    result is elsewhere (another Prefect home or run directory) or gone: the task must
    refresh its cache (recompute) instead of failing to read it."""
    from prefect.results import ResultRecordMetadata

    key = policy.compute_key(None, inputs, {})  # type: ignore[arg-type]
    record = paths.prefect_results / key if key else None
    if record is None or not record.exists():
        return "none"
    try:
        meta = ResultRecordMetadata.load_bytes(record.read_bytes())
    except Exception:
        return "unreadable"
    stored = Path(meta.storage_key or "")
    results = (paths.prefect_results / "results").resolve()
    ok = stored.is_absolute() and stored.resolve().is_relative_to(results) and stored.exists()
    return "readable" if ok else "unreadable"


