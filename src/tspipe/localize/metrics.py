"""Temporal action localization metrics: the numbers of the official ActivityNet evaluation
(activitynet/ActivityNet ``Evaluation/eval_detection.py``, ``eval_proposal.py``), vectorised.

Detection: per class and tIoU threshold, predictions ranked by score take, greedily, the
highest-tIoU ground truth of their video and class not yet taken at that threshold (tIoU >=
threshold); AP is VOC 2011 all-point interpolated precision over recall; mAP averages the
classes, average mAP the thresholds. Proposals: recall of the top proposals per video
(no one-to-one matching) against the average number of proposals per video (AR@AN, 100
points), AR@1/5/10/100 and the area under that curve. Times are seconds.

The official code's quirks are reproduced (tests/localize/test_metrics_quirks.py tests each):

1. tIoU is intersection / union; a zero-length segment on a zero-length one is 0/0 = NaN.
   In detection a NaN sorts first and is not ``< t``: a hit at every threshold (ActivityNet
   v1.3 validation has 3 zero-length ground truths). In proposals ``NaN >= t`` is false.
2. A tIoU equal to the threshold is a hit, and the ActivityNet thresholds are the floats of
   ``np.linspace(0.5, 0.95, 10)``: "0.90" is 0.8999999999999999, so a tIoU of
   0.8999999999999999 is a hit there.
3. Segments are evaluated as written: not clipped to the video (past its end, before 0).
4. Detections for videos with no ground truth in the subset are false positives of their
   class. Proposals for such videos are not evaluated but count in the budget: a video
   keeps floor(n · ratio) of its proposals, ratio = 100 · (ground-truth videos) / (all
   proposal rows of the file).
5. Ranking ties: the official order is ``argsort(x)[::-1]`` with numpy's unstable default
   sort; for up to 16 items classic numpy sorts by insertion (stable), so equal values come
   out in reverse file order. tspipe uses that rule everywhere, on every machine (a stable
   sort, reversed: of equal scores the later entry ranks first; of a prediction's equally
   overlapping ground truths the later one is tried first; proposals likewise). Where more
   than 16 scores tie, the official result depends on the numpy build (SIMD sorts).
6. Classes are the labels of the kept ground truth (first-seen order); a predicted label
   outside them is an error (the official code fails on it, with a KeyError); a class
   without predictions has AP 0 and counts in the mean.
7. AR@AN: 100 points f_j = (j / 100) · (100 · V / T) for j = 1..100 (V ground-truth videos,
   T proposals kept), each video using floor(n_v · f_j) proposals, floats in the official
   order: with 100 kept proposals the point j = 29 uses 28 (100 · 0.29 < 29). A
   ground-truth video without proposals is a column of zeros (missed; a hit only at a
   threshold <= 0). AR@k is the k-th point; AUC = trapezoid area / last x (the official
   log prints 100 times that).
8. Video ids are compared as given (``v_<id>`` is not ``<id>``); blocked videos leave the
   ground truth and the predictions before anything is checked.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from tspipe.localize.metrics_io import (
    EvaluationError,
    GroundTruth,
    PredictionError,
    Predictions,
    load_ground_truth,
    load_predictions,
)

logger = logging.getLogger(__name__)

ACTIVITYNET_TIOU: tuple[float, ...] = tuple(np.linspace(0.5, 0.95, 10).tolist())
THUMOS14_TIOU: tuple[float, ...] = (0.3, 0.4, 0.5, 0.6, 0.7)
AR_AT: tuple[int, ...] = (1, 5, 10, 100)
MAX_AVG_PROPOSALS = 100
_CURVE_POINTS = 100  # the official curve always has 100 points, whatever the budget


@dataclass(frozen=True)
class Counts:
    """What was evaluated. ``outside_*``: prediction rows (and their videos) for videos with
    no ground truth in the subset; ``blocked_videos``: prediction videos dropped as blocked."""

    ground_truth_videos: int
    ground_truth_segments: int
    classes: int
    predictions: int
    videos_without_predictions: int
    outside_videos: int
    outside_predictions: int
    blocked_videos: int


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


@dataclass(frozen=True)
class ProposalResult:
    """Average recall (over the tIoU thresholds) at 100 average numbers of proposals per
    video; ``recall[i][j]`` at ``tiou_thresholds[i]``. All recalls and ``auc`` in [0, 1]."""

    tiou_thresholds: tuple[float, ...]
    avg_recall: tuple[float, ...]
    proposals_per_video: tuple[float, ...]
    recall: tuple[tuple[float, ...], ...]
    auc: float
    max_avg_proposals: int
    counts: Counts

    @property
    def ar_at(self) -> dict[int, float]:
        """AR@k for k in 1, 5, 10, 100: the k-th point of the curve."""
        return {k: self.avg_recall[k - 1] for k in AR_AT}

    def to_dict(self) -> dict[str, Any]:
        return {"ar_at": {str(k): v for k, v in self.ar_at.items()}, "auc": self.auc,
                "avg_recall": list(self.avg_recall),
                "proposals_per_video": list(self.proposals_per_video)}

    def metrics(self) -> dict[str, float]:
        """Flat names for MLflow: ``ar_at_1`` ... ``ar_at_100``, ``auc``."""
        return {**{f"ar_at_{k}": v for k, v in self.ar_at.items()}, "auc": self.auc}


def check_thresholds(tiou: Sequence[float]) -> np.ndarray:
    """tIoU thresholds as a float64 array: at least one, each in [0, 1]."""
    thresholds = np.asarray(tiou, dtype=np.float64)
    if thresholds.ndim != 1 or thresholds.size == 0:
        raise EvaluationError(f"tIoU thresholds: a non-empty list expected, got {tiou!r}")
    if not np.all((thresholds >= 0) & (thresholds <= 1)):
        raise EvaluationError(f"tIoU thresholds must lie in [0, 1], got {tiou!r}")
    return thresholds


def segment_tiou(target_start: np.ndarray, target_end: np.ndarray, start: np.ndarray,
                 end: np.ndarray) -> np.ndarray:
    """Elementwise temporal IoU (broadcasting), the official expression and float order:
    intersection clipped at 0, union = (end - start) + (target length) - intersection.
    0/0 (two zero-length segments) is NaN."""
    intersection = (np.minimum(target_end, end) - np.maximum(target_start, start)).clip(0)
    union = (end - start) + (target_end - target_start) - intersection
    with np.errstate(invalid="ignore", divide="ignore"):
        return intersection / union


def evaluate_detection(gt: Any, pred: Any, *, tiou: Sequence[float] = ACTIVITYNET_TIOU,
                       subset: str = "validation",
                       blocked: Collection[str] = frozenset()) -> DetectionResult:
    """Interpolated AP per class and threshold, mAP per threshold and their average.

    ``gt``: a path (ActivityNet JSON or any annotation format), an ActivityNet document, an
    ``Annotations`` or a ``GroundTruth``; ``pred``: a result JSON path (``.json[.gz]``), a
    result document or ``Predictions``. ``blocked`` video ids leave both.
    """
    thresholds = check_thresholds(tiou)
    truth, preds, video, counts = _load(
        gt, pred, subset, blocked, with_labels=True,
        outside_fate="count as false positives of their class, as in the official evaluation")
    label = _class_of(preds, truth)
    ap = detection_ap(truth, video, label, preds.t_start, preds.t_end, preds.score, thresholds)
    map_per_tiou = ap.mean(axis=1)
    return DetectionResult(
        tiou_thresholds=tuple(thresholds.tolist()), map_per_tiou=tuple(map_per_tiou.tolist()),
        average_map=float(map_per_tiou.mean()), classes=truth.classes,
        ap_per_class=tuple(tuple(row) for row in ap.tolist()), counts=counts)


def evaluate_proposals(gt: Any, pred: Any, *, tiou: Sequence[float] = ACTIVITYNET_TIOU,
                       subset: str = "validation", blocked: Collection[str] = frozenset(),
                       max_avg_proposals: int = MAX_AVG_PROPOSALS) -> ProposalResult:
    """AR@AN (100 points), AR@1/5/10/100 and AUC of class-agnostic proposals.

    Sources as for ``evaluate_detection``; labels, if any, are ignored.
    ``max_avg_proposals``: the budget (100 in every published setting).
    """
    thresholds = check_thresholds(tiou)
    truth, preds, video, counts = _load(
        gt, pred, subset, blocked, with_labels=False,
        outside_fate="are not evaluated but, as in the official evaluation, count in the budget "
        "that sets how many proposals a video keeps")
    recall, proposals_per_video = average_recall(
        truth, video, preds.t_start, preds.t_end, preds.score, thresholds,
        max_avg_proposals=max_avg_proposals, n_rows=len(preds), source=preds.source)
    avg_recall = recall.mean(axis=0)
    area = float(np.trapezoid(avg_recall, proposals_per_video))
    return ProposalResult(
        tiou_thresholds=tuple(thresholds.tolist()), avg_recall=tuple(avg_recall.tolist()),
        proposals_per_video=tuple(proposals_per_video.tolist()),
        recall=tuple(tuple(row) for row in recall.tolist()),
        auc=area / float(proposals_per_video[-1]), max_avg_proposals=max_avg_proposals,
        counts=counts)


def _load(gt: Any, pred: Any, subset: str, blocked: Collection[str], *, with_labels: bool,
          outside_fate: str) -> tuple[GroundTruth, Predictions, np.ndarray, Counts]:
    """Ground truth, predictions, each prediction's ground-truth video index (-1: none) and
    the counts; a warning counts the predictions for videos without ground truth and says
    their fate."""
    blocked = frozenset(blocked)
    truth = load_ground_truth(gt, subset=subset, blocked=blocked)
    if len(truth) == 0:
        raise EvaluationError(f"{truth.source}: no ground-truth segment in subset {subset!r}"
                              f"{' (after the blocked list)' if blocked else ''}")
    preds = load_predictions(pred, with_labels=with_labels, blocked=blocked)
    index = {v: i for i, v in enumerate(truth.video_ids)}
    per_video = np.array([index.get(v, -1) for v in preds.video_ids], dtype=np.int64)
    video = per_video[preds.video]
    outside = video < 0
    counts = Counts(
        ground_truth_videos=len(truth.video_ids), ground_truth_segments=len(truth),
        classes=len(truth.classes), predictions=len(preds),
        videos_without_predictions=len(truth.video_ids) - len(np.unique(video[~outside])),
        outside_videos=len(np.unique(preds.video[outside])),
        outside_predictions=int(outside.sum()), blocked_videos=preds.blocked_videos)
    if counts.outside_predictions:
        logger.warning("%s", _outside_message(truth, preds, video, counts, outside_fate))
    return truth, preds, video, counts


def _outside_message(truth: GroundTruth, preds: Predictions, video: np.ndarray,
                     counts: Counts, fate: str) -> str:
    ids = [preds.video_ids[i] for i in np.unique(preds.video[video < 0])]
    known = set(truth.video_ids)
    stripped = sum(1 for v in ids if v.startswith("v_") and v[2:] in known)
    prefixed = sum(1 for v in ids if f"v_{v}" in known)
    hint = ""
    if stripped or prefixed:
        how = "without" if stripped >= prefixed else "with"
        hint = (f". {max(stripped, prefixed)} of those ids match a ground-truth video "
                f"{how} a 'v_' prefix: ids are compared as given, as the official evaluation "
                "does (ActivityNet JSON ids have no 'v_'); rename the prediction keys")
    return (f"{preds.source}: {counts.outside_predictions} predictions in "
            f"{counts.outside_videos} videos without ground truth in subset {truth.subset!r} "
            f"(e.g. {ids[0]!r}) {fate}{hint}")


def _class_of(preds: Predictions, truth: GroundTruth) -> np.ndarray:
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
    order = _ranking(label, score)
    label = label[order]
    tp = _match(truth, video[order], label, t_start[order], t_end[order], thresholds)
    return _interpolated_ap(tp, label, n_pos)


def _ranking(group: np.ndarray, score: np.ndarray) -> np.ndarray:
    """The order by ``group`` (non-negative ints), then score descending, of equal scores
    the later entry first: the official ``argsort(score)[::-1]``, stable (quirk 5).
    Two stable sorts beat a three-key lexsort; numpy radix-sorts the 16-bit group keys."""
    order = np.argsort(score, kind="stable")[::-1]
    keys = group[order]
    if keys.max(initial=0) < 1 << 16:
        keys = keys.astype(np.uint16)
    return order[np.argsort(keys, kind="stable")]


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


def _interpolated_ap(tp: np.ndarray, label: np.ndarray, n_pos: np.ndarray) -> np.ndarray:
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


def average_recall(truth: GroundTruth, video: np.ndarray, t_start: np.ndarray,
                   t_end: np.ndarray, score: np.ndarray, thresholds: np.ndarray, *,
                   max_avg_proposals: int = MAX_AVG_PROPOSALS, n_rows: int | None = None,
                   source: str = "<proposals>") -> tuple[np.ndarray, np.ndarray]:
    """Recall ``(T, 100)`` and average proposals per video ``(100,)`` of N proposals given
    as ``(N,)`` arrays (``video``: index into ``truth.video_ids``, -1 for none).

    ``n_rows``: the proposal rows of the whole file, outside videos included (quirk 4);
    default N.
    """
    n_videos, n_gt = len(truth.video_ids), len(truth)
    n_rows = len(score) if n_rows is None else n_rows
    if n_rows == 0:
        raise PredictionError(source, "no proposals at all", field="results")
    ratio = max_avg_proposals * float(n_videos) / n_rows
    inside = np.flatnonzero(video >= 0)
    order = inside[_ranking(video[inside], score[inside])]
    p_video, p_start, p_end = video[order], t_start[order], t_end[order]
    n_all = np.bincount(p_video, minlength=n_videos)
    n_keep = np.minimum((n_all * ratio).astype(np.int64), n_all)
    total = int(n_keep.sum())
    if total == 0:
        raise PredictionError(source, "no proposal of a ground-truth video is kept within "
                              f"the budget of {max_avg_proposals} per video", field="results")
    fraction = np.arange(1, _CURVE_POINTS + 1) / 100.0 * (max_avg_proposals * float(n_videos)
                                                          / total)
    columns = np.where(n_all > 0, n_keep, 1)  # no proposals: one column of zeros (official)
    used = np.minimum((columns[:, None] * fraction).astype(np.int64), columns[:, None])

    # Every (ground truth, kept proposal of its video) pair, by ground truth then rank.
    gt_order = np.argsort(truth.video, kind="stable")
    g_video = truth.video[gt_order]
    width = n_keep[g_video]
    rank = np.arange(width.sum()) - np.repeat(np.cumsum(width) - width, width)
    pair_gt = np.repeat(gt_order, width)
    proposal = np.repeat((np.cumsum(n_all) - n_all)[g_video], width) + rank
    tiou = segment_tiou(truth.t_start[pair_gt], truth.t_end[pair_gt],
                        p_start[proposal], p_end[proposal])
    # The rank of each ground truth's first proposal with tIoU >= t (never: a huge rank).
    never = np.iinfo(np.int64).max
    first_hit = np.full((len(thresholds), n_gt), never, dtype=np.int64)
    starts = (np.cumsum(width) - width)[width > 0]
    for i, t in enumerate(thresholds):
        if len(starts):
            first_hit[i, width > 0] = np.minimum.reduceat(np.where(tiou >= t, rank, never),
                                                          starts)
        if t <= 0:  # the zeros column of a video without proposals is a hit at t <= 0
            first_hit[i, n_all[g_video] == 0] = 0
    recalled = (first_hit[:, :, None] < used[g_video][None, :, :]).sum(axis=1)
    return recalled / float(n_gt), fraction * (float(total) / n_videos)
