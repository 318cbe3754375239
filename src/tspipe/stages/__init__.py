"""The stages, one module each, in pipeline order; this file only collects them.

Each stage module declares its ``STAGE`` (:class:`~tspipe.stages.contract.Stage`: the
params sections it reads, its inputs, its outputs, the one list of code modules that
versions it) beside its ``run`` (or its ``batches``/``run_batch``/``finalize`` when it
works in shards of videos). Doors read :data:`STAGES`; stages never import a door.

- :mod:`.synth` SynthActions (demo data) · :mod:`.ingest` annotations ·
  :mod:`.download` videos · :mod:`.decode` probe/standardize/clip tables ·
  :mod:`.flow` optical flow · :mod:`.base` the demo's Kinetics stand-in ·
  :mod:`.gvf` global video features · :mod:`.pretrain` TSP/TAC fine-tuning ·
  :mod:`.extract` clip features · :mod:`.evaluate` BMN/G-TAD · :mod:`.compare` the table.
- Shared: :mod:`.contract` (the Stage contract, batches, code versions),
  :mod:`.decoded` (the videos decode made ready), :mod:`.encoder_runs` (what gvf and
  extract share: the encoder, the version, the shards).

Adding a stage: a module here with its ``STAGE``, one line below, one stage in
``dvc.yaml`` (tests check that its params, deps and outs agree), and, if it makes catalog
rows, one recorder in :mod:`tspipe.doors.recording`.
"""

from __future__ import annotations

from tspipe.config import Params
from tspipe.errors import StageError
from tspipe.paths import RunPaths
from tspipe.stages import (
    base,
    compare,
    decode,
    download,
    evaluate,
    extract,
    flow,
    gvf,
    ingest,
    pretrain,
    synth,
)
from tspipe.stages.contract import Batch, Batching, PartialRun, Stage, StageResult, tree_hash

STAGES: dict[str, Stage] = {s.STAGE.name: s.STAGE for s in (
    synth, ingest, download, decode, flow, base, gvf, pretrain, extract, evaluate, compare)}
PIPELINE: tuple[str, ...] = tuple(STAGES)


def bind(instance: str, params: Params, paths: RunPaths) -> tuple[Stage, Params, RunPaths]:
    """The stage of ``instance`` (``NAME`` or ``NAME@VARIANT``) with the params and paths
    it runs with: a variant's overrides and folders, or the stage's own scope."""
    name, at, variant = instance.partition("@")
    stage = STAGES.get(name)
    if stage is None:
        raise StageError(f"unknown stage {name!r}; stages: {', '.join(STAGES)}")
    if stage.per_variant:
        if not at:
            raise StageError(f"stage {name} runs once per variant: name one, e.g. "
                             f"{name}@{next(iter(params.compare.variants))} (variants: "
                             f"{', '.join(params.compare.runs())})")
        if variant not in params.compare.runs():
            raise StageError(f"{instance}: no variant {variant!r} in compare.variants "
                             f"({', '.join(params.compare.runs())})")
        return stage, params.for_variant(variant), paths.for_variant(variant)
    if at:
        raise StageError(f"{instance}: stage {name} has no variants")
    if stage.scope is not None:
        params, paths = stage.scope(params, paths)
    return stage, params, paths


def instances(params: Params, names: tuple[str, ...] = PIPELINE, *,
              disabled: bool = False) -> list[str]:
    """The stage runs of ``names`` that ``params`` enables, in pipeline order; a
    per-variant stage once per variant and seed (``pretrain@tsp``, ``pretrain@tac``,
    ``pretrain@tsp-seed1`` with ``compare.seeds``).
    ``disabled=True``: instead, those it disables that write markers for DVC
    (:attr:`Stage.disabled`)."""
    out = []
    for name in names:
        stage = STAGES[name]
        for inst in ([f"{name}@{v}" for v in params.compare.runs()] if stage.per_variant
                     else [name]):
            _, p, _ = bind(inst, params, RunPaths.at("."))
            if (not stage.enabled(p) and stage.disabled is not None) if disabled \
                    else stage.enabled(p):
                out.append(inst)
    return out

__all__ = ["PIPELINE", "STAGES", "Batch", "Batching", "PartialRun", "Stage", "StageResult",
           "bind", "instances", "tree_hash"]
