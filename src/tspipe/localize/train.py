"""One training loop for BMN and G-TAD, and their inference to proposals in seconds.

The loop is flat (nanoGPT-style): shuffle, batch, forward under autocast on CUDA, the
BMN-style loss (:func:`~tspipe.localize.losses.bmn_loss`, which G-TAD shares), Adam,
StepLR, one metric per step through the reporter. The models differ only in their map
layout: BMN's ``[start, end]`` ``(T, T)``, G-TAD's ``[duration, start]`` ``(D, T)``;
targets are built once in BMN's layout and re-indexed for G-TAD.

Data (:func:`build_data`): each annotated video of a subset that has features, rescaled to
``scale`` positions (:func:`~tspipe.localize.features.rescale`); its segments normalized
by the duration the features cover (the last clip's end, else the annotated duration),
clipped to [0, 1]. Videos without features are reported by id and left out.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np
import torch
from torch import nn

from tspipe.data.annotations import Annotations
from tspipe.errors import StageError
from tspipe.localize import bmn, gtad
from tspipe.localize.bmn import BMN
from tspipe.localize.features import FeatureSet, rescale
from tspipe.localize.gtad import GTAD, to_duration_start
from tspipe.localize.losses import bmn_loss
from tspipe.localize.outputs import MapOutput
from tspipe.localize.postprocess import (
    Proposals,
    bmn_soft_nms,
    gtad_soft_nms,
    proposals_from_maps,
    to_seconds,
)
from tspipe.localize.targets import BMNTargets, bmn_targets, stack_targets
from tspipe.reporting import NullReporter, Reporter
from tspipe.runtime import autocast

log = logging.getLogger(__name__)

Method = Literal["bmn", "gtad"]
METHODS: tuple[str, ...] = ("bmn", "gtad")


@dataclass(frozen=True)
class Recipe:
    """Optimizer and schedule (localization.md: BMN 9 epochs, lr 1e-3, step 7; G-TAD on
    ActivityNet 10 epochs, lr 4e-3, step 5; both Adam, weight decay 1e-4, batch 16)."""

    epochs: int
    batch_size: int
    lr: float
    weight_decay: float
    step_size: int
    gamma: float = 0.1

    def steps_per_epoch(self, videos: int) -> int:
        return -(-videos // self.batch_size)

    def at_least(self, min_steps: int, videos: int) -> Recipe:
        """This recipe with enough epochs for ``min_steps`` optimizer steps over ``videos``
        training videos, the LR step stretched by the same factor (rounded); unchanged
        when it already makes that many. The reference recipes assume ActivityNet's 10,024
        training videos (627 steps an epoch at batch 16); SynthActions' 9 make one."""
        per_epoch = self.steps_per_epoch(videos)
        if min_steps <= self.epochs * per_epoch:
            return self
        epochs = -(-min_steps // per_epoch)
        return replace(self, epochs=epochs,
                       step_size=max(1, round(self.step_size * epochs / self.epochs)))


RECIPES: dict[str, Recipe] = {
    "bmn": Recipe(epochs=9, batch_size=16, lr=1e-3, weight_decay=1e-4, step_size=7),
    "gtad": Recipe(epochs=10, batch_size=16, lr=4e-3, weight_decay=1e-4, step_size=5),
}


@dataclass(frozen=True)
class LocalizationData:
    """``features`` ``(N, C, T)`` float32; ``targets`` stacked in BMN's ``[start, end]``
    layout; ``durations`` ``(N,)`` seconds that normalized position 1.0 stands for."""

    video_ids: list[str]
    features: torch.Tensor
    targets: BMNTargets
    durations: np.ndarray

    @property
    def scale(self) -> int:
        return int(self.features.shape[-1])

    @property
    def feat_dim(self) -> int:
        return int(self.features.shape[1])


def build_data(ann: Annotations, feats: FeatureSet, *, subset: str, scale: int
               ) -> LocalizationData:
    """The ``subset``'s videos that have features (others reported by id, left out)."""
    ids, targets, durations, lacking = [], [], [], []
    for vid in sorted(v for v, video in ann.videos.items() if video.subset == subset):
        if vid not in feats:
            lacking.append(vid)
            continue
        video, vf = ann.videos[vid], feats[vid]
        duration = vf.covered_duration or video.duration
        if not duration:
            lacking.append(vid)
            log.warning("%s: video %r has no duration (features nor annotations): left out",
                        feats.source, vid)
            continue
        seg = np.array([[s.t_start, s.t_end] for s in video.segments],
                       dtype=np.float64).reshape(-1, 2)
        ids.append(vid)
        targets.append(bmn_targets(np.clip(seg / duration, 0.0, 1.0), scale, video_id=vid))
        durations.append(float(duration))
    if lacking:
        log.warning("%s: %d %s videos without usable features left out: %s", feats.source,
                    len(lacking), subset, ", ".join(lacking[:5])
                    + (f" (+{len(lacking) - 5} more)" if len(lacking) > 5 else ""))
    if not ids:
        raise StageError(f"{feats.source}: no {subset} video has features")
    # Rescaled straight into the (N, C, T) array: a list of per-video arrays stacked at
    # the end held every video twice at the peak (ActivityNet size, 512-d: 1 GB more
    # peak RSS and 25 s instead of 18, benchmarks/evaluate_scale.py).
    xs = np.empty((len(ids), feats[ids[0]].features.shape[1], scale), dtype=np.float32)
    for row, vid in enumerate(ids):
        xs[row] = rescale(feats[vid].features, scale).T
    return LocalizationData(ids, torch.from_numpy(xs), stack_targets(targets),
                            np.array(durations))


# Layer sizes: the papers' ("reference") and a CPU-sized variant ("small": a quarter of the
# widths, 8 samples per bin / RoI): same code, for SynthActions-scale runs on a CPU.
SIZES: dict[str, dict[str, dict[str, int]]] = {
    "reference": {"bmn": {}, "gtad": {}},
    "small": {"bmn": {"hidden_1d": 64, "hidden_2d": 32, "hidden_3d": 128, "num_sample": 8},
              "gtad": {"channels": 64, "roi_points": 8, "context_points": 4}},
}


def make_model(method: str, feat_dim: int, scale: int, size: str = "reference") -> nn.Module:
    """BMN or G-TAD (``max_duration`` = ``scale``) at the named layer ``size``."""
    if size not in SIZES:
        raise StageError(f"unknown model size {size!r}: choose one of {tuple(SIZES)}")
    if method == "bmn":
        return BMN(feat_dim, scale, **SIZES[size]["bmn"])
    if method == "gtad":
        return GTAD(feat_dim, temporal_scale=scale, max_duration=scale, **SIZES[size]["gtad"])
    raise StageError(f"unknown localization method {method!r}: choose one of {METHODS}")


def model_targets(method: str, out: MapOutput, targets: BMNTargets, scale: int
                  ) -> tuple[BMNTargets, torch.Tensor]:
    """Targets and valid-cell mask in the model's map layout."""
    device = out.confidence_map.device
    if method == "bmn":
        return targets, bmn.valid_mask(scale, device=device)
    d = out.confidence_map.shape[-2]
    return (BMNTargets(to_duration_start(targets.iou_map, d), targets.start, targets.end),
            gtad.valid_mask(scale, d, device=device))


@dataclass(frozen=True)
class EpochLoss:
    epoch: int
    total: float
    tem: float
    pem_reg: float
    pem_cls: float


def fit(method: str, model: nn.Module, data: LocalizationData, recipe: Recipe, *,
        device: torch.device, amp: bool = True, seed: int = 0,
        reporter: Reporter | None = None) -> list[EpochLoss]:
    """Train ``model`` on ``data``; the mean loss parts of every epoch."""
    reporter = reporter or NullReporter()
    torch.manual_seed(seed)
    model = model.to(device).train()
    opt = torch.optim.Adam(model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=recipe.step_size,
                                            gamma=recipe.gamma)
    order_gen = torch.Generator().manual_seed(seed)
    loss_gen = torch.Generator(device=device).manual_seed(seed)
    n, history, step = len(data.video_ids), [], 0
    steps_per_epoch = recipe.steps_per_epoch(n)
    reporter.start(f"{method} epochs", recipe.epochs)
    for epoch in range(recipe.epochs):
        sums = np.zeros(4)
        for idx in torch.randperm(n, generator=order_gen).split(recipe.batch_size):
            x = data.features[idx].to(device, non_blocking=True)
            t = BMNTargets(*(getattr(data.targets, f)[idx].to(device) for f in BMNTargets._fields))
            with autocast(device, "bf16" if amp else "off"):
                out = model(x)
            t, mask = model_targets(method, out, t, data.scale)
            parts = bmn_loss(out, t, mask, generator=loss_gen)
            opt.zero_grad(set_to_none=True)
            parts.total.backward()
            opt.step()
            values = [float(p.detach()) for p in parts]
            sums += values
            if steps_per_epoch > 1:  # else the step curve is the epoch curve again
                reporter.metric(f"{method}/train_loss_step", values[0], step)
            step += 1
        sched.step()
        mean = sums / steps_per_epoch
        history.append(EpochLoss(epoch, *map(float, mean)))
        for part, value in zip(("train_loss", "train_loss_tem", "train_loss_pem_reg",
                                "train_loss_pem_cls"), mean, strict=True):
            reporter.metric(f"{method}/{part}", float(value), epoch)
        reporter.advance(f"{method} epochs")
    return history


def predict(method: str, model: nn.Module, data: LocalizationData, *, device: torch.device,
            batch_size: int = 16, amp: bool = True, top_k: int = 100
            ) -> dict[str, Proposals]:
    """Per video, at most ``top_k`` proposals in seconds after the method's soft-NMS."""
    model = model.to(device).eval()
    convention = "start_end" if method == "bmn" else "duration_start"
    nms = bmn_soft_nms if method == "bmn" else gtad_soft_nms
    out_by_video: dict[str, Proposals] = {}
    with torch.inference_mode():
        for lo in range(0, len(data.video_ids), batch_size):
            x = data.features[lo:lo + batch_size].to(device)
            with autocast(device, "bf16" if amp else "off"):
                out = model(x)
            maps = out.confidence_map.float().cpu().numpy()
            start, end = out.start.float().cpu().numpy(), out.end.float().cpu().numpy()
            for row in range(len(x)):
                vid = data.video_ids[lo + row]
                cand = proposals_from_maps(start[row], end[row], maps[row, 0], maps[row, 1],
                                           convention=convention, scoring=method)
                kept = nms(cand.segments, cand.scores, top_k=top_k)
                out_by_video[vid] = Proposals(to_seconds(kept.segments,
                                                         data.durations[lo + row]),
                                              kept.scores)
    return out_by_video
