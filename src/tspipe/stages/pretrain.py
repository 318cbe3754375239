"""Stage ``pretrain``: TSP (or TAC) fine-tuning of the encoder that extraction then uses.

Reads the decode stage's ground-truth table and decoded videos, the ``gvf`` stage's file
(TSP with ``use_gvf``) and ``pretrain.init_checkpoint`` (else seeded random weights, the
CPU demo's stand-in for Kinetics), and trains with :func:`tspipe.pretrain.train`.
Writes, for its variant V (or ``base``), ``models/pretrain/V/`` (``checkpoint.pt``: the
encoder extraction loads by default; ``model.pt`` with its heads; ``state.pt`` to
resume), ``metrics/V/pretrain.json``, ``plots/V/pretrain_epochs.csv`` and
``plots/V/pretrain_steps.csv`` (DVC plots).

Nothing lost: every input is checked first (:func:`training_data`), so a typo in
params.yaml fails, naming the key and the file, before any output is touched. ``run.json``
holds the run key (params, the inputs' sha256, the code) and whether the training is
complete. A rerun with the finished training's key only exports it again; any other key
trains in ``models/pretrain/.V.next`` beside it (resumed there after a kill, mid-epoch)
and is swapped into place only when complete (:mod:`tspipe.pretrain.folders`): until
then extraction still finds the finished encoder. Multi-GPU runs go through ``torchrun -m
tspipe.doors.train`` (same files, written in place).

The door logs the per-step loss and learning rates and the per-epoch validation
metrics to the stage's MLflow run, the encoder as an artifact and a version of the
registered model ``tspipe-encoder`` tagged with the dataset, the mode, the GVF source and
the sha256; the recorder registers the checkpoint in the catalog (origin ``pretrain``,
its parent, the dataset, the params).
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from tspipe.config import Params
from tspipe.data.annotations import read_activitynet
from tspipe.data.clips import ClipSampler, build_groundtruth, write_table
from tspipe.errors import ConfigError, StageError, TspipeError
from tspipe.io import (
    atomic_write_json,
    atomic_write_text,
    result_dict,
    sha256_file,
    sha256_json,
)
from tspipe.models.loading import load_encoder
from tspipe.paths import RunPaths
from tspipe.pretrain.folders import (
    TrainingFolders,
    is_complete,
    mark_complete,
    read_marker,
    recover,
    set_aside,
    start,
    swap_in,
)
from tspipe.pretrain.report import write_reports
from tspipe.pretrain.train import RunFiles, flat_metrics, train
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
    data = training_data(params, paths)  # every input checked before any output is touched
    key = run_key(params, paths)
    dirs = training_folders(paths)
    for line in recover(dirs):
        reporter.message(f"pretrain: an interrupted swap: {line}", logging.WARNING)
    work, resume = _work_folder(dirs, key, reporter)
    groundtruth = (data.groundtruth if data.corpus_table is None
                   else write_table(data.corpus_table, work / "corpus_groundtruth.parquet"))

    def on_metrics(step: int, metrics: dict[str, float]) -> None:
        for k, v in metrics.items():
            reporter.metric(k, v, step)

    result = train(cfg, params.clip, groundtruth=groundtruth, videos=data.videos,
                   out_dir=work, gvf=data.gvf, init_checkpoint=data.init,
                   num_classes=data.num_classes,
                   resume=resume, on_metrics=on_metrics, reporter=reporter)
    if work != dirs.final:
        mark_complete(work, key)
        swap_in(dirs)
    epochs_csv, steps_csv = paths.plot("pretrain", "epochs"), paths.plot("pretrain", "steps")
    write_reports(result, paths.metrics("pretrain"), epochs_csv, steps_path=steps_csv)
    last = result.epochs[-1] if result.epochs else {}
    reporter.message(
        f"pretrain: {cfg.mode} {cfg.encoder}, {len(result.epochs)} epochs, exported epoch "
        f"{result.exported_epoch}; " + ", ".join(f"{k} {v:.3f}" for k, v in last.items()
                                                 if k.startswith("valid_")))
    stuck = at_chance(result.epochs, data.num_classes or 0)
    if stuck:
        reporter.message(f"pretrain: {stuck}", logging.WARNING)
    return PretrainStageResult(
        checkpoint=dirs.final / result.encoder_checkpoint.name,
        model=dirs.final / result.model_checkpoint.name,
        checkpoint_sha256=result.encoder_sha256, encoder=cfg.encoder, mode=cfg.mode,
        dataset=params.dataset.name, gvf_source=sha256_file(data.gvf) if data.gvf else "none",
        init_sha256=result.init_sha256, epochs=result.epochs, best_epoch=result.best_epoch,
        exported_epoch=result.exported_epoch, counts=result.counts,
        steps_per_epoch=result.steps_per_epoch, resumed_from=result.resumed_from,
        figures=[epochs_csv])


def training_folders(paths: RunPaths) -> TrainingFolders:
    """The variant's training (``models/pretrain/V``) and the folders beside it."""
    final = paths.model_dir("pretrain")
    return TrainingFolders(final, paths.staging_dir(final), paths.retired_dir(final))


