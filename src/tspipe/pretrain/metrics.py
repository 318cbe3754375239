"""Per-epoch numbers: validation (summed over DDP ranks) and the training row; the numbers
of an optimizer step."""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from tspipe.config import PretrainConfig
from tspipe.pretrain.distributed import Dist
from tspipe.runtime import autocast


@torch.no_grad()
def validate(model: nn.Module, loader: DataLoader, dist: Dist, precision: str,
             cfg: PretrainConfig, *, tsp: bool, use_gvf: bool) -> dict[str, float]:
    """Validation over the loader's current plan (each rank its share), summed over ranks:
    loss, action accuracy on foreground clips, region accuracy and balanced accuracy
    (mean recall of Action and No action), and the score the best epoch is chosen by
    (TSP: mean of the two heads' accuracies, as the reference; TAC: action accuracy)."""
    model.eval()
    device = dist.device
    # action CE sum, action correct, foreground, region CE sum, clips, correct per region
    # class (2), clips per region class (2)
    sums = torch.zeros(9, dtype=torch.float64, device=device)
    for batch in loader:
        clips = batch.clip.to(device, non_blocking=True)
        action, region = batch.action.to(device), batch.region.to(device)
        with autocast(device, precision):
            out = model(clips, batch.gvf.to(device) if use_gvf else None)
        fg = action >= 0
        sums[0] += F.cross_entropy(out.action_logits.float(), action, ignore_index=-1,
                                   reduction="sum")
        sums[1] += (out.action_logits.argmax(1) == action)[fg].sum()
        sums[2] += fg.sum()
        sums[4] += len(action)
        if tsp:
            sums[3] += F.cross_entropy(out.region_logits.float(), region, reduction="sum")
            hit = out.region_logits.argmax(1) == region
            for c in (0, 1):
                sums[5 + c] += hit[region == c].sum()
                sums[7 + c] += (region == c).sum()
    s = dist.all_reduce_sum(sums).tolist()
    action_acc = s[1] / s[2] if s[2] else math.nan
    row = {"valid_action_acc": action_acc}
    loss = cfg.alpha_action * (s[0] / s[2] if s[2] else 0.0)
    if tsp:
        loss += cfg.alpha_region * s[3] / max(s[4], 1)
        region_acc = (s[5] + s[6]) / max(s[7] + s[8], 1)
        recalls = [s[5 + c] / s[7 + c] for c in (0, 1) if s[7 + c]]
        row.update(valid_region_acc=region_acc,
                   valid_region_bacc=sum(recalls) / len(recalls) if recalls else math.nan)
        row["valid_score"] = (action_acc + region_acc) / 2 if s[2] else region_acc
    else:
        row["valid_score"] = action_acc
    row["valid_loss"] = loss
    return row


def epoch_row(epoch: int, running: Mapping[str, float], steps: int, *,
               lrs: Mapping[str, float], tsp: bool) -> dict[str, float]:
    row = {"epoch": epoch + 1, "train_loss": running["loss"] / steps,
           "train_loss_action": running["loss_action"] / steps,
           "train_action_acc": running["action_correct"] / max(running["action_total"], 1)}
    if tsp:
        row["train_loss_region"] = running["loss_region"] / steps
        row["train_region_acc"] = running["region_correct"] / max(running["region_total"], 1)
    row.update(lr_backbone=lrs["backbone"], lr_heads=lrs["heads"],
               seconds=running["seconds"])
    return row




def plot_row(step: int, metrics: Mapping[str, float]) -> dict[str, float]:
    """A step's row of the steps report: ``step`` and its ``train/*`` metrics, unprefixed."""
    return {"step": step, **{k.removeprefix("train/"): v for k, v in metrics.items()}}


def step_row(stats: Mapping[str, float], lrs: Mapping[str, float],
             epoch: float) -> dict[str, float]:
    """An optimizer step's ``train/*`` metrics: its summed losses (``stats``), the lrs it
    used and the (fractional, from 0) ``epoch`` it ended at."""
    return {"train/loss": stats["loss"], "train/loss_action": stats["loss_action"],
            "train/loss_region": stats["loss_region"], "train/lr_backbone": lrs["backbone"],
            "train/lr_heads": lrs["heads"], "train/epoch": epoch}
