"""TSP's optimizer and learning-rate schedule.

SGD (momentum 0.9, weight decay 0.005 on every parameter, as the reference; AdamW with
``optimizer: adamw``, for training from scratch) over three
groups: the backbone's stem at lr 0 (frozen, as the reference; its parameters also get
``requires_grad=False``, which changes no number, since SGD moves no weight at lr 0, and
skips their gradients; with ``freeze_stem: false`` it trains at ``lr_backbone``), the
rest of the backbone at ``lr_backbone`` and the heads at ``lr_heads``, both given per
batch of 32 clips and scaled linearly with the global batch.

The schedule is per optimizer step (the reference's ``WarmupMultiStepLR`` with milestones
in iterations): a linear warm-up over ``warmup_epochs`` epochs from a factor of 1e-5,
then x ``lr_gamma`` at each milestone epoch. :func:`optimizer_step` steps both.
"""

from __future__ import annotations

import bisect
import logging
from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import nn
from torch.optim import SGD, AdamW, Optimizer
from torch.optim.lr_scheduler import LambdaLR, LRScheduler

from tspipe.config import PretrainConfig

log = logging.getLogger(__name__)

REFERENCE_BATCH = 32  # the batch the recipe's learning rates are given for
WARMUP_FACTOR = 1e-5  # the reference's warm-up start
GROUPS = ("stem", "backbone", "heads")  # param group order


class ParamGroups(NamedTuple):
    stem: list[nn.Parameter]
    backbone: list[nn.Parameter]
    heads: list[nn.Parameter]


def split_parameters(model: nn.Module) -> ParamGroups:
    """A TSP model's parameters: ``features.stem`` (if the backbone has one), the rest of
    ``features``, and everything else (the heads)."""
    backbone = getattr(model, "features", None)
    if not isinstance(backbone, nn.Module):
        raise TypeError(f"{type(model).__name__} has no `features` backbone")
    stem_module = getattr(backbone, "stem", None)
    stem_ids = {id(p) for p in stem_module.parameters()} if stem_module is not None else set()
    backbone_ids = {id(p) for p in backbone.parameters()}
    groups = ParamGroups([], [], [])
    for param in model.parameters():
        if id(param) in stem_ids:
            groups.stem.append(param)
        elif id(param) in backbone_ids:
            groups.backbone.append(param)
        else:
            groups.heads.append(param)
    if stem_module is None:
        log.warning("%s has no `stem`: nothing is frozen", type(backbone).__name__)
    return groups


def lr_scale(global_batch: int) -> float:
    """The recipe's linear scaling: learning rates are given per batch of 32."""
    return global_batch / REFERENCE_BATCH


def build_optimizer(model: nn.Module, cfg: PretrainConfig, global_batch: int) -> Optimizer:
    """``cfg.optimizer`` (SGD, or AdamW) with the groups ``GROUPS``; the stem at lr 0 and
    frozen when ``cfg.freeze_stem`` (the reference), else at the backbone's lr. Call before
    wrapping the model in DDP (a frozen parameter must be frozen when DDP registers its
    hooks)."""
    groups = split_parameters(model)
    if cfg.freeze_stem:
        for param in groups.stem:
            param.requires_grad_(False)
    scale = lr_scale(global_batch)
    param_groups = [
        {"params": groups.stem, "lr": 0.0 if cfg.freeze_stem else cfg.lr_backbone * scale,
         "name": "stem"},
        {"params": groups.backbone, "lr": cfg.lr_backbone * scale, "name": "backbone"},
        {"params": groups.heads, "lr": cfg.lr_heads * scale, "name": "heads"},
    ]
    if cfg.optimizer == "adamw":
        return AdamW(param_groups, lr=cfg.lr_backbone * scale, weight_decay=cfg.weight_decay)
    return SGD(param_groups, lr=cfg.lr_backbone * scale, momentum=cfg.momentum,
               weight_decay=cfg.weight_decay)


def lr_factor(step: int, steps_per_epoch: int, *, warmup_epochs: int,
              milestones: Sequence[int], gamma: float,
              warmup_factor: float = WARMUP_FACTOR) -> float:
    """The factor on the base learning rates at optimizer step ``step`` (0-based, over the
    whole run): ``warmup_factor * (1 - a) + a`` with ``a = step / warmup_steps`` during
    warm-up, times ``gamma`` per milestone reached (milestone ``m`` is reached at step
    ``m * steps_per_epoch``)."""
    warmup_steps = warmup_epochs * steps_per_epoch
    factor = 1.0
    if step < warmup_steps:
        alpha = step / warmup_steps
        factor = warmup_factor * (1 - alpha) + alpha
    passed = bisect.bisect_right([m * steps_per_epoch for m in milestones], step)
    return factor * gamma ** passed


def build_scheduler(optimizer: Optimizer, cfg: PretrainConfig, steps_per_epoch: int) -> LambdaLR:
    """:func:`lr_factor` per optimizer step; call ``step()`` after each ``optimizer.step()``.
    Its ``state_dict`` holds plain numbers only (the factor is a closure, rebuilt here)."""
    milestones = list(cfg.lr_milestones)

    def factor(step: int) -> float:
        return lr_factor(step, steps_per_epoch, warmup_epochs=cfg.warmup_epochs,
                         milestones=milestones, gamma=cfg.lr_gamma)

    return LambdaLR(optimizer, factor)


def group_lrs(optimizer: Optimizer) -> dict[str, float]:
    """The current learning rate of each named group."""
    return {g.get("name", str(i)): float(g["lr"]) for i, g in enumerate(optimizer.param_groups)}


def optimizer_step(optimizer: Optimizer, scheduler: LRScheduler,
                   scaler: torch.amp.GradScaler) -> dict[str, float]:
    """One optimizer step through the grad scaler, the gradients cleared, then one step of
    the schedule; the learning rates the step used (:func:`group_lrs`)."""
    lrs = group_lrs(optimizer)
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad(set_to_none=True)
    scheduler.step()
    return lrs
