"""BMN training targets from ground-truth segments (``shared/reference/localization.md``,
section 4, "Labels"). Maps use :mod:`tspipe.localize.bmn`'s ``[start, end]`` convention.

Segments are normalized to ``[0, 1]`` (seconds divided by the feature-covered duration) and
clipped there; ``gap = 1 / T``.

- IoU map, cell ``(s, e)``, ``s <= e``: the largest tIoU of ``[s * gap, (e + 1) * gap]`` with
  any segment. Cells with ``s > e`` are 0.
- Start (end) target at position ``k``: the largest IoA (intersection over the anchor's
  length) of the anchor ``[(k - 0.5) * gap, (k + 0.5) * gap]`` with a region of width
  ``3 * gap`` centred on any segment's start (end): the facts give 3·gap, so a boundary on
  the grid marks three positions fully.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch

from tspipe.errors import TspipeError

BOUNDARY_REGION_GAPS = 3.0  # width of the region around a boundary, in gaps (facts, sec. 4)


class SegmentError(TspipeError):
    """A ground-truth segment cannot become a target (wrong shape, not finite, start > end)."""


class BMNTargets(NamedTuple):
    """One video's targets as float32 numpy arrays: ``iou_map`` ``(T, T)`` indexed
    ``[start, end]``, ``start`` and ``end`` ``(T,)``; after :func:`stack_targets`, tensors
    ``(N, T, T)``, ``(N, T)``, ``(N, T)``."""

    iou_map: np.ndarray | torch.Tensor
    start: np.ndarray | torch.Tensor
    end: np.ndarray | torch.Tensor


def bmn_targets(segments: np.ndarray | Sequence[tuple[float, float]], temporal_scale: int, *,
                video_id: str | None = None) -> BMNTargets:
    """Targets for one video from its segments ``(K, 2)`` (``[start, end]``, normalized);
    ``K = 0`` gives all-zero targets. ``video_id`` only names the video in errors."""
    seg = _checked_segments(segments, video_id)
    t = temporal_scale
    gap = 1.0 / t
    k = np.arange(t, dtype=np.float64)
    iou = _max_tiou(k[:, None] * gap, (k[None, :] + 1) * gap, seg)
    iou = np.where(np.triu(np.ones((t, t), dtype=bool)), iou, 0.0)
    anchor_lo, anchor_hi = (k - 0.5) * gap, (k + 0.5) * gap
    start = _max_ioa(anchor_lo, anchor_hi, seg[:, 0], BOUNDARY_REGION_GAPS * gap)
    end = _max_ioa(anchor_lo, anchor_hi, seg[:, 1], BOUNDARY_REGION_GAPS * gap)
    return BMNTargets(iou_map=iou.astype(np.float32), start=start.astype(np.float32),
                      end=end.astype(np.float32))


def stack_targets(items: Sequence[BMNTargets],
                  device: torch.device | str | None = None) -> BMNTargets:
    """A batch of per-video targets as tensors ``(N, T, T)``, ``(N, T)``, ``(N, T)``."""
    def stack(field: str) -> torch.Tensor:
        arrays = [np.asarray(getattr(item, field)) for item in items]
        return torch.from_numpy(np.stack(arrays)).to(device=device, dtype=torch.float32)

    return BMNTargets(iou_map=stack("iou_map"), start=stack("start"), end=stack("end"))


def _checked_segments(segments: np.ndarray | Sequence[tuple[float, float]],
                      video_id: str | None) -> np.ndarray:
    """``(K, 2)`` float64, clipped to ``[0, 1]``; raises :class:`SegmentError` naming the
    video and the segment's index."""
    who = f"video {video_id!r}: " if video_id is not None else ""
    seg = np.asarray(segments, dtype=np.float64)
    if seg.size == 0:
        return np.zeros((0, 2))
    if seg.ndim != 2 or seg.shape[1] != 2:
        raise SegmentError(f"{who}segments must be (K, 2) [start, end] rows, "
                           f"got shape {seg.shape}")
    bad = np.flatnonzero(~np.isfinite(seg).all(axis=1) | (seg[:, 0] > seg[:, 1]))
    if len(bad):
        i = int(bad[0])
        raise SegmentError(f"{who}segment {i}: [{seg[i, 0]}, {seg[i, 1]}] must be finite "
                           f"with start <= end")
    return np.clip(seg, 0.0, 1.0)


def _max_tiou(lo: np.ndarray, hi: np.ndarray, seg: np.ndarray) -> np.ndarray:
    """Largest tIoU of the intervals ``[lo, hi]`` (broadcast together) with any segment;
    0 where there is none or the union is empty."""
    lo, hi = np.broadcast_arrays(lo, hi)
    if len(seg) == 0:
        return np.zeros(lo.shape)
    gs, ge = seg[:, 0], seg[:, 1]
    inter = np.maximum(0.0, np.minimum(hi[..., None], ge) - np.maximum(lo[..., None], gs))
    union = (hi - lo)[..., None] + (ge - gs) - inter
    tiou = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
    return tiou.max(axis=-1)


def _max_ioa(anchor_lo: np.ndarray, anchor_hi: np.ndarray, boundaries: np.ndarray,
             width: float) -> np.ndarray:
    """Largest intersection over the anchor's length of each anchor ``[lo, hi]`` with the
    regions of ``width`` centred on the boundaries."""
    if len(boundaries) == 0:
        return np.zeros(anchor_lo.shape)
    half = 0.5 * width
    inter = np.maximum(0.0, np.minimum(anchor_hi[:, None], boundaries + half)
                       - np.maximum(anchor_lo[:, None], boundaries - half))
    return (inter / (anchor_hi - anchor_lo)[:, None]).max(axis=1)
