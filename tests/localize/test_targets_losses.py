"""BMN targets and losses on hand-computed cases; a few Adam steps lower the loss."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from tspipe.errors import ShapeError
from tspipe.localize.bmn import BMN, BMNOutput, valid_mask
from tspipe.localize.losses import (
    LossParts,
    bmn_loss,
    boundary_loss,
    pem_cls_loss,
    pem_reg_loss,
    sample_reg_cells,
)
from tspipe.localize.targets import BMNTargets, SegmentError, bmn_targets, stack_targets


def log(x: float) -> float:
    return math.log(x + 1e-6)  # the losses' eps


# ---------------------------------------------------------------------------------- targets


def test_iou_map_of_one_segment_by_hand() -> None:
    # T = 10, gap 0.1, one segment [0.23, 0.57]; cell (s, e) is [s/10, (e+1)/10].
    iou = bmn_targets([(0.23, 0.57)], 10).iou_map
    assert iou.shape == (10, 10) and iou.dtype == np.float32
    cases = {
        (2, 5): 0.34 / 0.40,  # [0.2, 0.6] holds the segment: 0.34 of 0.40
        (2, 4): 0.27 / 0.37,  # [0.2, 0.5]: shared [0.23, 0.5], union [0.2, 0.57]
        (3, 5): 0.27 / 0.37,  # [0.3, 0.6]: shared [0.3, 0.57], union [0.23, 0.6]
        (0, 9): 0.34 / 1.00,  # the whole video
        (6, 8): 0.0,          # [0.6, 0.9]: apart
        (5, 2): 0.0,          # start > end: not a proposal
    }
    for (s, e), expected in cases.items():
        assert iou[s, e] == pytest.approx(expected, abs=1e-6), (s, e)
    assert np.unravel_index(iou.argmax(), iou.shape) == (2, 5)
    assert not iou[~valid_mask(10).numpy()].any()


def test_boundary_targets_peak_at_the_segment_boundaries() -> None:
    t = bmn_targets([(0.23, 0.57)], 10)
    # Start region [0.23 - 0.15, 0.23 + 0.15] = [0.08, 0.38] against anchors [k-0.5, k+0.5]/10:
    # k=1 [0.05, 0.15] shares 0.07 -> 0.7; k=2, 3 inside -> 1; k=4 [0.35, 0.45] -> 0.3.
    np.testing.assert_allclose(t.start, [0, 0.7, 1, 1, 0.3, 0, 0, 0, 0, 0], atol=1e-6)
    # End region [0.42, 0.72]: k=4 -> 0.3, k=5, 6 -> 1, k=7 [0.65, 0.75] -> 0.7.
    np.testing.assert_allclose(t.end, [0, 0, 0, 0, 0.3, 1, 1, 0.7, 0, 0], atol=1e-6)


def test_two_segments_take_the_max() -> None:
    both = bmn_targets(np.array([[0.1, 0.3], [0.6, 0.9]]), 10)
    first, second = bmn_targets([(0.1, 0.3)], 10), bmn_targets([(0.6, 0.9)], 10)
    for field in BMNTargets._fields:
        np.testing.assert_array_equal(getattr(both, field),
                                      np.maximum(getattr(first, field), getattr(second, field)))
    assert both.iou_map[1, 2] == pytest.approx(1.0) and both.iou_map[6, 8] == pytest.approx(1.0)


def test_segments_are_clipped_to_the_video() -> None:
    past = bmn_targets([(0.8, 1.3)], 10)
    clipped = bmn_targets([(0.8, 1.0)], 10)
    for field in BMNTargets._fields:
        np.testing.assert_array_equal(getattr(past, field), getattr(clipped, field))
    # Unclipped, cell (8, 9) = [0.8, 1.0] would score 0.2 / 0.5; clipped it is the segment.
    assert past.iou_map[8, 9] == pytest.approx(1.0)
    assert bmn_targets([(-0.2, 0.1)], 10).iou_map[0, 0] == pytest.approx(1.0)


def test_no_segment_gives_zero_targets_and_bad_ones_are_named() -> None:
    empty = bmn_targets([], 8)
    assert empty.iou_map.shape == (8, 8) and not empty.iou_map.any()
    assert not empty.start.any() and not empty.end.any()
    with pytest.raises(SegmentError, match=r"video 'v1': segment 1: \[0.5, 0.2\]"):
        bmn_targets([(0.1, 0.2), (0.5, 0.2)], 8, video_id="v1")
    with pytest.raises(SegmentError, match=r"\(K, 2\)"):
        bmn_targets([0.1, 0.2, 0.3], 8)


def test_stack_targets_batches_as_float32_tensors() -> None:
    batch = stack_targets([bmn_targets([(1 / 6, 0.5)], 6), bmn_targets([], 6)])
    assert batch.iou_map.shape == (2, 6, 6) and batch.start.shape == (2, 6)
    assert batch.iou_map.dtype == torch.float32
    assert float(batch.iou_map[0, 1, 2]) == pytest.approx(1.0)  # [1/6, 3/6] is on the grid
    assert float(batch.iou_map[1].abs().sum()) == 0.0


# ---------------------------------------------------------------------------------- losses


def test_boundary_loss_by_hand() -> None:
    pred = torch.tensor([[0.9, 0.2, 0.6, 0.1]])
    target = torch.tensor([[1.0, 0.0, 0.3, 0.2]])  # one positive (> 0.5) of n = 4
    # r = 4: positive weight 0.5 r = 2, negative weight 0.5 r / (r - 1) = 2/3; mean over 4.
    expected = -(2 * log(0.9) + 2 / 3 * (log(0.8) + log(0.4) + log(0.9))) / 4
    assert float(boundary_loss(pred, target)) == pytest.approx(expected, rel=1e-6)
    # No positive: the negatives weigh 0.5 (the limit as n_pos -> 0), finite.
    no_pos = -(0.5 * (log(0.1) + log(0.8) + log(0.4) + log(0.9))) / 4
    assert float(boundary_loss(pred, torch.zeros(1, 4))) == pytest.approx(no_pos, rel=1e-6)
    # All positive (r == 1): the positives weigh 0.5.
    all_pos = -(0.5 * (log(0.9) + log(0.2) + log(0.6) + log(0.1))) / 4
    assert float(boundary_loss(pred, torch.ones(1, 4))) == pytest.approx(all_pos, rel=1e-6)


CLS_IOU = torch.tensor([[[0.95, 0.50, 0.20],
                         [0.00, 0.92, 0.10],
                         [0.00, 0.00, 0.30]]])
CLS_PRED = torch.tensor([[[0.8, 0.3, 0.1],
                          [0.6, 0.7, 0.2],
                          [0.9, 0.5, 0.4]]])


def test_pem_cls_loss_by_hand() -> None:
    mask = valid_mask(3)
    # Valid cells: positives (0,0), (1,1); negatives (0,1), (0,2), (1,2), (2,2): n = 6,
    # r = 3, positive weight 1.5, negative weight 0.75; sum / 6.
    pos = log(0.8) + log(0.7)
    neg = log(0.7) + log(0.9) + log(0.8) + log(0.6)
    expected = -(1.5 * pos + 0.75 * neg) / 6
    assert float(pem_cls_loss(CLS_PRED, CLS_IOU, mask)) == pytest.approx(expected, rel=1e-6)
    # Cells below the diagonal are not proposals: their predictions do not count.
    other = CLS_PRED.clone()
    other[0, 1, 0] = other[0, 2, 0] = other[0, 2, 1] = 0.01
    assert float(pem_cls_loss(other, CLS_IOU, mask)) == pytest.approx(expected, rel=1e-6)
    # G-TAD THUMOS: n_pos' = 12, n_all = 10 + 12 + 4 = 26, r = 26/12: weights 13/12 and
    # 0.5 * 26 / 14 = 13/14; sum / 26.
    thumos = -(13 / 12 * pos + 13 / 14 * neg) / 26
    got = pem_cls_loss(CLS_PRED, CLS_IOU, mask, thumos=True)
    assert float(got) == pytest.approx(thumos, rel=1e-6)


def _reg_case() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """6x6 map: 2 high cells, 6 mid, 8 low, the rest 0; random predictions."""
    iou = torch.zeros(1, 6, 6)
    cells = [(s, e) for s in range(6) for e in range(s, 6)]  # 21 valid cells
    values = [0.9, 0.8] + [0.5] * 6 + [0.2] * 8
    for (s, e), v in zip(cells, values, strict=False):
        iou[0, s, e] = v
    iou[0, 5, 0] = 0.95  # below the diagonal: never used
    pred = torch.rand(1, 6, 6, generator=torch.Generator().manual_seed(9))
    return iou, pred, valid_mask(6)


def test_reg_sampling_follows_the_seeded_generator() -> None:
    iou, pred, mask = _reg_case()
    cells = sample_reg_cells(iou, mask, torch.Generator().manual_seed(5))
    # Rebuild it from the contract: two uniform maps (mid, then low), kept with
    # probability n_high / n_mid = 2/6 and n_high / n_low = 2/8.
    g = torch.Generator().manual_seed(5)
    u_mid, u_low = torch.rand(1, 6, 6, generator=g), torch.rand(1, 6, 6, generator=g)
    valid = mask.expand(1, 6, 6)
    high = (iou > 0.7) & valid
    mid = (iou > 0.3) & (iou <= 0.7) & (u_mid < 2 / 6)
    low = (iou > 0) & (iou <= 0.3) & valid & (u_low < 2 / 8)
    assert torch.equal(cells, high | mid | low)
    assert not cells[0, 5, 0] and bool(cells[0, 0, 0]) and bool(cells[0, 0, 1])
    sel = cells.float()
    expected = 0.5 * float(((pred - iou) ** 2 * sel).sum()) / float(sel.sum())
    loss = pem_reg_loss(pred, iou, mask, generator=torch.Generator().manual_seed(5))
    assert float(loss) == pytest.approx(expected, rel=1e-6)
    again = pem_reg_loss(pred, iou, mask, generator=torch.Generator().manual_seed(5))
    assert float(again) == float(loss)


def test_reg_keeps_every_binned_cell_when_high_cells_dominate() -> None:
    iou = torch.tensor([[[0.9, 0.8, 0.5], [0.0, 0.2, 0.0], [0.0, 0.0, 0.75]]])
    pred = torch.tensor([[[0.5, 0.5, 0.5], [0.5, 0.5, 0.5], [0.5, 0.5, 0.5]]])
    # 3 high, 1 mid, 1 low: both probabilities cap at 1; the two IoU-0 cells stay out.
    expected = 0.5 * (0.4**2 + 0.3**2 + 0.0**2 + 0.3**2 + 0.25**2) / 5
    got = pem_reg_loss(pred, iou, valid_mask(3), generator=torch.Generator().manual_seed(0))
    assert float(got) == pytest.approx(expected, rel=1e-6)
    # Nothing above 0.7: nothing is sampled, the loss is 0 (the reference: 0 / 0).
    none = pem_reg_loss(pred, iou * 0.5, valid_mask(3))
    assert float(none) == 0.0


def _output(t: int, seed: int) -> BMNOutput:
    g = torch.Generator().manual_seed(seed)
    return BMNOutput(confidence_map=torch.rand(2, 2, t, t, generator=g) * 0.98 + 0.01,
                     start=torch.rand(2, t, generator=g), end=torch.rand(2, t, generator=g))


def test_total_is_tem_plus_ten_reg_plus_cls() -> None:
    targets = stack_targets([bmn_targets([(0.2, 0.6)], 10), bmn_targets([(0.5, 0.9)], 10)])
    out, mask = _output(10, 1), valid_mask(10)
    parts = bmn_loss(out, targets, mask, generator=torch.Generator().manual_seed(3))
    assert isinstance(parts, LossParts)
    tem = boundary_loss(out.start, targets.start) + boundary_loss(out.end, targets.end)
    reg = pem_reg_loss(out.confidence_map[:, 0], targets.iou_map, mask,
                       generator=torch.Generator().manual_seed(3))
    cls = pem_cls_loss(out.confidence_map[:, 1], targets.iou_map, mask)
    assert float(parts.tem) == pytest.approx(float(tem), rel=1e-6)
    assert float(parts.pem_reg) == pytest.approx(float(reg), rel=1e-6)
    assert float(parts.pem_cls) == pytest.approx(float(cls), rel=1e-6)
    assert float(parts.total) == pytest.approx(float(tem + 10 * reg + cls), rel=1e-6)
    assert all(float(p) > 0 for p in parts)
    gtad = bmn_loss(out, targets, mask, reg_weight=1.0, cls_weight=10.0, thumos=True,
                    generator=torch.Generator().manual_seed(3))
    assert float(gtad.total) == pytest.approx(
        float(gtad.tem + gtad.pem_reg + 10 * gtad.pem_cls), rel=1e-6)
    with pytest.raises(ShapeError, match="IoU map"):
        bmn_loss(out, targets._replace(iou_map=targets.iou_map[:, :9, :9]), mask)


def test_loss_is_float32_under_autocast() -> None:
    targets = stack_targets([bmn_targets([(0.2, 0.6)], 10), bmn_targets([(0.5, 0.9)], 10)])
    out = _output(10, 2)
    half = BMNOutput(*(t.bfloat16() for t in out))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        parts = bmn_loss(half, targets, valid_mask(10), generator=torch.Generator().manual_seed(0))
    assert all(p.dtype == torch.float32 for p in parts)
    ref = bmn_loss(half, targets, valid_mask(10), generator=torch.Generator().manual_seed(0))
    assert float(parts.total) == pytest.approx(float(ref.total), rel=1e-6)


# A net this small gains nothing from intra-op threads, and on a busy 2-core machine
# their spin-waits made these 30 steps take 12-25 s instead of about 1 s.
def test_a_few_adam_steps_lower_the_loss(one_torch_thread) -> None:
    torch.manual_seed(0)
    t = 16
    segments = [(0.25, 0.5), (0.5, 0.875)]
    targets = stack_targets([bmn_targets([seg], t) for seg in segments])
    x = 0.1 * torch.randn(2, 8, t)
    for i, (lo, hi) in enumerate(segments):  # channel 0 marks the action
        x[i, 0, round(lo * t):round(hi * t)] += 1.0
    net = BMN(feat_dim=8, temporal_scale=t, hidden_1d=16, hidden_2d=8, hidden_3d=16,
              num_sample=4, num_sample_perbin=2)
    # BMN's recipe has lr 1e-3 over 9 epochs; 1e-2 shows the fall within 30 steps.
    opt = torch.optim.Adam(net.parameters(), lr=1e-2, weight_decay=1e-4)
    mask = valid_mask(t)

    def loss() -> LossParts:  # the same reg cells every time
        with torch.no_grad():
            return bmn_loss(net(x), targets, mask, generator=torch.Generator().manual_seed(0))

    before = loss()
    for step in range(30):
        opt.zero_grad()
        bmn_loss(net(x), targets, mask,
                 generator=torch.Generator().manual_seed(step)).total.backward()
        opt.step()
    after = loss()
    assert float(after.total) < 0.6 * float(before.total)
    for name in ("tem", "pem_reg", "pem_cls"):
        assert float(getattr(after, name)) < float(getattr(before, name)), name
