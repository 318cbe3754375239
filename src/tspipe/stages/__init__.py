"""The stage registry: one entry per stage, in pipeline order. Doors read it; stages don't.

Adding a stage means: a function in ``tspipe.stages.<name>`` (or ``tspipe.<area>``), one
entry here, one stage in ``dvc.yaml`` (a test checks they agree), and, if it makes
catalog rows, one recorder in ``tspipe.doors.recording``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tspipe.config import Params
from tspipe.errors import StageError
from tspipe.paths import RunPaths
from tspipe.reporting import Reporter
from tspipe.stages.contract import Batch, Batching, PartialRun, Stage, StageResult, tree_hash


def _run_synth(params: Params, paths: RunPaths, reporter: Reporter) -> StageResult:
    from tspipe.data.synth import generate

    return generate(params.synth, paths.resolve(params.synth.out_dir), reporter=reporter)


def _run_ingest(params: Params, paths: RunPaths, reporter: Reporter) -> StageResult:
    from tspipe.stages.ingest import ingest

    return ingest(params.dataset, paths, reporter)


def _ingest_inputs(params: Params, paths: RunPaths) -> list[Path]:
    files = [paths.resolve(params.dataset.annotations)]
    files += [paths.resolve(p) for p in (params.dataset.label_map, params.dataset.metadata) if p]
    return files


STAGES: dict[str, Stage] = {
    "synth": Stage(
        name="synth",
        help="Generate the SynthActions videos and their ActivityNet JSON.",
        sections=("synth",),
        run_whole=_run_synth,
        inputs=lambda params, paths: [],
        outputs=lambda params, paths: [paths.resolve(params.synth.out_dir)],
        code=("tspipe.data.synth", "tspipe.data.synth_render", "tspipe.data.synth_corpus"),
        enabled=lambda params: params.synth.enabled,
    ),
    "ingest": Stage(
        name="ingest",
        help="Read and validate the dataset's annotations; write them normalized.",
        sections=("dataset",),
        run_whole=_run_ingest,
        inputs=_ingest_inputs,
        outputs=lambda params, paths: [paths.annotations, paths.annotation_report,
                                       paths.metrics("ingest"),
                                       paths.plot("ingest", "segments_per_class")],
        code=("tspipe.stages.ingest", "tspipe.data.annotations.activitynet",
              "tspipe.data.annotations.thumos", "tspipe.data.annotations.tsp_csv",
              "tspipe.data.annotations.load"),
    ),
}

def _lazy(module: str, attr: str) -> Callable[..., Any]:
    """A stage function imported on first call: listing stages stays cheap."""

    def call(*args: Any) -> Any:
        return getattr(importlib.import_module(module), attr)(*args)

    call.__name__ = attr
    return call


def _batching(module: str) -> Batching:
    return Batching(*(_lazy(module, f) for f in ("batches", "run_batch", "batch_done",
                                                   "finalize")))


STAGES["download"] = Stage(
    name="download",
    help="Fetch every annotated video once (mirror, HTTP, yt-dlp, s3/gs, local); manifest.",
    sections=("download",),
    inputs=lambda params, paths: [paths.annotations],
    outputs=lambda params, paths: [paths.videos, paths.manifest, paths.metrics("download")],
    code=("tspipe.stages.download", "tspipe.data.download", "tspipe.data.download_sources"),
    batching=_batching("tspipe.stages.download"),
)

STAGES["decode"] = Stage(
    name="decode",
    help="Probe, standardize to constant fps, and index into TSP and sliding-window tables.",
    sections=("decode", "clip"),
    inputs=lambda params, paths: [paths.annotations, paths.manifest],
    outputs=lambda params, paths: [paths.decode_report, paths.groundtruth_table,
                                   paths.windows_table, paths.metrics("decode")],
    code=("tspipe.stages.decode", "tspipe.data.clips", "tspipe.data.clip_sampler",
          *(f"tspipe.data.video.{m}" for m in (
              "probe", "standardize", "decode", "timeline", "backends", "backend_pyav",
              "backend_libs", "header", "reader", "encode"))),
    batching=_batching("tspipe.stages.decode"),
)

STAGES["flow"] = Stage(
    name="flow",
    help="Optical flow (TV-L1 or Farneback) of every decoded video, for I3D's flow stream.",
    sections=("flow", "clip"),
    extra_params=("decode.backend",),
    inputs=lambda params, paths: [paths.decode_report],
    outputs=lambda params, paths: [paths.flow_root, paths.metrics("flow")],
    code=("tspipe.stages.flow", "tspipe.data.flow"),
    batching=_batching("tspipe.stages.flow"),
)

_ENCODER_RUN_CODE = ("tspipe.stages.encoder_runs", "tspipe.extract.cli", "tspipe.extract.loader",
                     "tspipe.extract.preprocess", "tspipe.extract.runner",
                     "tspipe.extract.writers", "tspipe.data.clip_sampler",
                     "tspipe.models.checkpoints")


def _encoder_inputs(stage: str) -> Callable[[Params, RunPaths], list[Path]]:
    def inputs(params: Params, paths: RunPaths) -> list[Path]:
        cfg = getattr(params, stage)
        files = [paths.decode_report]
        from tspipe.models.registry import ENCODERS

        if getattr(ENCODERS.get(cfg.encoder), "stream", "rgb") == "flow":
            files.append(paths.flow_report)
        if cfg.checkpoint:
            files.append(paths.resolve(cfg.checkpoint))
        elif stage == "extract":
            from tspipe.stages.encoder_runs import pretrained_weights

            files += [p for p in (pretrained_weights(params, paths),) if p is not None]
        elif params.pretrain.init_checkpoint:
            files.append(paths.resolve(params.pretrain.init_checkpoint))
        return files

    return inputs


def _pretrain_inputs(params: Params, paths: RunPaths) -> list[Path]:
    from tspipe.stages.pretrain import _inputs, corpus_file

    corpus = corpus_file(params, paths)
    data = ([paths.groundtruth_table, paths.decode_report, paths.annotations]
            if corpus is None else [corpus])
    return [*data, *(p for p in _inputs(params, paths) if p is not None)]


def _pretrain_outputs(params: Params, paths: RunPaths) -> list[Path]:
    return [paths.model_dir("pretrain"), paths.metrics("pretrain"),
            paths.plot("pretrain", "epochs"), paths.plot("pretrain", "steps")]


def _pretrain_disabled(reason: str) -> Callable[[RunPaths], Any]:
    def write(paths: RunPaths) -> Any:
        from tspipe.stages.pretrain import disabled

        return disabled(paths, reason=reason)
    return write


_PRETRAIN_CODE = ("tspipe.stages.pretrain", *(f"tspipe.pretrain.{m}" for m in (
    "train", "samples", "dataset", "loss", "optim", "model", "metrics", "state",
    "distributed", "report")), "tspipe.extract.preprocess", "tspipe.data.clip_sampler",
                  "tspipe.models.checkpoints")

STAGES["base"] = Stage(
    name="base",
    help="From-scratch pretraining in Kinetics' role (demo): GVF and fine-tunes start from it.",
    sections=("base", "pretrain", "clip"),
    run_whole=_lazy("tspipe.stages.pretrain", "run"),
    inputs=_pretrain_inputs,
    outputs=_pretrain_outputs,
    code=_PRETRAIN_CODE,
    enabled=lambda params: params.base.enabled,
    disabled=_pretrain_disabled("base.enabled: false"),
    scope=lambda params, paths: (params.for_base(), paths.for_variant("base")),
    record_as="pretrain",
)

STAGES["gvf"] = Stage(
    name="gvf",
    help="Global video features (encoder clip features pooled per video) for TSP training.",
    sections=("gvf", "clip"),
    extra_params=("pretrain.init_checkpoint",),
    inputs=_encoder_inputs("gvf"),
    outputs=lambda params, paths: [paths.gvf_file, paths.metrics("gvf")],
    code=("tspipe.stages.gvf", "tspipe.extract.gvf", *_ENCODER_RUN_CODE),
    batching=_batching("tspipe.stages.gvf"),
    enabled=lambda params: params.gvf.enabled,
)

STAGES["pretrain"] = Stage(
    name="pretrain",
    help="TSP (or TAC) fine-tuning of the encoder on the segments; extraction's weights.",
    sections=("pretrain", "clip"),
    run_whole=_lazy("tspipe.stages.pretrain", "run"),
    inputs=_pretrain_inputs,
    outputs=_pretrain_outputs,
    code=_PRETRAIN_CODE,
    enabled=lambda params: params.pretrain.enabled,
    disabled=_pretrain_disabled("pretrain.enabled: false"),
    per_variant=True,
)

STAGES["extract"] = Stage(
    name="extract",
    help="Clip features of every decoded video: versioned HDF5 shards, exports, catalog.",
    sections=("extract", "clip"),
    inputs=_encoder_inputs("extract"),
    outputs=lambda params, paths: [paths.features_current, paths.metrics("extract")],
    code=("tspipe.stages.extract", "tspipe.extract.export", *_ENCODER_RUN_CODE),
    batching=_batching("tspipe.stages.extract"),
    per_variant=True,
)

STAGES["evaluate"] = Stage(
    name="evaluate",
    help="Train BMN / G-TAD on the current feature version; score their proposals.",
    sections=("localize",),
    run_whole=_lazy("tspipe.stages.evaluate", "run"),
    inputs=lambda params, paths: [paths.features_current, paths.annotations],
    outputs=lambda params, paths: [paths.metrics("localize"),
                                   *(paths.plot("evaluate", n)
                                     for n in ("ar_an", "map_tiou", "losses"))],
    code=("tspipe.stages.evaluate", "tspipe.localize.train", "tspipe.localize.bmn",
          "tspipe.localize.gtad", "tspipe.localize.targets", "tspipe.localize.losses",
          "tspipe.localize.features", "tspipe.localize.postprocess",
          "tspipe.localize.outputs", "tspipe.localize.metrics", "tspipe.localize.plots",
          "tspipe.localize.classifier"),
    per_variant=True,
)


STAGES["compare"] = Stage(
    name="compare",
    help="One table of every variant's localization metrics (AUC, AR@100, mAP).",
    sections=("compare", "localize"),
    run_whole=_lazy("tspipe.stages.compare", "run"),
    inputs=lambda params, paths: [
        f for v in params.compare.variants for f in (
            paths.for_variant(v).metrics("localize"), paths.for_variant(v).features_current)],
    outputs=lambda params, paths: [paths.metrics("compare"), paths.plot("compare", "table"),
                                   paths.reports_dir / "compare.md"],
    code=("tspipe.stages.compare",),
)

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
                             f"{', '.join(params.compare.variants)})")
        if variant not in params.compare.variants:
            raise StageError(f"{instance}: no variant {variant!r} in compare.variants "
                             f"({', '.join(params.compare.variants)})")
        return stage, params.for_variant(variant), paths.for_variant(variant)
    if at:
        raise StageError(f"{instance}: stage {name} has no variants")
    if stage.scope is not None:
        params, paths = stage.scope(params, paths)
    return stage, params, paths


def instances(params: Params, names: tuple[str, ...] = PIPELINE) -> list[str]:
    """The stage runs of ``names`` that ``params`` enables, in pipeline order; a
    per-variant stage once per variant (``pretrain@tsp``, ``pretrain@tac``)."""
    out = []
    for name in names:
        stage = STAGES[name]
        for inst in ([f"{name}@{v}" for v in params.compare.variants] if stage.per_variant
                     else [name]):
            _, p, _ = bind(inst, params, RunPaths.at("."))
            if stage.enabled(p):
                out.append(inst)
    return out

__all__ = ["PIPELINE", "STAGES", "Batch", "Batching", "PartialRun", "Stage", "StageResult",
           "bind", "instances", "tree_hash"]
