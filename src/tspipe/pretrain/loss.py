"""TSP's loss: cross-entropy per head, weighted and summed.

``total = alpha_region * CE(region) + alpha_action * CE(action, ignore_index=-1)``: the
action head learns from foreground clips only (a background clip has no action label).
Each term is a *sum* of per-clip losses divided by a count, so that

- a batch with no foreground clip gives an action term of 0 (the reference divides 0 by
  0 and gets NaN), with a graph that reaches the action head (zero gradients: DDP sees
  every parameter used);
- the counts can be those of the whole optimizer step rather than of the micro-batch:
  summing micro-batch losses over gradient-accumulation steps and DDP ranks then gives
  exactly the loss of the global batch (a per-rank mean would weight a rank's foreground
  clips by how many it happened to get).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from tspipe.models.heads import TSPOutput

IGNORE = -1  # action label of a background clip


class LossTerms(NamedTuple):
    """``total`` is what to backpropagate; ``action`` and ``region`` are its unweighted
    terms (``region`` is None in TAC mode). All are 0-d tensors."""

    total: Tensor
    action: Tensor
    region: Tensor | None


def tsp_loss(out: TSPOutput, action: Tensor, region: Tensor | None, *,
             alpha_action: float = 1.0, alpha_region: float = 1.0,
             num_clips: int | Tensor | None = None,
             num_foreground: int | Tensor | None = None) -> LossTerms:
    """The weighted loss of one batch.

    ``out.action_logits (N, C)``, ``out.region_logits (N, 2)`` or None (TAC);
    ``action (N,)`` int64 with -1 for background, ``region (N,)`` int64 (0 Action,
    1 No action). ``num_clips`` and ``num_foreground`` default to this batch's counts
    (plain means); pass the optimizer step's counts when the step spans several batches.
    A count of 0 foreground clips gives an action term of 0.
    """
    if num_foreground is None:
        num_foreground = (action != IGNORE).sum()
    if num_clips is None:
        num_clips = action.shape[0]
    action_sum = F.cross_entropy(out.action_logits.float(), action, ignore_index=IGNORE,
                                 reduction="sum")
    action_term = action_sum / _at_least_one(num_foreground)
    total = alpha_action * action_term
    region_term = None
    if out.region_logits is not None:
        if region is None:
            raise ValueError("tsp_loss: the model has a region head but no region labels "
                             "were given")
        region_sum = F.cross_entropy(out.region_logits.float(), region, reduction="sum")
        region_term = region_sum / _at_least_one(num_clips)
        total = total + alpha_region * region_term
    return LossTerms(total, action_term, region_term)


def _at_least_one(count: int | Tensor) -> int | Tensor:
    if isinstance(count, Tensor):
        return count.clamp(min=1).to(torch.float32)
    return max(int(count), 1)
