"""Stage ``pretrain``: TSP (or TAC) fine-tuning of the encoder that extraction then uses.

Reads the decode stage's ground-truth table and decoded videos, the ``gvf`` stage's file
(TSP with ``use_gvf``) and ``pretrain.init_checkpoint`` (else seeded random weights, the
CPU demo's stand-in for Kinetics), and trains with :func:`tspipe.pretrain.train`.
Writes, for its variant V (or ``base``), ``models/pretrain/V/`` (``checkpoint.pt``: the
encoder extraction loads by default; ``model.pt`` with its heads; ``state.pt`` to
resume), ``metrics/V/pretrain.json``, ``plots/V/pretrain_epochs.csv`` and
``plots/V/pretrain_steps.csv`` (DVC plots).

Resume: ``models/pretrain/run.json`` holds the key of the run that owns ``state.pt``
(params, the inputs' sha256, the code). A rerun with the same key continues that run
(after a kill, mid-epoch), or only re-exports a finished one; any other key starts
afresh. Multi-GPU runs go through ``torchrun -m tspipe.doors.train`` (same outputs).

The door logs the per-step loss and learning rates and the per-epoch validation
metrics to the stage's MLflow run, the encoder as an artifact and a version of the
registered model ``tspipe-encoder`` tagged with the dataset, the mode, the GVF source and
the sha256; the recorder registers the checkpoint in the catalog (origin ``pretrain``,
its parent, the dataset, the params).
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tspipe.config import Params
from tspipe.data.annotations import read_activitynet
from tspipe.data.clips import ClipSampler, build_groundtruth, write_table
from tspipe.errors import ConfigError
from tspipe.io import (
    atomic_write_json,
    atomic_write_text,
    result_dict,
    sha256_file,
    sha256_json,
)
from tspipe.paths import RunPaths
from tspipe.pretrain.report import StepLog, write_reports
from tspipe.pretrain.train import flat_metrics, train
from tspipe.provenance import code_version
from tspipe.reporting import Reporter
from tspipe.stages.contract import DisabledResult, Stage
from tspipe.stages.decoded import decoded_videos

log = logging.getLogger(__name__)

REGISTERED_MODEL = "tspipe-encoder"
# The one list of what versions a training (the run key, cache keys, DVC's deps); the base
# stage trains with the same code.
CODE = ("tspipe.stages.pretrain", "tspipe.stages.decoded", "tspipe.pretrain",
        "tspipe.extract.preprocess", "tspipe.data.clip_sampler", "tspipe.models")


@dataclass(frozen=True)
class PretrainStageResult:
    checkpoint: Path  # the encoder (backbone) extraction loads
    model: Path  # with its heads
    checkpoint_sha256: str
    encoder: str
    mode: str
    dataset: str
    gvf_source: str  # the GVF file's sha256, "none" without GVF
    init_sha256: str | None  # the parent checkpoint; None: seeded random weights
    epochs: list[dict[str, float]]
    best_epoch: int | None
    exported_epoch: int
    counts: dict[str, int]
    steps_per_epoch: int
    resumed_from: dict[str, int] | None
    figures: list[Path] = field(default_factory=list)

    def metrics(self) -> dict[str, float]:
        return flat_metrics(self)

    def tags(self) -> dict[str, str]:
        return {"tspipe.checkpoint_sha256": self.checkpoint_sha256,
                "tspipe.pretrain_mode": self.mode, "tspipe.gvf_source": self.gvf_source}

    def artifacts(self) -> list[Path]:
        return [*self.figures]

    def registered_models(self) -> list[tuple[str, Path, dict[str, str]]]:
        """(name, file, tags): a version of ``tspipe-encoder`` per training."""
        return [(REGISTERED_MODEL, self.checkpoint, {
            "dataset": self.dataset, "mode": self.mode, "encoder": self.encoder,
            "gvf_source": self.gvf_source, "sha256": self.checkpoint_sha256,
            "exported_epoch": str(self.exported_epoch)})]

    def to_dict(self) -> dict[str, Any]:
        return result_dict(self)


def _inputs(params: Params, paths: RunPaths) -> tuple[Path | None, Path | None]:
    cfg = params.pretrain
    gvf = paths.gvf_file if cfg.mode == "tsp" and cfg.use_gvf else None
    init = paths.resolve(cfg.init_checkpoint) if cfg.init_checkpoint else None
    return gvf, init


def corpus_file(params: Params, paths: RunPaths) -> Path | None:
    """``pretrain.corpus``, resolved (None: train on the pipeline's segments)."""
    return paths.resolve(params.pretrain.corpus) if params.pretrain.corpus else None


def run_key(params: Params, paths: RunPaths) -> str:
    """What decides the run's numbers: params, inputs' content, code."""
    gvf, init = _inputs(params, paths)
    corpus = corpus_file(params, paths)
    files = ({"corpus": corpus} if corpus else
             {"groundtruth": paths.groundtruth_table, "decode_report": paths.decode_report})
    files |= {"gvf": gvf, "init": init}
    return sha256_json({
        "params": {s: getattr(params, s).model_dump(mode="json") for s in ("pretrain", "clip")},
        "files": {k: sha256_file(p) if p is not None and p.exists() else None
                  for k, p in files.items()},
        "code": code_version(CODE)})


def run(params: Params, paths: RunPaths, reporter: Reporter) -> PretrainStageResult:

    cfg = params.pretrain
    out_dir = paths.model_dir("pretrain")
    gvf, init = _inputs(params, paths)
    key = run_key(params, paths)
    marker = out_dir / "run.json"
    resume = marker.exists() and json.loads(marker.read_text(encoding="utf-8")).get("key") == key
    if not resume and out_dir.exists():
        log.info("pretrain: inputs or settings changed since %s; starting afresh", out_dir)
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(marker, {"key": key})
    corpus = corpus_file(params, paths)
    if corpus is None:
        ann = read_activitynet(paths.annotations)
        groundtruth = paths.groundtruth_table
        videos = {v.video_id: v.path for v in decoded_videos(paths)}
    else:
        ann, groundtruth, videos = _corpus(corpus, params, out_dir)

    num_classes = len(ann.classes) if ann.classes else None
    steps = StepLog()

    def on_metrics(step: int, metrics: dict[str, float]) -> None:
        steps(step, metrics)
        for k, v in metrics.items():
            reporter.metric(k, v, step)

    result = train(cfg, params.clip, groundtruth=groundtruth, videos=videos, out_dir=out_dir,
                   gvf=gvf, init_checkpoint=init,
                   num_classes=num_classes,
                   resume=resume, on_metrics=on_metrics, reporter=reporter)
    epochs_csv, steps_csv = paths.plot("pretrain", "epochs"), paths.plot("pretrain", "steps")
    write_reports(result, paths.metrics("pretrain"), epochs_csv, steps=steps,
                  steps_path=steps_csv if steps.rows or not steps_csv.exists() else None)
    last = result.epochs[-1] if result.epochs else {}
    reporter.message(
        f"pretrain: {cfg.mode} {cfg.encoder}, {len(result.epochs)} epochs, exported epoch "
        f"{result.exported_epoch}; " + ", ".join(f"{k} {v:.3f}" for k, v in last.items()
                                                 if k.startswith("valid_")))
    stuck = at_chance(result.epochs, num_classes or 0)
    if stuck:
        reporter.message(f"pretrain: {stuck}", logging.WARNING)
    return PretrainStageResult(
        checkpoint=result.encoder_checkpoint, model=result.model_checkpoint,
        checkpoint_sha256=result.encoder_sha256, encoder=cfg.encoder, mode=cfg.mode,
        dataset=params.dataset.name, gvf_source=sha256_file(gvf) if gvf else "none",
        init_sha256=result.init_sha256, epochs=result.epochs, best_epoch=result.best_epoch,
        exported_epoch=result.exported_epoch, counts=result.counts,
        steps_per_epoch=result.steps_per_epoch, resumed_from=result.resumed_from,
        figures=[epochs_csv])


#: Best validation action accuracy within this of 1 / classes counts as chance level.
CHANCE_MARGIN = 0.05


def at_chance(epochs: list[dict[str, float]], num_classes: int) -> str | None:
    """A warning when no epoch's validation action accuracy left chance level (within
    :data:`CHANCE_MARGIN` of ``1 / num_classes``): from scratch, a run can stay on its
    first plateau (measured: the corpus base at some seeds), and features from such an
    encoder carry no action information. None when it did, or nothing was validated."""
    accs = [a for e in epochs if (a := e.get("valid_action_acc")) is not None and a == a]
    if num_classes < 2 or not accs:
        return None
    chance = 1.0 / num_classes
    if max(accs) > chance + CHANCE_MARGIN:
        return None
    return (f"validation action accuracy never left chance level (best {max(accs):.3f}, "
            f"chance 1/{num_classes} = {chance:.3f}): the encoder did not learn the actions; "
            "try another pretrain.seed, more epochs or a lower learning rate")


def disabled(paths: RunPaths, *, reason: str) -> DisabledResult:
    """The outputs of a training that ``reason`` (``pretrain.enabled: false``) turns off, as
    markers: ``models/pretrain/V/`` holds only ``disabled.json`` (a former training's files
    are removed: nothing there may pass for this variant's weights), the metrics file is
    ``{"enabled": 0}`` and the plots have their header only. DVC's foreach runs every
    variant; the Prefect pipeline does not call disabled stages at all."""
    out_dir = paths.model_dir("pretrain")
    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)
    markers = [atomic_write_json(out_dir / "disabled.json", {"reason": reason}),
               atomic_write_json(paths.metrics("pretrain"), {"enabled": 0})]
    for kind, columns in (("epochs", "epoch,valid_score"), ("steps", "step,loss")):
        markers.append(atomic_write_text(paths.plot("pretrain", kind), columns + "\n"))
    return DisabledResult(reason, markers)


