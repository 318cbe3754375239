"""Proposal average recall, exactly as the official ActivityNet ``eval_proposal.py``
computes it (the rule and its quirks: :mod:`tspipe.localize.metrics`): AR@AN (100 points),
AR@1/5/10/100 and AUC. :func:`evaluate_proposals` from files or documents,
:func:`average_recall` on arrays, :class:`ProposalResult`.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from tspipe.localize.metrics import ACTIVITYNET_TIOU, Counts, load_inputs, ranking, segment_tiou
from tspipe.localize.metrics_io import GroundTruth, PredictionError

AR_AT: tuple[int, ...] = (1, 5, 10, 100)
MAX_AVG_PROPOSALS = 100
_CURVE_POINTS = 100  # the official curve always has 100 points, whatever the budget


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


def evaluate_proposals(gt: Any, pred: Any, *, tiou: Sequence[float] = ACTIVITYNET_TIOU,
                       subset: str = "validation", blocked: Collection[str] = frozenset(),
                       max_avg_proposals: int = MAX_AVG_PROPOSALS) -> ProposalResult:
    """AR@AN (100 points), AR@1/5/10/100 and AUC of class-agnostic proposals.

    Sources as for ``evaluate_detection``; labels, if any, are ignored.
    ``max_avg_proposals``: the budget (100 in every published setting).
    """
    thresholds, truth, preds, video, counts = load_inputs(
        gt, pred, tiou, subset, blocked, with_labels=False,
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


def average_recall(truth: GroundTruth, video: np.ndarray, t_start: np.ndarray,
                   t_end: np.ndarray, score: np.ndarray, thresholds: np.ndarray, *,
                   max_avg_proposals: int = MAX_AVG_PROPOSALS, n_rows: int | None = None,
                   source: str = "<proposals>") -> tuple[np.ndarray, np.ndarray]:
    """Recall ``(T, 100)`` and average proposals per video ``(100,)`` of N proposals given
    as ``(N,)`` arrays (``video``: index into ``truth.video_ids``, -1 for none).

    ``n_rows``: the proposal rows of the whole file, outside videos included (quirk 4);
    default N.
    """
    hit, _, proposals_per_video = recall_hits(
        truth, video, t_start, t_end, score, thresholds, max_avg_proposals=max_avg_proposals,
        n_rows=n_rows, source=source)
    return hit.sum(axis=1) / float(len(truth)), proposals_per_video


def recall_hits(truth: GroundTruth, video: np.ndarray, t_start: np.ndarray,
                t_end: np.ndarray, score: np.ndarray, thresholds: np.ndarray, *,
                max_avg_proposals: int = MAX_AVG_PROPOSALS, n_rows: int | None = None,
                source: str = "<proposals>") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """What :func:`average_recall` sums: ``hit (T, G, 100)``, whether ground truth ``g``
    (in the order of ``gt_video``) is recalled at threshold ``t`` and curve point ``k``;
    ``gt_video (G,)``, its video (ascending); and the proposals per video ``(100,)``."""
    n_videos, n_gt = len(truth.video_ids), len(truth)
    n_rows = len(score) if n_rows is None else n_rows
    if n_rows == 0:
        raise PredictionError(source, "no proposals at all", field="results")
    ratio = max_avg_proposals * float(n_videos) / n_rows
    inside = np.flatnonzero(video >= 0)
    order = inside[ranking(video[inside], score[inside])]
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
    hit = first_hit[:, :, None] < used[g_video][None, :, :]
    return hit, g_video, fraction * (float(total) / n_videos)
