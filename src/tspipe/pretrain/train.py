"""TSP / TAC fine-tuning: :func:`train`, one flat loop.

Per epoch: the epoch's clip plan (:mod:`.samples`), this process's micro-batches of it,
forward/backward under autocast (CUDA), an optimizer step every ``grad_accum_steps``
micro-batches, the lr schedule per step, then validation and a resumable state. The
same function runs under ``torchrun`` (DDP; see :mod:`.distributed` and
``python -m tspipe.doors.train``); only rank 0 writes files and reports metrics.

Files in ``out_dir``: ``state.pt`` (resume), ``best_model.pt`` (best epoch so far),
``model.pt`` (the exported model with its heads) and ``checkpoint.pt`` (its backbone: the
encoder extraction loads).
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from tspipe.config import ClipConfig, PretrainConfig
from tspipe.data.clips import GROUNDTRUTH_SCHEMA, ClipSampler, read_table
from tspipe.errors import ConfigError
from tspipe.io import result_dict, sha256_file
from tspipe.models.checkpoints import load_into
from tspipe.pretrain import distributed
from tspipe.pretrain.dataset import ClipDataset, check_gvf, worker_init
from tspipe.pretrain.loss import tsp_loss
from tspipe.pretrain.metrics import epoch_row, validate
from tspipe.pretrain.model import build_model, save_model, set_train_mode, unwrap
from tspipe.pretrain.optim import build_optimizer, build_scheduler, group_lrs
from tspipe.pretrain.samples import (
    BatchPlan,
    num_classes_of,
    select_segments,
    steps_per_epoch,
    train_plan,
    valid_plan,
)
from tspipe.pretrain.state import (
    StateError,
    StopSignal,
    TrainingInterrupted,
    check_resumable,
    load_state,
    rng_state,
    run_fingerprint,
    save_state,
    set_rng_state,
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
    per split and what was left out."""

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
    dist = distributed.setup(device if device is not None else cfg.device)
    try:
        return _train(cfg, clip, dist, groundtruth=Path(groundtruth), videos=videos,
                      out_dir=Path(out_dir), gvf=gvf, num_classes=num_classes,
                      init_checkpoint=init_checkpoint, resume=resume,
                      on_metrics=on_metrics if dist.is_main else None,
                      reporter=(reporter or NullReporter()) if dist.is_main else NullReporter(),
                      backend=backend)
    finally:
        dist.close()


