"""Temporal action localization metrics: the numbers of the official ActivityNet evaluation
(activitynet/ActivityNet ``Evaluation/eval_detection.py``, ``eval_proposal.py``), vectorised.
This module holds what both share (tIoU, thresholds, loading and matching the inputs, the
ranking rule) and the quirks below; :mod:`tspipe.localize.metrics_detection` computes
detection mAP, :mod:`tspipe.localize.metrics_proposals` proposal AR@AN and AUC.

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
from typing import Any, NamedTuple

import numpy as np

from tspipe.localize.metrics_io import (
    EvaluationError,
    GroundTruth,
    Predictions,
    load_ground_truth,
    load_predictions,
)

logger = logging.getLogger(__name__)

ACTIVITYNET_TIOU: tuple[float, ...] = tuple(np.linspace(0.5, 0.95, 10).tolist())
THUMOS14_TIOU: tuple[float, ...] = (0.3, 0.4, 0.5, 0.6, 0.7)


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


class Inputs(NamedTuple):
    """What :func:`load_inputs` gives: the tIoU thresholds ``(K,)``, the ground truth, the
    predictions, each prediction's ground-truth video index ``(N,)`` (-1: none) and the
    counts."""

    thresholds: np.ndarray
    truth: GroundTruth
    preds: Predictions
    video: np.ndarray
    counts: Counts


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


def load_inputs(gt: Any, pred: Any, tiou: Sequence[float], subset: str,
                blocked: Collection[str], *, with_labels: bool, outside_fate: str) -> Inputs:
    """The thresholds checked first (:func:`check_thresholds`), then ground truth,
    predictions, each prediction's ground-truth video index (-1: none) and the counts; a
    warning counts the predictions for videos without ground truth and says their fate."""
    thresholds = check_thresholds(tiou)
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
    return Inputs(thresholds, truth, preds, video, counts)


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


def ranking(group: np.ndarray, score: np.ndarray) -> np.ndarray:
    """The order by ``group`` (non-negative ints), then score descending, of equal scores
    the later entry first: the official ``argsort(score)[::-1]``, stable (quirk 5).
    Two stable sorts beat a three-key lexsort; numpy radix-sorts the 16-bit group keys."""
    order = np.argsort(score, kind="stable")[::-1]
    keys = group[order]
    if keys.max(initial=0) < 1 << 16:
        keys = keys.astype(np.uint16)
    return order[np.argsort(keys, kind="stable")]
