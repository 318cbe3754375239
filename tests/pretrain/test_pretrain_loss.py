"""TSP's loss against hand-computed cross-entropies, and the no-foreground guard."""

from __future__ import annotations

import math

import pytest
import torch

from tspipe.models.heads import TSPOutput
from tspipe.pretrain.loss import tsp_loss


def ce(logits: list[float], target: int) -> float:
    return -logits[target] + math.log(sum(math.exp(v) for v in logits))


ACTION = [[2.0, 0.0, -1.0], [0.5, 0.5, 0.5], [0.0, 3.0, 1.0]]
REGION = [[1.0, -1.0], [0.0, 2.0], [0.3, 0.3]]


def output(action=ACTION, region=REGION, *, grad=False) -> TSPOutput:
    a = torch.tensor(action, requires_grad=grad)
    r = None if region is None else torch.tensor(region, requires_grad=grad)
    return TSPOutput(a, r, torch.zeros(len(action), 4))


def test_weighted_sum_of_head_losses_by_hand():
    action = torch.tensor([0, -1, 2])  # the middle clip is background
    region = torch.tensor([0, 1, 0])
    terms = tsp_loss(output(), action, region, alpha_action=0.7, alpha_region=2.0)
    want_action = (ce(ACTION[0], 0) + ce(ACTION[2], 2)) / 2  # foreground clips only
    want_region = (ce(REGION[0], 0) + ce(REGION[1], 1) + ce(REGION[2], 0)) / 3
    assert terms.action.item() == pytest.approx(want_action, rel=1e-6)
    assert terms.region.item() == pytest.approx(want_region, rel=1e-6)
    assert terms.total.item() == pytest.approx(0.7 * want_action + 2.0 * want_region, rel=1e-6)


def test_step_counts_normalize_a_share_of_the_global_batch():
    # Two halves of a batch, each divided by the whole batch's counts, add up to the whole.
    action, region = torch.tensor([0, -1, 2]), torch.tensor([0, 1, 0])
    whole = tsp_loss(output(), action, region)
    parts = [tsp_loss(output(ACTION[s], REGION[s]), action[s], region[s], num_clips=3,
                      num_foreground=2) for s in (slice(0, 1), slice(1, 3))]
    assert sum(p.total.item() for p in parts) == pytest.approx(whole.total.item(), rel=1e-6)


def test_no_foreground_clip_gives_zero_action_term_not_nan():
    out = output(grad=True)
    terms = tsp_loss(out, torch.tensor([-1, -1, -1]), torch.tensor([1, 1, 1]))
    assert terms.action.item() == 0.0
    want_region = (ce(REGION[0], 1) + ce(REGION[1], 1) + ce(REGION[2], 1)) / 3
    assert terms.total.item() == pytest.approx(want_region, rel=1e-6)
    terms.total.backward()
    # The action head is in the graph (DDP sees it used) with zero gradient.
    assert out.action_logits.grad is not None
    assert torch.equal(out.action_logits.grad, torch.zeros(3, 3))
    assert torch.isfinite(out.region_logits.grad).all()


def test_tac_has_only_the_action_term():
    terms = tsp_loss(output(region=None), torch.tensor([1, 1, 0]), None, alpha_action=0.5)
    want = (ce(ACTION[0], 1) + ce(ACTION[1], 1) + ce(ACTION[2], 0)) / 3
    assert terms.region is None
    assert terms.total.item() == pytest.approx(0.5 * want, rel=1e-6)