def _train(cfg: PretrainConfig, clip: ClipConfig, dist: distributed.Dist, *, groundtruth: Path,
           videos: Mapping[str, Path], out_dir: Path, gvf: Path | None,
           num_classes: int | None, init_checkpoint: Path | None, resume: bool,
           on_metrics: MetricsCallback | None, reporter: Reporter, backend: str | None
           ) -> PretrainResult:
    device, tsp = dist.device, cfg.mode == "tsp"
    state_path, best_path = out_dir / "state.pt", out_dir / "best_model.pt"
    sampler = ClipSampler.from_config(clip)
    table = read_table(groundtruth, schema=GROUNDTRUTH_SCHEMA)
    n_classes = num_classes or num_classes_of(table)
    train_sel = select_segments(table, sampler, videos, subsets=cfg.train_subsets, mode=cfg.mode)
    valid_sel = select_segments(table, sampler, videos, subsets=cfg.valid_subsets, mode=cfg.mode)
    if not len(train_sel.segments):
        raise ConfigError(f"{groundtruth}: no trainable segment in subsets {cfg.train_subsets} "
                          f"(counts: {train_sel.counts})")
    counts = {**{f"train_{k}": v for k, v in train_sel.counts.items()},
              **{f"valid_{k}": v for k, v in valid_sel.counts.items()}}

    built = build_model(cfg, clip, n_classes, init_checkpoint=init_checkpoint)
    model = built.model
    use_gvf = tsp and cfg.use_gvf
    if use_gvf:
        if gvf is None:
            raise ConfigError("pretrain.use_gvf is true but no GVF file was given (run the "
                              "gvf stage, or set use_gvf: false)")
        check_gvf(Path(gvf), set(train_sel.segments.video_ids) | set(valid_sel.segments.video_ids),
                  model.feature_dim)
    batches = BatchPlan(cfg.batch_size, world_size=dist.world_size, rank=dist.rank,
                        accum=cfg.grad_accum_steps)
    steps = steps_per_epoch(len(train_sel.segments) * cfg.clips_per_segment, cfg.batch_size)
    optimizer = build_optimizer(model, cfg, cfg.batch_size)
    scheduler = build_scheduler(optimizer, cfg, steps)
    precision = runtime_precision(device, cfg.amp)
    scaler = torch.amp.GradScaler("cuda", enabled=precision == "fp16")
    counts.update(train_clips=len(train_sel.segments) * cfg.clips_per_segment,
                  valid_clips=len(valid_sel.segments) * cfg.clips_per_segment)

    # -- resume -----------------------------------------------------------------------------
    start_epoch, start_step, history, best = 0, 0, [], {"epoch": None, "score": -math.inf}
    running: dict[str, float] = {}
    resumed_from = None
    fingerprint = run_fingerprint(cfg, clip, n_classes)
    if resume and state_path.exists():
        st = load_state(state_path)
        check_resumable(state_path, st["fingerprint"], fingerprint)
        model.load_state_dict(st["model"])
        optimizer.load_state_dict(st["optimizer"])
        scheduler.load_state_dict(st["scheduler"])
        scaler.load_state_dict(st["scaler"])
        set_rng_state(st["rng"])
        start_epoch, start_step = int(st["epoch"]), int(st["step"])
        history, best, running = list(st["history"]), dict(st["best"]), dict(st["running"])
        resumed_from = {"epoch": start_epoch, "step": start_step}
        log.info("resuming from %s: epoch %d, step %d of %d", state_path, start_epoch + 1,
                 start_step, steps)

    model.to(device)
    if device.type == "cuda":
        model.to(memory_format=torch.channels_last_3d)
        torch.backends.cudnn.benchmark = True  # fixed clip size: pick the fastest kernels
    train_model: nn.Module = model
    if dist.active:
        if cfg.sync_bn:
            if device.type != "cuda":
                raise ConfigError("pretrain.sync_bn needs CUDA (SyncBatchNorm has no CPU "
                                  "kernel); use freeze_bn for the same numbers on any device")
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        train_model = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)

    dataset = ClipDataset((train_sel.segments, valid_sel.segments), sampler, built.prep,
                          gvf_path=Path(gvf) if use_gvf else None, backend=backend)
    loader = make_loader(dataset, batches, cfg.workers, device)
    valid_keys = valid_plan(valid_sel.segments, sampler, cfg.clips_per_segment)
    fg_of = train_sel.segments.action >= 0

    def state(epoch: int, step: int) -> dict[str, Any]:
        return {"model": unwrap(model).state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
                "epoch": epoch, "step": step, "history": history, "best": best,
                "running": running, "rng": rng_state(), "fingerprint": fingerprint,
                "world_size": dist.world_size}

    def move(t: torch.Tensor, *, clips: bool = False) -> torch.Tensor:
        fmt = torch.channels_last_3d if clips and device.type == "cuda" else torch.preserve_format
        return t.to(device, non_blocking=True, memory_format=fmt)

    reporter.start("pretrain", max(0, steps * (cfg.epochs - start_epoch) - start_step))
    with StopSignal() as stop:
        for epoch in range(start_epoch, cfg.epochs):
            first = start_step if epoch == start_epoch else 0
            if first == 0:
                running = {k: 0.0 for k in (*_STATS, "seconds")}
            batches.set_train(train_plan(train_sel.segments, cfg.clips_per_segment, cfg.seed,
                                         epoch, cfg.jitter), first)
            set_train_mode(train_model, cfg.freeze_bn)
            step, micro, tic = first, 0, time.perf_counter()
            sums = torch.zeros(len(_STATS) + 1, dtype=torch.float64, device=device)
            for batch in loader:
                keys = batches.step_keys(step)
                n_fg = int(fg_of[[k.segment for k in keys]].sum())
                clips, action, region = move(batch.clip, clips=True), move(batch.action), \
                    move(batch.region)
                last_micro = micro == cfg.grad_accum_steps - 1
                no_sync = train_model.no_sync if dist.active and not last_micro \
                    else contextlib.nullcontext
                with no_sync():
                    with autocast(device, precision):
                        out = train_model(clips, move(batch.gvf) if use_gvf else None)
                    terms = tsp_loss(out, action, region if tsp else None,
                                     alpha_action=cfg.alpha_action,
                                     alpha_region=cfg.alpha_region,
                                     num_clips=len(keys), num_foreground=n_fg)
                    # DDP averages gradients over ranks; the terms are already shares of
                    # the global batch's loss, so undo the average.
                    scaler.scale(terms.total * dist.world_size).backward()
                fg = action >= 0
                zero = sums.new_zeros(())
                sums += torch.stack([t.detach().to(torch.float64) for t in (
                    terms.total, terms.action,
                    terms.region if terms.region is not None else zero,
                    (out.action_logits.argmax(1) == action)[fg].sum(), fg.sum(),
                    (out.region_logits.argmax(1) == region).sum() if tsp else zero,
                    zero + (len(region) if tsp else 0), zero)])
                micro += 1
                if not last_micro:
                    continue
                micro = 0
                lrs = group_lrs(optimizer)
                scaler.step(optimizer)
                scaler.update()
                optimizer.zero_grad(set_to_none=True)
                scheduler.step()
                step += 1
                sums[-1] = float(stop.requested is not None)
                stats = dist.all_reduce_sum(sums).tolist()
                sums.zero_()
                for name, value in zip(_STATS, stats, strict=False):
                    running[name] += value
                reporter.advance("pretrain")
                if on_metrics is not None:
                    on_metrics(epoch * steps + step, {
                        "train/loss": stats[0], "train/loss_action": stats[1],
                        "train/loss_region": stats[2], "train/lr_backbone": lrs["backbone"],
                        "train/lr_heads": lrs["heads"], "train/epoch": epoch + step / steps})
                if stats[-1] > 0:  # a rank got a signal: every rank stops at this step
                    running["seconds"] += time.perf_counter() - tic
                    if dist.is_main:
                        save_state(state_path, state(epoch, step))
                    dist.barrier()
                    raise TrainingInterrupted(stop.requested or "SIGTERM", state_path, epoch,
                                              step, steps)
                every = cfg.checkpoint_every_steps
                if dist.is_main and every and step % every == 0 and step < steps:
                    running["seconds"] += time.perf_counter() - tic
                    tic = time.perf_counter()
                    save_state(state_path, state(epoch, step))
            start_step = 0
            running["seconds"] += time.perf_counter() - tic

            row = epoch_row(epoch, running, steps, lrs=group_lrs(optimizer), tsp=tsp)
            if valid_keys:
                batches.set_valid(valid_keys, max(1, cfg.batch_size // dist.world_size))
                row.update(validate(unwrap(model), loader, dist, precision, cfg, tsp=tsp,
                                    use_gvf=use_gvf))
                set_train_mode(train_model, cfg.freeze_bn)
            history.append(row)
            if "valid_score" in row and row["valid_score"] > best["score"]:
                best = {"epoch": epoch + 1, "score": row["valid_score"]}
                if dist.is_main:
                    save_model(best_path, model, arch=cfg.encoder, clip=clip, prep=built.prep,
                               backbone_only=False, extra={"epoch": epoch + 1})
            if dist.is_main:
                save_state(state_path, state(epoch + 1, 0))
            log.info("epoch %d/%d: %s", epoch + 1, cfg.epochs,
                     ", ".join(f"{k} {v:.4g}" for k, v in row.items() if k != "epoch"))
            if on_metrics is not None:
                on_metrics((epoch + 1) * steps, {f"epoch/{k}": v for k, v in row.items()})
    del loader  # stops persistent workers
    dataset.close()

    # -- export -----------------------------------------------------------------------------
    if not history:
        raise StateError(f"{state_path}: no finished epoch to export (epochs: {cfg.epochs})")
    last = int(history[-1]["epoch"])
    exported = int(best["epoch"]) if cfg.export_epoch == "best" and best["epoch"] else last
    model_path, encoder_path = out_dir / "model.pt", out_dir / "checkpoint.pt"
    extra = {"epoch": exported, "init_sha256": built.init_sha256}
    if dist.is_main:  # only rank 0 writes, so only it needs the best epoch's weights back
        if exported != last:
            load_into(unwrap(model), best_path, part="all", strict=True)
        save_model(model_path, model, arch=cfg.encoder, clip=clip, prep=built.prep,
                   backbone_only=False, extra=extra)
        save_model(encoder_path, model, arch=cfg.encoder, clip=clip, prep=built.prep,
                   backbone_only=True, extra=extra)
    dist.barrier()
    return PretrainResult(
        encoder_checkpoint=encoder_path, model_checkpoint=model_path, state=state_path,
        encoder_sha256=sha256_file(encoder_path), epochs=history,
        best_epoch=best["epoch"], exported_epoch=exported, counts=counts,
        steps_per_epoch=steps, world_size=dist.world_size, resumed_from=resumed_from,
        init_sha256=built.init_sha256)


def make_loader(dataset: ClipDataset, batches: BatchPlan, workers: int,
                device: torch.device) -> DataLoader:
    """The training loop's loader: ``batches`` picks what it serves (set before each
    ``iter``); ``workers`` spawned processes (one intra-op thread each, :func:`worker_init`)
    that persist across epochs and validation, so each keeps its open video readers and GVF
    file for the whole run; 0: read in this process."""
    return DataLoader(dataset, batch_sampler=batches, num_workers=workers,
                      pin_memory=device.type == "cuda",
                      worker_init_fn=worker_init if workers else None,
                      multiprocessing_context="spawn" if workers else None,
                      persistent_workers=workers > 0, prefetch_factor=2 if workers else None)
