"""Where a pipeline run's wall time goes, per stage and per door (``benchmarks/scale.py``).

:class:`Clock` charges every second of the main thread to exactly one (stage, bucket):
the stage flow that is running (or ``pipeline`` between them) and the innermost of

- ``stage``: the stage's own code (``run_batch``, ``finalize``, ``run_whole``);
- ``plan``: deciding what to run (``batches``/``batch_done``/``status``, cache keys);
- ``params``: loading params.yaml (each task loads it again);
- ``catalog``: recording in the SQL catalog (``tspipe.doors.runner.record``);
- ``mlflow``: every ``MlflowClient`` call and making a ``Tracker`` (with its tags);
- ``dvc``: the pipeline's ``dvc commit`` and the md5 it records;
- ``prefect``: the rest: task and subflow runs, states, artifacts, locks, logging.

Wrappers are set on the modules' and classes' attributes for the benchmark process only
(nothing in the package changes). Peak RSS per stage comes from a sampling thread
(psutil, every 20 ms); Prefect flow and task runs are counted through Prefect's client.
"""

from __future__ import annotations

import functools
import inspect
import threading
import time
from collections import defaultdict
from typing import Any

import psutil

BUCKETS = ("stage", "plan", "params", "catalog", "mlflow", "dvc", "prefect")


class Clock:
    def __init__(self) -> None:
        self.stage = "pipeline"
        self.stack: list[str] = ["prefect"]
        self.last = time.perf_counter()
        self.totals: dict[tuple[str, str], float] = defaultdict(float)
        self.peak: dict[str, int] = defaultdict(int)
        self.main = threading.main_thread()

    def _charge(self) -> None:
        now = time.perf_counter()
        self.totals[(self.stage, self.stack[-1])] += now - self.last
        self.last = now

    def enter(self, bucket: str, stage: str | None = None) -> tuple[str, str] | None:
        if threading.current_thread() is not self.main:
            return None
        self._charge()
        saved = (self.stage, bucket)
        if stage is not None:
            self.stage = stage
        self.stack.append(bucket)
        return saved

    def exit(self, saved: tuple[str, str] | None, stage: str | None = None) -> None:
        if saved is None:
            return
        self._charge()
        self.stack.pop()
        if stage is not None:
            self.stage = saved[0]

    def reset(self) -> None:
        self.totals.clear()
        self.peak.clear()
        self.stage, self.stack, self.last = "pipeline", ["prefect"], time.perf_counter()

    def finish(self) -> None:
        self._charge()


CLOCK = Clock()


def _timed(fn: Any, bucket: str) -> Any:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        saved = CLOCK.enter(bucket)
        try:
            return fn(*args, **kwargs)
        finally:
            CLOCK.exit(saved)
    wrapper.__scale_wrapped__ = True  # type: ignore[attr-defined]
    return wrapper


def _wrap(owner: Any, name: str, bucket: str) -> None:
    if isinstance(owner, type):  # a class: plain methods only (not static/class/property)
        if not inspect.isfunction(inspect.getattr_static(owner, name)):
            return
        setattr(owner, name, _timed(getattr(owner, name), bucket))
        return
    fn = getattr(owner, name)
    if fn is None or getattr(fn, "__scale_wrapped__", False):
        return
    object.__setattr__(owner, name, _timed(fn, bucket))  # a frozen dataclass too


def install() -> None:
    """Put the timers in place (once per process)."""
    from mlflow import MlflowClient

    from tspipe import tracking
    from tspipe.doors import prefect_pipeline, prefect_stages, runner
    from tspipe.stages import STAGES

    for stage in STAGES.values():
        if stage.batching is not None:
            for name in ("run_batch", "finalize"):
                _wrap(stage.batching, name, "stage")
            for name in ("batches", "batch_done", "status"):
                _wrap(stage.batching, name, "plan")
        if stage.run_whole is not None:
            _wrap(stage, "run_whole", "stage")
    for name in ("stage_cache_key", "batch_cache_key", "cache_state"):
        _wrap(prefect_stages, name, "plan")
    _wrap(prefect_stages, "load", "params")
    _wrap(prefect_pipeline, "load", "params")
    _wrap(runner, "record", "catalog")
    _wrap(prefect_pipeline, "open_catalog", "catalog")
    for name in dir(MlflowClient):
        if not name.startswith("_"):
            _wrap(MlflowClient, name, "mlflow")
    for name in ("__init__", "dvc_tag", "base_tags"):
        _wrap(tracking.Tracker, name, "mlflow")
    for task in (prefect_pipeline.dvc_commit, prefect_pipeline.record_dvc_md5):
        task.fn = _timed(task.fn, "dvc")
    _wrap(prefect_pipeline, "dvc_out_md5", "dvc")

    original = prefect_stages.run_stage_flow

    @functools.wraps(original)
    def stage_flow(name: str, *args: Any, **kwargs: Any) -> Any:
        saved = CLOCK.enter("prefect", stage=name)
        try:
            return original(name, *args, **kwargs)
        finally:
            CLOCK.exit(saved, stage=name)

    prefect_stages.run_stage_flow = stage_flow


class RssSampler:
    """Peak resident memory of this process per stage (``CLOCK.stage``), sampled."""

    def __init__(self, every_s: float = 0.02) -> None:
        self.every_s, self.proc = every_s, psutil.Process()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            rss = self.proc.memory_info().rss
            stage = CLOCK.stage
            if rss > CLOCK.peak[stage]:
                CLOCK.peak[stage] = rss

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def prefect_counts(since: Any) -> dict[str, Any]:
    """Flow runs and task runs started after ``since`` (a datetime): totals, and task runs
    per stage subflow (by the subflow's name: ``ingest``, ``extract@scale``...)."""
    from prefect import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterStartTime,
        TaskRunFilter,
        TaskRunFilterStartTime,
    )

    def every(read, **filters):  # Prefect's reads are paged: 200 at a time
        found, offset = [], 0
        while batch := read(limit=200, offset=offset, **filters):
            found += batch
            offset += len(batch)
        return found

    with get_client(sync_client=True) as client:
        flows = every(client.read_flow_runs, flow_run_filter=FlowRunFilter(
            start_time=FlowRunFilterStartTime(after_=since)))
        tasks = every(client.read_task_runs, task_run_filter=TaskRunFilter(
            start_time=TaskRunFilterStartTime(after_=since)))
    names = {f.id: f.name for f in flows}
    per_stage: dict[str, int] = defaultdict(int)
    for t in tasks:
        per_stage[names.get(t.flow_run_id, "?")] += 1
    return {"flow_runs": len(flows), "task_runs": len(tasks), "per_stage": dict(per_stage)}
