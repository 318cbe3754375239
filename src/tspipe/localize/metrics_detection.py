"""Detection mAP, exactly as the official ActivityNet ``eval_detection.py`` computes it
(the rule and its quirks: :mod:`tspipe.localize.metrics`): :func:`evaluate_detection` from
files or documents, :func:`detection_ap` on arrays (greedy matching in rounds, then VOC 2011
interpolated AP), :class:`DetectionResult`.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from tspipe.localize.metrics import ACTIVITYNET_TIOU, Counts, load_inputs, ranking, segment_tiou
from tspipe.localize.metrics_io import GroundTruth, PredictionError, Predictions


@dataclass(frozen=True)
class DetectionResult:
    """mAP per tIoU threshold and their mean; ``ap_per_class[i][c]`` is the AP of
    ``classes[c]`` at ``tiou_thresholds[i]``. All fractions in [0, 1]."""

    tiou_thresholds: tuple[float, ...]
    map_per_tiou: tuple[float, ...]
    average_map: float
    classes: tuple[str, ...]
    ap_per_class: tuple[tuple[float, ...], ...]
    counts: Counts

    def to_dict(self) -> dict[str, Any]:
        return {"tiou_thresholds": list(self.tiou_thresholds),
                "map_per_tiou": list(self.map_per_tiou), "average_map": self.average_map}

    def metrics(self) -> dict[str, float]:
        """Flat names for MLflow: ``average_map``, ``map_at_0.50``, ..."""
        out = {f"map_at_{t:.2f}": m for t, m in zip(self.tiou_thresholds, self.map_per_tiou,
                                                    strict=True)}
        return {"average_map": self.average_map, **out}


def evaluate_detection(gt: Any, pred: Any, *, tiou: Sequence[float] = ACTIVITYNET_TIOU,
                       subset: str = "validation",
                       blocked: Collection[str] = frozenset()) -> DetectionResult:
    """Interpolated AP per class and threshold, mAP per threshold and their average.

    ``gt``: a path (ActivityNet JSON or any annotation format), an ActivityNet document, an
    ``Annotations`` or a ``GroundTruth``; ``pred``: a result JSON path (``.json[.gz]``), a
    result document or ``Predictions``. ``blocked`` video ids leave both.
    """
    thresholds, truth, preds, video, counts = load_inputs(
        gt, pred, tiou, subset, blocked, with_labels=True,
        outside_fate="count as false positives of their class, as in the official evaluation")
    label = class_of(preds, truth)
    ap = detection_ap(truth, video, label, preds.t_start, preds.t_end, preds.score, thresholds)
    map_per_tiou = ap.mean(axis=1)
    return DetectionResult(
        tiou_thresholds=tuple(thresholds.tolist()), map_per_tiou=tuple(map_per_tiou.tolist()),
        average_map=float(map_per_tiou.mean()), classes=truth.classes,
        ap_per_class=tuple(tuple(row) for row in ap.tolist()), counts=counts)


def class_of(preds: Predictions, truth: GroundTruth) -> np.ndarray:
    """Each prediction's class index in ``truth.classes``; an unknown label is an error."""
    assert preds.labels is not None and preds.label is not None
    index = {c: i for i, c in enumerate(truth.classes)}
    per_label = np.array([index.get(name, -1) for name in preds.labels], dtype=np.int64)
    label = per_label[preds.label]
    if (label < 0).any():
        row = int(np.argmax(label < 0))
        video_id, entry = preds.where(row)
        raise PredictionError(
            preds.source, f"unknown label {preds.labels[preds.label[row]]!r}: no ground truth "
            f"of it in subset {truth.subset!r} (the official evaluation fails on it too)",
            video_id=video_id, entry=entry, field="label")
    return label


def detection_ap(truth: GroundTruth, video: np.ndarray, label: np.ndarray,
                 t_start: np.ndarray, t_end: np.ndarray, score: np.ndarray,
                 thresholds: np.ndarray) -> np.ndarray:
    """AP per threshold and class, ``(T, C)``, of N predictions given as ``(N,)`` arrays:
    ``video`` (index into ``truth.video_ids``, -1 for none), ``label`` (index into
    ``truth.classes``), times in seconds and scores."""
    n_pos = np.bincount(truth.label, minlength=len(truth.classes))
    if len(score) == 0:
        return np.zeros((len(thresholds), len(truth.classes)))
    order, tp = ranked_matches(truth, video, label, t_start, t_end, score, thresholds)
    return interpolated_ap(tp, label[order], n_pos)


