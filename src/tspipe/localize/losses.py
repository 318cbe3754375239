"""BMN's losses (``shared/reference/localization.md`` section 4, "Losses"; the THUMOS
classification variant from section 5, G-TAD): total = TEM + 10 · PEM_reg + PEM_cls.

Counts (positives, negatives, IoU bins) are taken over the whole batch, as the reference
does. Maps follow :mod:`tspipe.localize.bmn`'s ``[start, end]`` convention; every map term is
restricted to the valid cells (``mask``). Everything is computed in float32 with autocast
off, so the log and the sums are exact enough under bf16/fp16 training.

Differences from the reference code, all where it would give NaN or select by accident:

- the weighted log-loss writes its weights as ``0.5 · n / n_pos`` and ``0.5 · n / n_neg``
  (the same as ``0.5 · r`` and ``0.5 · r / (r - 1)`` with ``r = n / n_pos``) and counts an
  empty class as 1: with no positives the negatives weigh 0.5 (the limit of the formula as
  ``n_pos -> 0``), with no negatives (``r == 1``) the positives weigh 0.5; never inf · 0;
- PEM_reg draws mid/low cells only from their own bin, with probability ``min(1, ratio)``
  (the reference's ``u · bin > 1 - ratio`` test selects every cell of the map, invalid
  ones included, once ``ratio > 1``); with nothing selected it is 0, not 0 / 0.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from tspipe.errors import ShapeError
from tspipe.localize.bmn import BMNOutput
from tspipe.localize.targets import BMNTargets

EPS = 1e-6  # inside the logs (facts, section 4)
CLS_POSITIVE_IOU = 0.9  # PEM_cls: positive above, negative at or below (within the mask)
REG_HIGH_IOU = 0.7  # PEM_reg bins: high (0.7, 1], mid (0.3, 0.7], low (0, 0.3]
REG_LOW_IOU = 0.3
THUMOS_CLS_PRIOR = 10.0  # G-TAD THUMOS: n_pos' = 10 + n_pos, n_all = 10 + n_pos' + n_neg


class LossParts(NamedTuple):
    """Scalar float32 tensors; ``total = tem + reg_weight · pem_reg + cls_weight · pem_cls``."""

    total: torch.Tensor
    tem: torch.Tensor
    pem_reg: torch.Tensor
    pem_cls: torch.Tensor


def bmn_loss(output: BMNOutput, targets: BMNTargets, mask: torch.Tensor, *,
             reg_weight: float = 10.0, cls_weight: float = 1.0,
             generator: torch.Generator | None = None, thumos: bool = False) -> LossParts:
    """BMN's loss for a batch: ``output`` from :class:`~tspipe.localize.bmn.BMN`,
    ``targets`` stacked (:func:`~tspipe.localize.targets.stack_targets`: ``iou_map``
    ``(N, T, T)``, ``start``/``end`` ``(N, T)``), ``mask`` ``(T, T)`` valid cells.

    ``generator`` drives PEM_reg's cell sampling (None: torch's global generator).
    ``thumos`` switches PEM_cls to G-TAD's THUMOS form; G-TAD's THUMOS total also weighs
    the terms differently (``reg_weight=1.0, cls_weight=10.0``).
    """
    iou_map = torch.as_tensor(targets.iou_map)
    with _float32(output.confidence_map):
        tem = (boundary_loss(output.start, torch.as_tensor(targets.start))
               + boundary_loss(output.end, torch.as_tensor(targets.end)))
        reg = pem_reg_loss(output.reg_map, iou_map, mask, generator=generator)
        cls = pem_cls_loss(output.cls_map, iou_map, mask, thumos=thumos)
        total = tem + reg_weight * reg + cls_weight * cls
    return LossParts(total=total, tem=tem, pem_reg=reg, pem_cls=cls)


def boundary_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """TEM loss of one head: weighted binary log-loss, positives ``target > 0.5``, mean over
    all ``(N, T)`` entries."""
    with _float32(pred):
        pred, target = pred.float(), target.to(pred.device, torch.float32)
        _check_shapes("boundary target", pred, target)
        positive = target > 0.5
        total = _weighted_log_sum(pred, positive, ~positive, n_all=float(pred.numel()))
        return total / pred.numel()


def pem_cls_loss(pred: torch.Tensor, iou_map: torch.Tensor, mask: torch.Tensor, *,
                 thumos: bool = False) -> torch.Tensor:
    """PEM classification loss: ``pred`` and ``iou_map`` ``(N, T, T)``, ``mask`` ``(T, T)``.
    Positives IoU > 0.9, negatives IoU <= 0.9, both within the mask; the weighted log-loss
    summed and divided by ``n_pos + n_neg``. ``thumos``: G-TAD's THUMOS form, with
    ``n_pos' = 10 + n_pos`` and ``n_all = 10 + n_pos' + n_neg`` in the weights and the
    divisor (the 10s keep it finite on windows without positives)."""
    with _float32(pred):
        pred, iou_map = pred.float(), iou_map.to(pred.device, torch.float32)
        _check_shapes("IoU map", pred, iou_map)
        valid = mask.to(pred.device, torch.bool).expand_as(pred)
        positive = (iou_map > CLS_POSITIVE_IOU) & valid
        negative = (iou_map <= CLS_POSITIVE_IOU) & valid
        n_pos, n_neg = positive.sum().float(), negative.sum().float()
        if thumos:
            n_pos = n_pos + THUMOS_CLS_PRIOR
            n_all = n_pos + n_neg + THUMOS_CLS_PRIOR
            n_neg = n_all - n_pos  # so that 0.5 · n_all / n_neg is 0.5 · r / (r - 1)
        else:
            n_all = n_pos + n_neg
        total = _weighted_log_sum(pred, positive, negative, n_all=n_all, n_pos=n_pos,
                                  n_neg=n_neg)
        return total / n_all.clamp(min=1.0)  # empty mask: 0, not 0 / 0


def sample_reg_cells(iou_map: torch.Tensor, mask: torch.Tensor,
                     generator: torch.Generator | None = None) -> torch.Tensor:
    """``(N, T, T)`` bool: the cells PEM_reg uses. Every valid cell with IoU > 0.7; each valid
    cell in (0.3, 0.7] with probability ``n_high / n_mid``, each in (0, 0.3] with
    ``n_high / n_low`` (probabilities capped at 1). Cells with IoU 0 are never used.

    Draws two uniform maps of ``iou_map``'s shape from ``generator`` (mid first, then low),
    on the generator's device, so a seeded CPU generator gives the same cells on any device.
    """
    valid = mask.to(iou_map.device, torch.bool).expand_as(iou_map)
    high = (iou_map > REG_HIGH_IOU) & valid
    mid = (iou_map > REG_LOW_IOU) & (iou_map <= REG_HIGH_IOU) & valid
    low = (iou_map > 0.0) & (iou_map <= REG_LOW_IOU) & valid
    n_high = high.sum().float()
    draw_on = generator.device if generator is not None else iou_map.device
    selected = high
    for cells in (mid, low):
        keep_prob = (n_high / cells.sum().float().clamp(min=1.0)).clamp(max=1.0)
        u = torch.rand(iou_map.shape, generator=generator, device=draw_on)
        selected = selected | (cells & (u.to(iou_map.device) < keep_prob))
    return selected


def pem_reg_loss(pred: torch.Tensor, iou_map: torch.Tensor, mask: torch.Tensor, *,
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """PEM regression loss: ``0.5 · Σ (pred - iou)²`` over :func:`sample_reg_cells`'s cells,
    divided by their number; 0 when none is selected (no cell with IoU > 0.7 in the batch
    selects nothing)."""
    with _float32(pred):
        pred, iou_map = pred.float(), iou_map.to(pred.device, torch.float32)
        _check_shapes("IoU map", pred, iou_map)
        selected = sample_reg_cells(iou_map, mask, generator).float()
        sse = ((pred - iou_map) ** 2 * selected).sum()
        return 0.5 * sse / selected.sum().clamp(min=1.0)


def _weighted_log_sum(pred: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor, *,
                      n_all: torch.Tensor | float, n_pos: torch.Tensor | None = None,
                      n_neg: torch.Tensor | None = None) -> torch.Tensor:
    """``-Σ [w_pos · log(p + eps) · pos + w_neg · log(1 - p + eps) · neg]`` with
    ``w_pos = 0.5 · n_all / n_pos``, ``w_neg = 0.5 · n_all / n_neg``. An empty class counts
    as 1: its term is zero anyway and the other class keeps its weight (see module doc)."""
    n_pos = positive.sum().float() if n_pos is None else n_pos
    n_neg = negative.sum().float() if n_neg is None else n_neg
    w_pos = 0.5 * n_all / n_pos.clamp(min=1.0)
    w_neg = 0.5 * n_all / n_neg.clamp(min=1.0)
    pos_term = (torch.log(pred + EPS) * positive).sum()
    neg_term = (torch.log(1.0 - pred + EPS) * negative).sum()
    return -(w_pos * pos_term + w_neg * neg_term)


def _check_shapes(what: str, pred: torch.Tensor, target: torch.Tensor) -> None:
    if pred.shape != target.shape:
        raise ShapeError(f"BMN loss: {what} has shape {tuple(target.shape)}, the prediction "
                          f"{tuple(pred.shape)}")


def _float32(like: torch.Tensor) -> torch.autocast:
    """Autocast off on ``like``'s device type: the losses run in float32."""
    return torch.autocast(device_type=like.device.type, enabled=False)
