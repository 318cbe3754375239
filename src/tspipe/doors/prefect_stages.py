"""One Prefect flow per stage: a cached task runs the stage, a retried task records it."""

from __future__ import annotations

import logging
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.runtime import flow_run
from sqlalchemy.exc import OperationalError

from tspipe.config import Params, load_params
from tspipe.doors.prefect_cache import (
    batch_cache_key,
    cache_state,
    located,
    portable,
    stage_cache_key,
    task_cache,
)
from tspipe.doors.run_lock import holding
from tspipe.doors.runner import record_outcome, stage_run
from tspipe.errors import StageError
from tspipe.paths import RunPaths
from tspipe.reporting import LoggingReporter, MultiReporter
from tspipe.stages import STAGES, Batch, Stage, bind, instances
from tspipe.tracking import TAG_FLOW_RUN, MlflowReporter, TrackedRun, make_tracker


def load(params_path: str, root: str) -> tuple[Params, RunPaths]:
    paths = RunPaths.at(root)
    return load_params(paths.resolve(params_path)), paths


def load_bound(params_path: str, root: str, name: str) -> tuple[Stage, Params, RunPaths]:
    """The stage of the stage run ``name`` (``NAME`` or ``NAME@VARIANT``) and the params
    and paths it runs with."""
    return bind(name, *load(params_path, root))


@task(name="run-batch", persist_result=True)
def run_batch_task(name: str, params_path: str, root: str, ids: list[str], batch_key: str,
                   mlflow_run_id: str | None, cache_key: str) -> int:
    """One batch of a many-video stage; what it writes is its result, so it returns a count.
    ``cache_key``: its key in Prefect's cache (:func:`batch_cache_key`)."""
    stage, params, paths = load_bound(params_path, root, name)
    reporter = _reporter(params, paths, mlflow_run_id)
    batching = stage.batching
    assert batching is not None
    batching.run_batch(params, paths, Batch(tuple(ids), batch_key), reporter)
    return len(ids)


@task(name="finalize-stage")
def finalize_task(name: str, params_path: str, root: str, mlflow_run_id: str | None) -> Any:
    stage, params, paths = load_bound(params_path, root, name)
    batching = stage.batching
    assert batching is not None
    return batching.finalize(params, paths, _reporter(params, paths, mlflow_run_id))


def _reporter(params: Params, paths: RunPaths, mlflow_run_id: str | None) -> MultiReporter:
    return MultiReporter(LoggingReporter(get_run_logger()),  # type: ignore[arg-type]
                         MlflowReporter(TrackedRun(make_tracker(params, paths), mlflow_run_id)))


@task(name="run-stage", persist_result=True)
def run_stage_task(name: str, params_path: str, root: str, mlflow_run_id: str | None,
                   cache_key: str) -> Any:
    """Runs the stage function; its (pickled) result is the cached value, under
    ``cache_key`` (:func:`stage_cache_key`), with paths relative to the run directory
    (:func:`portable`: a copied run directory is served its own files)."""
    stage, params, paths = load_bound(params_path, root, name)
    return portable(stage.run(params, paths, _reporter(params, paths, mlflow_run_id)), paths)


def _transient(task: Any, task_run: Any, state: Any) -> bool:
    """Retry only what can pass by itself: a database that is busy or briefly away."""
    try:
        state.result()
    except (OperationalError, ConnectionError, TimeoutError):
        return True
    except Exception:
        return False
    return False


@task(name="record-stage", retries=2, retry_delay_seconds=2, retry_condition_fn=_transient)
def record_task(name: str, result: Any, params_path: str, root: str,
                mlflow_run_id: str | None, cached: bool) -> None:
    _, params, paths = load_bound(params_path, root, name)
    run = TrackedRun(make_tracker(params, paths), mlflow_run_id)
    record_outcome(name, result, run, params, paths, cached=cached)


