"""Prefect's cache for tspipe's stage tasks: the keys (content hashes of what decides a
stage's output), where results are kept (the run directory), and whether a cached result
can be read here.

The flow computes each key once (hashing a stage's inputs reads them whole) and hands it
to the task as its ``cache_key`` argument; the task's policy only reads it back.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefect.cache_policies import CachePolicy
from prefect.context import TaskRunContext

from tspipe.config import Params
from tspipe.io import atomic_write_bytes
from tspipe.paths import RunPaths
from tspipe.stages import Batch, Stage

log = logging.getLogger(__name__)


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
    refresh its cache (recompute) instead of failing to read it.

    A record of a run directory since copied or moved here names its result by the old
    absolute path (Prefect stores the path it wrote): when this run directory holds that
    result file, the record is rewritten to name it here (see :func:`relocate_record`)."""
    from prefect.results import ResultRecordMetadata

    record = paths.prefect_results / key
    if not record.exists():
        return "none"
    try:
        meta = ResultRecordMetadata.load_bytes(record.read_bytes())
    except Exception:
        return "unreadable"
    results = (paths.prefect_results / "results").resolve()
    stored = Path(meta.storage_key or "")
    if stored.is_absolute() and not stored.resolve().is_relative_to(results):
        stored = relocate_record(record, meta, paths) or stored
    ok = stored.is_absolute() and stored.resolve().is_relative_to(results) and stored.exists()
    return "readable" if ok else "unreadable"


def relocate_record(record: Path, meta: Any, paths: RunPaths) -> Path | None:
    """Point ``record`` (its metadata ``meta``) at its result in this run directory when
    its storage key is that file's path under another run directory root (the same
    ``.tspipe/prefect-results/results/NAME`` tail, another prefix); the new path, or None
    (a result of another Prefect home or run directory's layout: left as it is)."""
    results = paths.prefect_results / "results"
    stored = Path(meta.storage_key)
    tail = results.relative_to(paths.root).parts
    here = results / stored.name
    if stored.parent.parts[-len(tail):] != tail or not here.is_file():
        return None
    old_root = Path(*stored.parent.parts[:-len(tail)])
    log.info("prefect cache: %s names its result under %s (the run directory it was "
             "written in); rewritten to %s", record.name, old_root, here)
    meta.storage_key = str(here)
    atomic_write_bytes(record, meta.dump_bytes())
    return here


# Results of cached tasks hold the paths the stage returned. Pickled as they are, a run
# directory copied elsewhere would be served paths into the old one: files inside the run
# directory are cached relative to it and made absolute again when read (here or there).

def portable(result: Any, paths: RunPaths) -> Any:
    """``result`` with every ``Path`` inside the run directory made relative to its root."""
    return _map_paths(result, lambda p: Path(paths.relative(p)) if p.is_absolute() else p)


def located(result: Any, paths: RunPaths) -> Any:
    """``result`` (from :func:`portable`) with every relative ``Path`` under the run
    directory."""
    return _map_paths(result, lambda p: p if p.is_absolute() else paths.root / p)


def _map_paths(value: Any, fn: Callable[[Path], Path]) -> Any:
    """``value`` with ``fn`` applied to every ``Path`` in it: dataclass fields, dict values,
    list and tuple items, recursively; anything else as it is."""
    if isinstance(value, Path):
        return fn(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        changes = {f.name: _map_paths(getattr(value, f.name), fn)
                   for f in dataclasses.fields(value) if f.init}
        return dataclasses.replace(value, **changes)
    if isinstance(value, dict):
        return {k: _map_paths(v, fn) for k, v in value.items()}
    if isinstance(value, list | tuple) and not hasattr(value, "_fields"):
        return type(value)(_map_paths(v, fn) for v in value)
    return value
