"""Run one stage and record what it returned: the logic every door shares.

The CLI (``tspipe stage``, which ``dvc.yaml`` calls) and the Prefect flows both end here,
so that a stage run through any door leaves the same MLflow run and catalog rows.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from tspipe.config import Params
from tspipe.doors.recording import record
from tspipe.doors.run_lock import holding
from tspipe.paths import RunPaths
from tspipe.reporting import MultiReporter, Reporter
from tspipe.stages import STAGES, PartialRun, bind
from tspipe.tracking import (
    TAG_KIND,
    TAG_PARAMS_HASH,
    TAG_STAGE,
    TAG_VARIANT,
    MlflowReporter,
    TrackedRun,
    Tracker,
    make_tracker,
    numbers_hash,
)


@dataclass(frozen=True)
class StageOutcome:
    stage: str
    result: Any
    mlflow_run_id: str | None
    cached: bool = False


@contextlib.contextmanager
def stage_run(tracker: Tracker | None, name: str, params: Params, *,
              parent_id: str | None = None, tags: Mapping[str, str] | None = None
              ) -> Iterator[TrackedRun]:
    """The (nested) MLflow run of one stage run (``name``: ``NAME`` or ``NAME@VARIANT``,
    ``params`` bound to it by :func:`tspipe.stages.bind`), or a no-op handle when
    tracking is off."""
    if tracker is None:
        yield TrackedRun(None, None)
        return
    stage_name, _, variant = name.partition("@")
    stage = STAGES[stage_name]
    run_params = {s: getattr(params, s).model_dump(mode="json") for s in stage.sections}
    all_tags = {**tracker.base_tags(params), **tracker.dvc_tag(name), TAG_KIND: "stage",
                # a stage run's params hash: the sections it reads, no others
                TAG_PARAMS_HASH: numbers_hash(params, stage.sections),
                TAG_STAGE: stage_name, **({TAG_VARIANT: variant} if variant else {}),
                **(tags or {})}
    with tracker.run(name, params=run_params, tags=all_tags, parent_id=parent_id) as run:
        yield run


@contextlib.contextmanager
def pipeline_run(tracker: Tracker | None, params: Params,
                 tags: Mapping[str, str] | None = None) -> Iterator[TrackedRun]:
    """The parent MLflow run of a pipeline run (all params), or a no-op handle."""
    if tracker is None:
        yield TrackedRun(None, None)
        return
    all_tags = {**tracker.base_tags(params), TAG_KIND: "pipeline", **(tags or {})}
    with tracker.run("pipeline", params=params.model_dump(mode="json"), tags=all_tags) as run:
        yield run


def record_outcome(name: str, result: Any, run: TrackedRun, params: Params, paths: RunPaths,
                   *, cached: bool = False) -> None:
    """Log the stage's result to its MLflow run and register it in the catalog
    (``params`` and ``paths`` bound to the stage run ``name``)."""
    stage = STAGES[name.partition("@")[0]]
    run.log_metrics(result.metrics())
    run.log_dict(result.to_dict(), f"{stage.name}_result.json")
    run.set_tags({"tspipe.cached": str(cached).lower(), **getattr(result, "tags", dict)()})
    for path in getattr(result, "artifacts", list)():
        run.log_artifact(path)
    variant = name.partition("@")[2] or stage.name  # "base" has no variant: itself
    for model, path, tags in getattr(result, "registered_models", list)():
        run.register_model(
            model, path, {**tags, "variant": variant, "stage": name}, alias=variant,
            description=f"{name}: {tags.get('mode', '?')} fine-tune of "
                        f"{tags.get('encoder', '?')} on {tags.get('dataset', '?')} (epoch "
                        f"{tags.get('exported_epoch', '?')}, sha256 "
                        f"{tags.get('sha256', '?')[:12]})")
    if stage.name == "compare":
        mark_best_encoder(run, result)
    if isinstance(result, PartialRun):
        return  # other shards still to run: the run that finalizes records it
    record(stage.record_as or stage.name, result, params, paths, mlflow_run_id=run.run_id)


# The comparison's ranking: G-TAD's average mAP, then BMN's AUC for variants without it.
_RANKING = (("gtad", "average_map"), ("bmn", "auc"))


def mark_best_encoder(run: TrackedRun, result: Any) -> str | None:
    """Point the registry alias ``best`` at the encoder of the variant whose features
    scored best in the comparison; the variant, or None (no scores, or no encoder of it
    registered, e.g. an untrained variant)."""
    from tspipe.stages.pretrain import REGISTERED_MODEL

    if not (run.tracker and run.run_id):
        return None
    for method, key in _RANKING:
        scored = [(r[key], r["variant"]) for r in result.rows
                  if r.get("method") == method and r.get(key) is not None]
        if scored:
            break
    else:
        return None
    best = max(scored)[1]
    client = run.tracker.client
    versions = [mv for mv in client.search_model_versions(f"name = '{REGISTERED_MODEL}'")
                if mv.tags.get("variant") == best]
    if not versions:
        return None
    client.set_registered_model_alias(REGISTERED_MODEL, "best",
                                      max(versions, key=lambda mv: int(mv.version)).version)
    run.set_tags({"tspipe.best_variant": best})
    return best


def run_stage(name: str, params: Params, paths: RunPaths, reporter: Reporter, *,
              track: bool = True, parent_id: str | None = None,
              tags: Mapping[str, str] | None = None,
              shard: tuple[int, int] | None = None) -> StageOutcome:
    """Run stage ``name`` (``NAME`` or ``NAME@VARIANT``) now (no cache), log it to
    MLflow and record it in the catalog. ``shard=(i, n)``: only shard ``i`` of ``n`` (see
    :meth:`Batching.run_all`)."""
    with holding(paths, shared=shard is not None):
        stage, params, paths = bind(name, params, paths)
        if (result := stage.run_disabled(params, paths)) is not None:
            reporter.message(f"{name}: disabled ({result.reason}); wrote only "
                             f"{len(result.markers)} marker outputs")
            return StageOutcome(name, result, None)
        tracker = make_tracker(params, paths) if track else None
        with stage_run(tracker, name, params, parent_id=parent_id, tags=tags) as run:
            result = stage.run(params, paths, MultiReporter(reporter, MlflowReporter(run)),
                               shard)
            record_outcome(name, result, run, params, paths)
        return StageOutcome(name, result, run.run_id)