def _corpus(corpus: Path, params: Params, out_dir: Path) -> tuple[Any, Path, dict[str, Path]]:
    """A trimmed-clip corpus as training input: its annotations, its segment table (written
    into ``out_dir``) and its videos (each entry's url, inside the corpus folder)."""
    if not corpus.is_file():
        raise ConfigError(f"pretrain.corpus: {corpus} does not exist (the synth stage makes "
                          "data/synth/corpus/synthactions_corpus.json when "
                          "synth.corpus_videos > 0)")
    ann = read_activitynet(corpus)
    folder = corpus.parent.resolve()
    videos: dict[str, Path] = {}
    for vid, video in ann.videos.items():
        path = (folder / (video.url or f"videos/{vid}.mp4")).resolve()
        if not path.is_relative_to(folder):
            raise ConfigError(f"{corpus}: video {vid!r}: url {video.url!r} leaves the corpus "
                              "folder")
        videos[vid] = path
    sampler = ClipSampler.from_config(params.clip)
    # Clips tile each file: no background (a TAC run reads none anyway).
    table = build_groundtruth(ann, min_background=sampler.clip_duration)
    return ann, write_table(table, out_dir / "corpus_groundtruth.parquet"), videos


def inputs(params: Params, paths: RunPaths) -> list[Path]:
    """The corpus or the decode stage's outputs, the GVF file (TSP with GVF), the initial
    weights."""
    corpus = corpus_file(params, paths)
    data = ([paths.groundtruth_table, paths.decode_report, paths.annotations]
            if corpus is None else [corpus])
    return [*data, *(p for p in _inputs(params, paths) if p is not None)]


def outputs(params: Params, paths: RunPaths) -> list[Path]:
    return [paths.model_dir("pretrain"), paths.metrics("pretrain"),
            paths.plot("pretrain", "epochs"), paths.plot("pretrain", "steps")]


STAGE = Stage(
    name="pretrain",
    help="TSP (or TAC) fine-tuning of the encoder on the segments; extraction's weights.",
    sections=("pretrain", "clip"),
    run_whole=run,
    inputs=inputs,
    outputs=outputs,
    code=CODE,
    enabled=lambda params: params.pretrain.enabled,
    disabled=lambda paths: disabled(paths, reason="pretrain.enabled: false"),
    per_variant=True,
)