def _markdown(name: str, result: Any, cached: bool) -> str:
    if hasattr(result, "summary_markdown"):  # a stage whose result is a table
        return f"### Stage `{name}`\n\n{result.summary_markdown()}"
    rows = [f"| {k} | {v} |" for k, v in result.to_dict().items()
            if not isinstance(v, dict | list)]
    rows += [f"| {k} | {v} |" for k, v in result.metrics().items() if k.startswith("videos_")]
    state = "cached (inputs unchanged)" if cached else "ran"
    return "\n".join([f"### Stage `{name}`: {state}", "", "| field | value |", "|---|---|",
                      *rows])


def ray_task_runner(address: str | None) -> Any:
    """prefect-ray's task runner: a local Ray instance, or the cluster at ``address``."""
    try:
        from prefect_ray import RayTaskRunner
    except ImportError:
        raise StageError("runner: ray needs the ray extra: pip install 'tspipe[ray]'") from None
    import os

    # Ray's own usage reporting is off unless the user turned it on.
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    return RayTaskRunner(address=address, init_kwargs={"include_dashboard": False}
                         if address is None else {})


@flow(name="tspipe-shards-on-ray")
def ray_batches_flow(name: str, params_path: str, root: str,
                     calls: list[tuple[list[str], str, bool, str]],
                     mlflow_run_id: str | None) -> list[bool]:
    """One task per shard, submitted to Ray at once; each asks Ray for the GPUs
    (``ray_gpus_per_shard``, when the cluster has any) and CPUs of one shard. Returns, per
    shard, whether it was served from the cache."""
    import ray
    from prefect_ray.context import remote_options

    stage, params, paths = load_bound(params_path, root, name)
    cfg = getattr(params, stage.name)
    has_gpus = ray.cluster_resources().get("GPU", 0) > 0
    resources = {"num_cpus": cfg.ray_cpus_per_shard,
                 "num_gpus": cfg.ray_gpus_per_shard if has_gpus else 0}
    futures = []
    for ids, key, refresh, cache_key in calls:
        with remote_options(**resources):
            futures.append(run_batch_task.with_options(
                refresh_cache=refresh, **task_cache(paths),
                task_run_name=f"{name}-shard-{ids[0]}").submit(
                name, params_path, root, ids, key, mlflow_run_id, cache_key))
    for future in futures:
        future.wait()
    for future in futures:
        future.result()  # raise the first failure
    return [future.state.name == "Cached" for future in futures]


def run_stage_flow(name: str, params_path: str = "params.yaml", root: str = ".",
                   parent_run_id: str | None = None) -> dict[str, Any]:
    """Body of every stage flow: MLflow run -> cached stage task -> record -> artifact."""
    root = str(RunPaths.at(root).root)  # absolute: tasks may run in other processes (Ray)
    params_path = str(RunPaths.at(root).resolve(params_path))
    with holding(RunPaths.at(root)):
        return _run_stage_flow(name, params_path, root, parent_run_id)