def _work_folder(dirs: TrainingFolders, key: str, reporter: Reporter) -> tuple[Path, bool]:
    """Where this run trains, and whether it resumes there: the finished training of the
    same key (only exported again), else the staging folder, resumed when it holds this
    key's training (after a kill), else started afresh beside the finished one."""
    if is_complete(dirs.final, key) and RunFiles.at(dirs.final).state.is_file():
        return dirs.final, True
    if read_marker(dirs.staging).get("key") == key:
        return dirs.staging, True
    if dirs.staging.exists():
        reporter.message(f"pretrain: {dirs.staging} holds a training of other inputs or "
                         "settings; removing it to train these", logging.WARNING)
        shutil.rmtree(dirs.staging)
    if dirs.final.exists():
        log.info("pretrain: inputs or settings changed since %s; training afresh in %s "
                 "(the finished one stays until this one is complete)", dirs.final,
                 dirs.staging)
    start(dirs.staging, key)
    return dirs.staging, False


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
    markers: ``models/pretrain/V/`` holds only ``disabled.json`` (nothing there may pass
    for this variant's weights), the metrics file is ``{"enabled": 0}`` and the plots have
    their header only. A former training is set aside in the staging folder, not deleted:
    enabled again with the same inputs, the stage only exports it again. DVC's foreach
    runs every variant; the Prefect pipeline does not call disabled stages at all."""
    dirs = training_folders(paths)
    for line in recover(dirs):
        log.warning("pretrain: an interrupted swap: %s", line)
    final = dirs.final
    if final.exists() and sorted(p.name for p in final.iterdir()) != ["disabled.json"]:
        aside = set_aside(dirs)
        if aside:
            log.warning("pretrain: %s: %s", reason, aside)
    final.mkdir(parents=True, exist_ok=True)
    markers = [atomic_write_json(final / "disabled.json", {"reason": reason}),
               atomic_write_json(paths.metrics("pretrain"), {"enabled": 0})]
    for kind, columns in (("epochs", "epoch,valid_score"), ("steps", "step,loss")):
        markers.append(atomic_write_text(paths.plot("pretrain", kind), columns + "\n"))
    return DisabledResult(reason, markers)


@dataclass(frozen=True)
class TrainingData:
    """What a training reads, each file checked by :func:`training_data`."""

    videos: dict[str, Path]  # video id -> decoded (or corpus) file
    num_classes: int | None  # the taxonomy's size; None: from the table
    groundtruth: Path | None  # the decode stage's segment table; None with a corpus
    corpus_table: pa.Table | None  # the corpus's segments (written into the training's folder)
    gvf: Path | None  # TSP with use_gvf
    init: Path | None  # pretrain.init_checkpoint, resolved


def training_data(params: Params, paths: RunPaths) -> TrainingData:
    """Every input of the training, checked: a missing or unreadable one raises, naming the
    params key or the stage that makes it, and the file; called before any output is
    touched, so a typo never costs a finished training."""
    cfg = params.pretrain
    gvf, init = _inputs(params, paths)
    if init is not None:
        _check_init(cfg.encoder, init)
    if gvf is not None and not gvf.is_file():
        raise StageError(f"pretrain.use_gvf: {gvf} does not exist: run the gvf stage first "
                         "(`tspipe stage gvf`), or set pretrain.use_gvf: false")
    corpus = corpus_file(params, paths)
    if corpus is not None:
        ann, table, videos = _corpus(corpus, params)
        where, groundtruth = f"pretrain.corpus: {corpus}", None
    else:
        for path, stage in ((paths.annotations, "ingest"), (paths.groundtruth_table, "decode")):
            if not path.is_file():
                raise StageError(f"{path} does not exist: run the {stage} stage first "
                                 f"(`tspipe stage {stage}`; pretrain.corpus is unset, so the "
                                 "training reads the pipeline's segments)")
        ann, table, groundtruth = read_activitynet(paths.annotations), None, paths.groundtruth_table
        videos = {v.video_id: v.path for v in decoded_videos(paths)}
        where = f"{paths.decode_report} (run the decode stage again: `tspipe stage decode`)"
    missing = [(vid, path) for vid, path in videos.items() if not path.is_file()]
    if missing:
        listed = ", ".join(f"video {vid!r}: {path}" for vid, path in missing[:3])
        raise StageError(f"{where}: {len(missing)} of {len(videos)} video files do not "
                         f"exist: {listed}{', ...' if len(missing) > 3 else ''}")
    return TrainingData(videos=videos, num_classes=len(ann.classes) if ann.classes else None,
                        groundtruth=groundtruth, corpus_table=table, gvf=gvf, init=init)


def _check_init(encoder: str, init: Path) -> None:
    """``pretrain.init_checkpoint`` exists and loads as ``encoder`` (what training does
    with it first)."""
    if not init.is_file():
        raise ConfigError(f"pretrain.init_checkpoint: {init} does not exist: fix the path, or "
                          "run the stage that writes it (`tspipe stage base` for "
                          "models/pretrain/base/checkpoint.pt); null trains from seeded "
                          "random weights")
    try:
        load_encoder(encoder, init)
    except TspipeError as exc:  # re-raised with the params key that named the file
        raise ConfigError(f"pretrain.init_checkpoint: {init} does not load as a {encoder} "
                          f"encoder (pretrain.encoder): {exc}") from exc


def _corpus(corpus: Path, params: Params) -> tuple[Any, pa.Table, dict[str, Path]]:
    """A trimmed-clip corpus as training input: its annotations, its segment table and its
    videos (each entry's url, inside the corpus folder)."""
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
    return ann, build_groundtruth(ann, min_background=sampler.clip_duration), videos


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
    disabled=lambda params, paths: disabled(paths, reason="pretrain.enabled: false"),
    per_variant=True,
)
