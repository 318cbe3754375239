"""TSP / TAC fine-tuning: :func:`train`, one flat loop.

Per epoch: the epoch's clip plan (:mod:`.samples`), this process's micro-batches of it,
forward/backward under autocast (CUDA), an optimizer step every ``grad_accum_steps``
micro-batches, the lr schedule per step, then validation and a resumable state. The
same function runs under ``torchrun`` (DDP; see :mod:`.distributed` and
``python -m tspipe.doors.train``); only rank 0 writes files and reports metrics.

Top to bottom: the data (:func:`~.samples.select_splits`), :func:`_build` (model,
optimizer, schedule), the resume (:func:`~.state.restore_state`), the device and DDP
(:meth:`~.distributed.Dist.place`), :func:`_fit` (the epoch loop, :func:`_end_epoch` after
each), :func:`_export`.

Files in ``out_dir`` (:class:`RunFiles`): ``state.pt`` (resume), ``best_model.pt`` (best
epoch so far), ``model.pt`` (the exported model with its heads) and ``checkpoint.pt`` (its
backbone: the encoder extraction loads).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler
from torch.utils.data import DataLoader

from tspipe.config import ClipConfig, PretrainConfig
from tspipe.data.clips import ClipSampler
from tspipe.errors import ConfigError
from tspipe.io import result_dict, sha256_file
from tspipe.pretrain.dataset import ClipDataset, Sample, check_gvf, make_loader
from tspipe.pretrain.distributed import Dist, setup
from tspipe.pretrain.loss import tsp_loss
from tspipe.pretrain.metrics import epoch_row, plot_row, step_row, validate
from tspipe.pretrain.model import (
    BuiltModel,
    build_model,
    export_model,
    save_model,
    set_train_mode,
    unwrap,
)
from tspipe.pretrain.optim import build_optimizer, build_scheduler, group_lrs, optimizer_step
from tspipe.pretrain.samples import (
    BatchPlan,
    SampleKey,
    Splits,
    select_splits,
    steps_per_epoch,
    train_plan,
)
from tspipe.pretrain.state import (
    Progress,
    StateError,
    StopSignal,
    TrainingInterrupted,
    restore_state,
    run_fingerprint,
    save_state,
    training_state,
)
from tspipe.reporting import NullReporter, Reporter
from tspipe.runtime import autocast
from tspipe.runtime import precision as runtime_precision

log = logging.getLogger(__name__)

MetricsCallback = Callable[[int, dict[str, float]], None]
# Per-step sums all-reduced across ranks: losses, then accuracy counts, then the stop flag.
_STATS = ("loss", "loss_action", "loss_region", "action_correct", "action_total",
          "region_correct", "region_total")


@dataclass(frozen=True)
class PretrainResult:
    """``epochs``: one row per finished epoch (``epoch`` counts from 1); ``best_epoch``
    by validation score (None without validation); ``exported_epoch``: whose weights
    ``encoder_checkpoint`` / ``model_checkpoint`` hold. ``counts``: segments and clips
    per split and what was left out. ``steps``: one row per optimizer step of the whole
    run, those before a resume included (``step`` counts from 1 over all epochs)."""

    encoder_checkpoint: Path
    model_checkpoint: Path
    state: Path
    encoder_sha256: str
    epochs: list[dict[str, float]]
    best_epoch: int | None
    exported_epoch: int
    counts: dict[str, int]
    steps_per_epoch: int
    world_size: int
    resumed_from: dict[str, int] | None = None
    init_sha256: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    steps: list[dict[str, float]] = field(default_factory=list, repr=False)

    def metrics(self) -> dict[str, float]:
        return flat_metrics(self)

    def to_dict(self) -> dict[str, Any]:
        return result_dict(self)


def flat_metrics(result: Any) -> dict[str, float]:
    """The exported epoch's row, the best epoch and the counts of a result with
    ``epochs``, ``exported_epoch``, ``best_epoch`` and ``counts``, flat."""
    row = next((r for r in result.epochs if r["epoch"] == result.exported_epoch), {})
    out = {k: float(v) for k, v in row.items()}
    out["best_epoch"] = float(result.best_epoch or 0)
    out.update({f"count_{k}": float(v) for k, v in result.counts.items()})
    return out


@dataclass(frozen=True)
class RunFiles:
    """What a run leaves in its ``out_dir`` (see the module docstring)."""

    state: Path
    best: Path
    model: Path
    encoder: Path

    @classmethod
    def at(cls, out_dir: Path) -> RunFiles:
        return cls(out_dir / "state.pt", out_dir / "best_model.pt", out_dir / "model.pt",
                   out_dir / "checkpoint.pt")


@dataclass(frozen=True)
class _Run:
    """What trains. ``model``: the bare model (its SyncBatchNorm form under ``sync_bn``);
    ``net``: what the loop calls (``model``, or its DDP wrapper); ``steps``: optimizer
    steps per epoch; ``fingerprint``: what a resumed state must share with this run."""

    built: BuiltModel
    model: nn.Module
    net: nn.Module
    optimizer: Optimizer
    scheduler: LRScheduler
    scaler: torch.amp.GradScaler
    precision: str
    batches: BatchPlan
    steps: int
    tsp: bool
    use_gvf: bool
    fingerprint: dict[str, Any]


def train(cfg: PretrainConfig, clip: ClipConfig, *, groundtruth: Path,
          videos: Mapping[str, Path], out_dir: Path, gvf: Path | None = None,
          num_classes: int | None = None, init_checkpoint: Path | None = None,
          device: str | torch.device | None = None, resume: bool = False,
          on_metrics: MetricsCallback | None = None, reporter: Reporter | None = None,
          backend: str | None = "auto") -> PretrainResult:
    """Fine-tune ``cfg.encoder`` on the ground-truth table's segments; returns what it wrote.

    ``videos``: video id -> decoded file (``decoded_videos``); ``gvf``: the GVF file (TSP
    with ``use_gvf``); ``num_classes``: the taxonomy's size (default: the table's largest
    ``action_index`` + 1); ``init_checkpoint``: resolved path of ``cfg.init_checkpoint``;
    ``device`` overrides ``cfg.device``. ``resume``: continue from ``out_dir/state.pt``
    if there is one (with a fixed seed on the CPU the final weights are bit-identical to
    an uninterrupted run). ``on_metrics(step, metrics)``: per optimizer step
    (``train/...``) and per epoch (``epoch/...``, step = the epoch's last step), rank 0
    only. SIGTERM / SIGINT finish the step, save the state and raise
    :class:`TrainingInterrupted`. Under torchrun each rank calls this (DDP).
    """
    dist = setup(device if device is not None else cfg.device)
    try:
        return _train(cfg, clip, dist, groundtruth=Path(groundtruth), videos=videos,
                      out_dir=Path(out_dir), gvf=gvf, num_classes=num_classes,
                      init_checkpoint=init_checkpoint, resume=resume,
                      on_metrics=on_metrics if dist.is_main else None,
                      reporter=(reporter or NullReporter()) if dist.is_main else NullReporter(),
                      backend=backend)
    finally:
        dist.close()


def _train(cfg: PretrainConfig, clip: ClipConfig, dist: Dist, *, groundtruth: Path,
           videos: Mapping[str, Path], out_dir: Path, gvf: Path | None,
           num_classes: int | None, init_checkpoint: Path | None, resume: bool,
           on_metrics: MetricsCallback | None, reporter: Reporter, backend: str | None
           ) -> PretrainResult:
    files = RunFiles.at(out_dir)
    sampler = ClipSampler.from_config(clip)
    data = select_splits(cfg, sampler, groundtruth, videos, num_classes)
    run = _build(cfg, clip, dist, data, gvf=gvf, init_checkpoint=init_checkpoint)
    progress, resumed_from = Progress(), None
    if resume and files.state.exists():
        progress = restore_state(files.state, run.fingerprint, model=run.model,
                                 optimizer=run.optimizer, scheduler=run.scheduler,
                                 scaler=run.scaler)
        resumed_from = {"epoch": progress.epoch, "step": progress.step}
        log.info("resuming from %s: epoch %d, step %d of %d", files.state, progress.epoch + 1,
                 progress.step, run.steps)
    placed = dist.place(run.model, sync_bn=cfg.sync_bn)
    run = dataclasses.replace(run, model=placed.model, net=placed.net)
    dataset = ClipDataset((data.train, data.valid), sampler, run.built.prep,
                          gvf_path=Path(gvf) if run.use_gvf else None, backend=backend)
    loader = make_loader(dataset, run.batches, cfg.workers, dist.device)
    _fit(cfg, clip, dist, run, data, progress, loader, files, on_metrics=on_metrics,
         reporter=reporter)
    del loader  # stops persistent workers
    dataset.close()
    exported = _export(cfg, clip, dist, run, progress, files)
    return PretrainResult(
        encoder_checkpoint=files.encoder, model_checkpoint=files.model, state=files.state,
        encoder_sha256=sha256_file(files.encoder), epochs=progress.history,
        best_epoch=progress.best["epoch"], exported_epoch=exported, counts=data.counts,
        steps_per_epoch=run.steps, world_size=dist.world_size, resumed_from=resumed_from,
        init_sha256=run.built.init_sha256, steps=progress.steps)


def _build(cfg: PretrainConfig, clip: ClipConfig, dist: Dist, data: Splits, *,
           gvf: Path | None, init_checkpoint: Path | None) -> _Run:
    """The model (seeded with ``cfg.seed``), its optimizer, lr schedule and grad scaler, and
    this rank's batch plan; checks the GVF file has every video's vector."""
    tsp = cfg.mode == "tsp"
    built = build_model(cfg, clip, data.num_classes, init_checkpoint=init_checkpoint)
    use_gvf = tsp and cfg.use_gvf
    if use_gvf:
        if gvf is None:
            raise ConfigError("pretrain.use_gvf is true but no GVF file was given (run the "
                              "gvf stage, or set use_gvf: false)")
        check_gvf(Path(gvf), set(data.train.video_ids) | set(data.valid.video_ids),
                  built.model.feature_dim)
    batches = BatchPlan(cfg.batch_size, world_size=dist.world_size, rank=dist.rank,
                        accum=cfg.grad_accum_steps)
    steps = steps_per_epoch(len(data.train) * cfg.clips_per_segment, cfg.batch_size)
    optimizer = build_optimizer(built.model, cfg, cfg.batch_size)
    scheduler = build_scheduler(optimizer, cfg, steps)
    precision = runtime_precision(dist.device, cfg.amp)
    scaler = torch.amp.GradScaler("cuda", enabled=precision == "fp16")
    return _Run(built=built, model=built.model, net=built.model, optimizer=optimizer,
                scheduler=scheduler, scaler=scaler, precision=precision, batches=batches,
                steps=steps, tsp=tsp, use_gvf=use_gvf,
                fingerprint=run_fingerprint(cfg, clip, data.num_classes))


def _fit(cfg: PretrainConfig, clip: ClipConfig, dist: Dist, run: _Run, data: Splits,
         progress: Progress, loader: DataLoader, files: RunFiles, *,
         on_metrics: MetricsCallback | None, reporter: Reporter) -> None:
    """The epochs from ``progress`` on (it advances in place). SIGTERM / SIGINT on any rank:
    every rank finishes the step, rank 0 saves the state, and all raise."""
    steps, device = run.steps, dist.device
    fg_of = data.train.action >= 0
    reporter.start("pretrain", max(0, steps * (cfg.epochs - progress.epoch) - progress.step))
    with StopSignal() as stop:
        for epoch in range(progress.epoch, cfg.epochs):
            if progress.step == 0:
                progress.running = {k: 0.0 for k in (*_STATS, "seconds")}
            run.batches.set_train(train_plan(data.train, cfg.clips_per_segment, cfg.seed,
                                             epoch, cfg.jitter), progress.step)
            set_train_mode(run.net, cfg.freeze_bn)
            micro, tic = 0, time.perf_counter()
            sums = torch.zeros(len(_STATS) + 1, dtype=torch.float64, device=device)
            for batch in loader:
                keys = run.batches.step_keys(progress.step)
                last_micro = micro == cfg.grad_accum_steps - 1
                sums += _forward_backward(cfg, dist, run, batch, keys, fg_of, sync=last_micro)
                micro += 1
                if not last_micro:
                    continue
                micro = 0
                lrs = optimizer_step(run.optimizer, run.scheduler, run.scaler)
                progress.step += 1
                sums[-1] = float(stop.requested is not None)
                stats = dict(zip((*_STATS, "stop"), dist.all_reduce_sum(sums).tolist(),
                                 strict=True))
                sums.zero_()
                for name in _STATS:
                    progress.running[name] += stats[name]
                reporter.advance("pretrain")
                row = step_row(stats, lrs, epoch + progress.step / steps)
                progress.steps.append(plot_row(epoch * steps + progress.step, row))
                if on_metrics is not None:
                    on_metrics(epoch * steps + progress.step, row)
                if stats["stop"] > 0:  # a rank got a signal: every rank stops at this step
                    progress.running["seconds"] += time.perf_counter() - tic
                    if dist.is_main:
                        _save(files.state, run, progress, dist)
                    dist.barrier()
                    raise TrainingInterrupted(stop.requested or "SIGTERM", files.state, epoch,
                                              progress.step, steps)
                every = cfg.checkpoint_every_steps
                if dist.is_main and every and progress.step % every == 0 and progress.step < steps:
                    progress.running["seconds"] += time.perf_counter() - tic
                    tic = time.perf_counter()
                    _save(files.state, run, progress, dist)
            progress.running["seconds"] += time.perf_counter() - tic
            _end_epoch(cfg, clip, dist, run, progress, loader, data.valid_keys, files,
                       on_metrics=on_metrics)


def _forward_backward(cfg: PretrainConfig, dist: Dist, run: _Run, batch: Sample,
                      keys: list[SampleKey], fg_of: np.ndarray, *, sync: bool
                      ) -> torch.Tensor:
    """One micro-batch of the step whose global batch is ``keys``: forward under autocast,
    backward of its share of the global batch's loss (DDP all-reduces the gradients only
    with ``sync``: the step's last micro-batch). Its ``_STATS`` sums, then 0 (stop flag)."""
    device, tsp = dist.device, run.tsp
    n_fg = int(fg_of[[k.segment for k in keys]].sum())
    clips, action, region = _move(batch.clip, device, clips=True), _move(batch.action, device), \
        _move(batch.region, device)
    no_sync = run.net.no_sync if dist.active and not sync else contextlib.nullcontext
    with no_sync():
        with autocast(device, run.precision):
            out = run.net(clips, _move(batch.gvf, device) if run.use_gvf else None)
        terms = tsp_loss(out, action, region if tsp else None, alpha_action=cfg.alpha_action,
                         alpha_region=cfg.alpha_region, num_clips=len(keys),
                         num_foreground=n_fg)
        # DDP averages gradients over ranks; the terms are already shares of the global
        # batch's loss, so undo the average.
        run.scaler.scale(terms.total * dist.world_size).backward()
    fg = action >= 0
    zero = torch.zeros((), dtype=torch.float64, device=device)
    return torch.stack([t.detach().to(torch.float64) for t in (
        terms.total, terms.action, terms.region if terms.region is not None else zero,
        (out.action_logits.argmax(1) == action)[fg].sum(), fg.sum(),
        (out.region_logits.argmax(1) == region).sum() if tsp else zero,
        zero + (len(region) if tsp else 0), zero)])


def _move(t: torch.Tensor, device: torch.device, *, clips: bool = False) -> torch.Tensor:
    fmt = torch.channels_last_3d if clips and device.type == "cuda" else torch.preserve_format
    return t.to(device, non_blocking=True, memory_format=fmt)


def _end_epoch(cfg: PretrainConfig, clip: ClipConfig, dist: Dist, run: _Run,
               progress: Progress, loader: DataLoader, valid_keys: list[SampleKey],
               files: RunFiles, *, on_metrics: MetricsCallback | None) -> None:
    """The finished epoch's row (validation with ``valid_keys``) joins the history; the
    best epoch's model so far and the state (at the next epoch) are saved."""
    epoch = progress.epoch
    row = epoch_row(epoch, progress.running, run.steps, lrs=group_lrs(run.optimizer),
                    tsp=run.tsp)
    if valid_keys:
        run.batches.set_valid(valid_keys, max(1, cfg.batch_size // dist.world_size))
        row.update(validate(unwrap(run.model), loader, dist, run.precision, cfg, tsp=run.tsp,
                            use_gvf=run.use_gvf))
        set_train_mode(run.net, cfg.freeze_bn)
    progress.history.append(row)
    if "valid_score" in row and row["valid_score"] > progress.best["score"]:
        progress.best = {"epoch": epoch + 1, "score": row["valid_score"]}
        if dist.is_main:
            save_model(files.best, run.model, arch=cfg.encoder, clip=clip, prep=run.built.prep,
                       backbone_only=False, extra={"epoch": epoch + 1})
    progress.epoch, progress.step = epoch + 1, 0
    if dist.is_main:
        _save(files.state, run, progress, dist)
    log.info("epoch %d/%d: %s", epoch + 1, cfg.epochs,
             ", ".join(f"{k} {v:.4g}" for k, v in row.items() if k != "epoch"))
    if on_metrics is not None:
        on_metrics((epoch + 1) * run.steps, {f"epoch/{k}": v for k, v in row.items()})


def _save(path: Path, run: _Run, progress: Progress, dist: Dist) -> None:
    save_state(path, training_state(model=unwrap(run.model), optimizer=run.optimizer,
                                    scheduler=run.scheduler, scaler=run.scaler,
                                    progress=progress, fingerprint=run.fingerprint,
                                    world_size=dist.world_size))


def _export(cfg: PretrainConfig, clip: ClipConfig, dist: Dist, run: _Run, progress: Progress,
            files: RunFiles) -> int:
    """Rank 0 writes ``model.pt`` and ``checkpoint.pt`` with the weights of the epoch
    ``cfg.export_epoch`` names (the best one read back from ``best_model.pt``); that epoch."""
    if not progress.history:
        raise StateError(f"{files.state}: no finished epoch to export (epochs: {cfg.epochs})")
    last, best = int(progress.history[-1]["epoch"]), progress.best["epoch"]
    exported = int(best) if cfg.export_epoch == "best" and best else last
    if dist.is_main:  # only rank 0 writes, so only it needs the best epoch's weights back
        export_model(run.model, files.model, files.encoder, arch=cfg.encoder, clip=clip,
                     prep=run.built.prep, weights=files.best if exported != last else None,
                     extra={"epoch": exported, "init_sha256": run.built.init_sha256})
    dist.barrier()
    return exported