def _run_stage_flow(name: str, params_path: str, root: str,
                    parent_run_id: str | None) -> dict[str, Any]:
    stage, params, paths = load_bound(params_path, root, name)
    if (result := stage.run_disabled(params, paths)) is not None:
        return {"stage": name, "cached": False, "mlflow_run_id": None,
                "metrics": result.metrics(), "summary": f"disabled ({result.reason})"}
    present = stage.outputs_present(params, paths)
    if stage.batching is None:
        cache_key = stage_cache_key(name, stage, params, paths)
        state = cache_state(cache_key, paths)
        refresh = not present or state == "unreadable"
        hit = not refresh and state == "readable"
    else:
        calls, hits = [], []
        for b, done in stage.batching.plan(params, paths):
            key = batch_cache_key(name, stage, params, b)
            state = cache_state(key, paths)
            calls.append((list(b.ids), b.key, not done or state == "unreadable", key))
            hits.append(done and state == "readable")
        # No batch at all (a disabled flow stage): nothing to compute; "cached" when its
        # outputs are already there.
        hit = all(hits) if calls else present
    # A stage served whole from the cache gets no MLflow run: its earlier run keeps the
    # links, and a nightly run that finds nothing new adds no stage runs.
    tracker = None if hit else make_tracker(params, paths)
    tags = {TAG_FLOW_RUN: str(flow_run.id)} if flow_run.id else {}
    with stage_run(tracker, name, params, parent_id=parent_run_id, tags=tags) as run:
        if stage.batching is None:
            st = run_stage_task.with_options(refresh_cache=refresh, **task_cache(paths))(
                name, params_path, root, run.run_id, cache_key, return_state=True)
            result = located(st.result(), paths)
            cached = st.name == "Cached"
        else:
            cfg = getattr(params, stage.name, None)
            if getattr(cfg, "runner", "local") == "ray":
                cached_flags = ray_batches_flow.with_options(
                    task_runner=ray_task_runner(cfg.ray_address))(
                    name, params_path, root, calls, run.run_id)
            else:
                cached_flags = []
                for ids, key, refresh, cache_key in calls:
                    st = run_batch_task.with_options(
                        refresh_cache=refresh, **task_cache(paths),
                        task_run_name=f"{name}-batch-{ids[0]}")(
                        name, params_path, root, ids, key, run.run_id, cache_key,
                        return_state=True)
                    st.result()  # raise the first failure
                    cached_flags.append(st.name == "Cached")
            result = finalize_task(name, params_path, root, run.run_id)
            cached = all(cached_flags) if cached_flags else present
        if hit and not cached:
            logging.getLogger(__name__).warning(
                "stage %s: expected from the cache but ran; its metrics have no MLflow run",
                name)
        record_task(name, result, params_path, root, run.run_id, cached)
    create_markdown_artifact(_markdown(name, result, cached), key=artifact_key(name),
                             description=f"tspipe stage {name}")
    logging.getLogger(__name__).info("stage %s: %s", name, "cached" if cached else "ran")
    return {"stage": name, "cached": cached, "mlflow_run_id": run.run_id,
            "metrics": result.metrics(), "summary": _one_line(result)}


def artifact_key(name: str) -> str:
    """Prefect's artifact keys allow lowercase letters, digits and dashes only."""
    import re

    return "tspipe-" + re.sub(r"[^a-z0-9-]", "-", name.lower())


def _one_line(result: Any) -> str:
    """Six metrics of the stage's own (a baseline's scores, ``uniform.*``, are not it)."""
    own = [(k, v) for k, v in result.metrics().items() if not k.startswith("uniform.")]
    return ", ".join(f"{k}={v:g}" for k, v in own[:6])


def _make_flow(name: str):
    def stage_flow(params_path: str = "params.yaml", root: str = ".",
                   parent_run_id: str | None = None, variant: str | None = None
                   ) -> dict[str, Any]:
        if not STAGES[name].per_variant:
            if variant is not None:
                raise StageError(f"stage {name} has no variants (got variant={variant!r})")
            return run_stage_flow(name, params_path, root, parent_run_id)
        if variant is not None:
            return run_stage_flow(f"{name}@{variant}", params_path, root, parent_run_id)
        # No variant named: every enabled variant in turn.
        params, _ = load(params_path, root)
        rows = [run_stage_flow(inst, params_path, root, parent_run_id)
                for inst in instances(params, (name,))]
        return {"stage": name, "runs": rows, "cached": all(r["cached"] for r in rows),
                "summary": "; ".join(f"{r['stage']}: {r['summary']}" for r in rows)}

    stage_flow.__doc__ = STAGES[name].help + (
        " Once per compare.variants entry (variant=None: all of them)."
        if STAGES[name].per_variant else "")
    return flow(name=f"tspipe-{name}", log_prints=False,
                flow_run_name=_run_name(name))(stage_flow)


def _run_name(name: str):
    """The flow run's name in the Prefect UI: ``extract@tsp``, not a random word pair."""
    def run_name() -> str:
        variant = (flow_run.parameters or {}).get("variant")
        return f"{name}@{variant}" if variant else name
    return run_name


STAGE_FLOWS = {name: _make_flow(name) for name in STAGES}