def ranked_matches(truth: GroundTruth, video: np.ndarray, label: np.ndarray,
                   t_start: np.ndarray, t_end: np.ndarray, score: np.ndarray,
                   thresholds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The predictions' ranking (by class, then score: ``order (N,)``) and the true
    positives ``(T, N)`` of the ranked predictions: what :func:`detection_ap` scores."""
    order = ranking(label, score)
    return order, _match(truth, video[order], label[order], t_start[order], t_end[order],
                         thresholds)


def _match(truth: GroundTruth, video: np.ndarray, label: np.ndarray, t_start: np.ndarray,
           t_end: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """True positives ``(T, N)`` of predictions ranked by class then score.

    The greedy rule is sequential only within one (video, class): a ground truth taken by a
    prediction is not free for the next. So the predictions are processed in rounds, round
    r holding the r-th prediction of every (video, class) at once, vectorised over
    predictions and thresholds; the number of rounds is the largest number of predictions
    that overlap ground truth of one video and class.
    """
    n_classes, n_gt = len(truth.classes), len(truth)
    tp = np.zeros((len(thresholds), len(label)), dtype=bool)
    # Ground truth grouped by (video, class), file order kept within a group (official).
    gt_key = truth.video * n_classes + truth.label
    gt_order = np.argsort(gt_key, kind="stable")
    keys, first, count = np.unique(gt_key[gt_order], return_index=True, return_counts=True)
    group = _lookup(keys, np.where(video >= 0, video * n_classes + label, -1))
    rows = np.flatnonzero(group >= 0)  # the others are false positives
    group, width = group[rows], count[group[rows]]
    # Every (prediction, ground truth of its video and class) pair.
    column = np.arange(width.sum()) - np.repeat(np.cumsum(width) - width, width)
    pair = np.repeat(np.arange(len(rows)), width)
    pair_gt = gt_order[np.repeat(first[group], width) + column]
    tiou = segment_tiou(t_start[rows][pair], t_end[rows][pair],
                        truth.t_start[pair_gt], truth.t_end[pair_gt])
    if len(rows) == 0:
        return tp
    # Predictions with no candidate at the lowest threshold are false positives everywhere:
    # only the others ("live") take part in the rounds.
    live = np.logical_or.reduceat(~(tiou < thresholds.min()), np.cumsum(width) - width)
    rows, group, width = rows[live], group[live], width[live]
    keep = live[pair]
    pair = np.cumsum(live)[pair[keep]] - 1  # renumbered among the live predictions
    column, pair_gt, tiou = column[keep], pair_gt[keep], tiou[keep]
    # Rank of each live prediction within its (video, class); order them by rank.
    by_group = np.argsort(group, kind="stable")
    rank = np.empty(len(rows), dtype=np.int64)
    rank[by_group] = np.arange(len(rows)) - np.searchsorted(group[by_group], group[by_group])
    by_rank = np.argsort(rank, kind="stable")
    sequence = np.empty(len(rows), dtype=np.int64)
    sequence[by_rank] = np.arange(len(rows))
    # Pairs by round, prediction, then the official walk's order: argsort(tiou)[::-1],
    # stable (quirk 5): NaN first, then tIoU descending, equal tIoUs the later ground truth.
    walk = np.lexsort((-column, np.where(np.isnan(tiou), -np.inf, -tiou), sequence[pair]))
    rows, width = rows[by_rank], width[by_rank]
    pair_gt, tiou = pair_gt[walk], tiou[walk]
    pair_start = np.cumsum(width) - width
    round_end = np.cumsum(np.bincount(rank))  # in predictions

    taken = np.zeros((len(thresholds), n_gt), dtype=bool)
    below = thresholds[:, None]
    never = len(tiou)
    m0 = 0
    for m1 in round_end.tolist():
        p0, p1 = pair_start[m0], pair_start[m1 - 1] + width[m1 - 1]
        # The walk stops at the first tIoU < t and skips ground truth already taken.
        free = ~(tiou[p0:p1] < below) & ~taken[:, pair_gt[p0:p1]]  # (T, pairs)
        chosen = np.minimum.reduceat(np.where(free, np.arange(p0, p1), never),
                                     pair_start[m0:m1] - p0, axis=1)  # (T, members)
        t_idx, m_idx = np.nonzero(chosen < never)
        taken[t_idx, pair_gt[chosen[t_idx, m_idx]]] = True
        tp[t_idx, rows[m0 + m_idx]] = True
        m0 = m1
    return tp


def _lookup(keys: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    """Index of each ``wanted`` value in the sorted unique non-negative ``keys``; -1 if absent
    (and for negative ``wanted``). A dense table when the key range is small (it is for
    videos x classes), else a binary search."""
    span = int(keys[-1]) + 1 if len(keys) else 0
    if span <= max(1 << 22, 4 * len(wanted)):
        table = np.full(span + 1, -1, dtype=np.int64)
        table[keys] = np.arange(len(keys))
        return table[np.where((wanted >= 0) & (wanted < span), wanted, span)]
    at = np.minimum(np.searchsorted(keys, wanted), len(keys) - 1)
    return np.where((wanted >= 0) & (keys[at] == wanted), at, -1)


def interpolated_ap(tp: np.ndarray, label: np.ndarray, n_pos: np.ndarray) -> np.ndarray:
    """VOC 2011 interpolated AP ``(T, C)`` from true positives ``(T, N)`` of predictions
    sorted by class (``label``, ascending) then rank.

    Recall only changes at a true positive, so AP = sum over the k-th true positive of
    (k/n - (k-1)/n) times the best precision at or after it; that best precision is always
    reached at a true positive, so a ``(T, C, max n)`` table of them is all it takes.
    """
    n_thresholds, n_classes = tp.shape[0], len(n_pos)
    class_first = np.searchsorted(label, np.arange(n_classes))
    position = np.arange(len(label)) - class_first[label]  # 0-based rank within the class
    t_idx, p_idx = np.nonzero(tp)  # by threshold, then rank: classes are contiguous
    cls = label[p_idx]
    key = t_idx * n_classes + cls
    k = np.arange(len(key)) - np.searchsorted(key, key)  # 0-based index among the TPs
    envelope = np.zeros((n_thresholds, n_classes, int(n_pos.max())))
    envelope[t_idx, cls, k] = (k + 1) / (position[p_idx] + 1)
    envelope = np.maximum.accumulate(envelope[:, :, ::-1], axis=2)[:, :, ::-1]
    recall = np.arange(envelope.shape[2] + 1) / n_pos[:, None]  # (C, K + 1), official floats
    return (envelope * np.diff(recall, axis=1)).sum(axis=2)
