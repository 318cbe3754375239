"""The ActivityNet metrics per video, and a paired bootstrap of them over videos and seeds.

Matching is within a video: whether a ground-truth instance is recalled by a video's
proposals, or a detection is a true positive, does not depend on the other videos. So
:func:`video_table` matches once and keeps, per ground-truth video, the instances
recalled at each tIoU threshold and point of the AR@AN curve, and per ranked detection
its class, video and true-positive flags; :meth:`VideoTable.scores` then gives AUC,
AR@100 and average mAP of any multiset of the videos (a video drawn twice counts twice,
its detections ranked next to their copies) without matching again. With every video
once it is the official evaluation's result (tested against it).

Approximations of a resample, stated: the proposal budget per video is the full set's
(every video keeps its own proposals whatever else is drawn, as it does when all videos
have the budget's 100), and a class no drawn video holds is left out of that draw's mAP.

:func:`paired_bootstrap`: each draw resamples the validation videos (the same draw for
every variant: the difference is paired) and, per variant, its seeds; a variant's value in
a draw is the mean over its drawn seeds. The interval of a difference is the percentile
interval of the draws.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tspipe.io import atomic_path
from tspipe.localize.metrics import load_inputs
from tspipe.localize.metrics_detection import class_of, interpolated_ap, ranked_matches
from tspipe.localize.metrics_proposals import recall_hits

METRICS = ("auc", "ar_at_100", "average_map")
_FIELDS = ("video_ids", "gt_count", "hits", "proposals_per_video", "det_video", "det_label",
           "det_tp", "class_count")


@dataclass(frozen=True, eq=False)
class VideoTable:
    """One method's scores broken down by validation video (V videos, T thresholds,
    C classes, N detections)."""

    video_ids: np.ndarray  # (V,) str: the ground-truth videos
    gt_count: np.ndarray  # (V,) instances per video
    hits: np.ndarray  # (V, T, 100) instances recalled per threshold and curve point
    proposals_per_video: np.ndarray  # (100,) the AR@AN curve's x
    det_video: np.ndarray  # (N,) ground-truth video of each ranked detection (-1: none)
    det_label: np.ndarray  # (N,) its class, ascending (the ranking is by class, then score)
    det_tp: np.ndarray  # (T, N) true positive at each threshold
    class_count: np.ndarray  # (V, C) instances per video and class

    def scores(self, weight: np.ndarray | None = None) -> dict[str, float]:
        """AUC, AR@100 and average mAP of the videos taken ``weight[v]`` times each
        (int ``(V,)``; default once each: the official numbers)."""
        w = np.ones(len(self.gt_count), np.int64) if weight is None else weight
        recall = np.tensordot(w, self.hits, axes=1) / float(w @ self.gt_count)  # (T, 100)
        avg = recall.mean(axis=0)
        ppv = self.proposals_per_video
        auc = float(np.trapezoid(avg, ppv)) / float(ppv[-1])
        n_pos = w @ self.class_count
        present = n_pos > 0
        rows = np.repeat(np.arange(len(self.det_label)),
                         np.where(self.det_video >= 0, w[self.det_video], 1))
        ap = interpolated_ap(self.det_tp[:, rows], self.det_label[rows],
                             np.where(present, n_pos, 1))
        return {"auc": auc, "ar_at_100": float(avg[-1]),
                "average_map": float(ap[:, present].mean(axis=1).mean())}

    def save(self, path: Path) -> Path:
        with atomic_path(path) as tmp, Path(tmp).open("wb") as fh:
            np.savez_compressed(fh, **{k: getattr(self, k) for k in _FIELDS})
        return path

    @classmethod
    def load(cls, path: Path) -> VideoTable:
        with np.load(path, allow_pickle=False) as data:
            return cls(**{k: data[k] for k in _FIELDS})


def video_table(gt: Any, proposals: Any, detections: Any, *, tiou: Sequence[float],
                blocked: Collection[str] = frozenset()) -> VideoTable:
    """Match ``proposals`` and ``detections`` (result documents or files) against ``gt``
    (as :func:`~tspipe.localize.evaluate_proposals` reads them) once, by video."""
    thresholds, truth, preds, video, _ = load_inputs(
        gt, proposals, tiou, "validation", blocked, with_labels=False,
        outside_fate="are not evaluated (as in the official evaluation)")
    hit, gt_video, ppv = recall_hits(truth, video, preds.t_start, preds.t_end, preds.score,
                                     thresholds, n_rows=len(preds), source=preds.source)
    n_videos = len(truth.video_ids)
    first = np.searchsorted(gt_video, np.arange(n_videos))  # every video has an instance
    hits = np.add.reduceat(hit.astype(np.int32), first, axis=1).transpose(1, 0, 2)
    _, dtruth, dets, dvideo, _ = load_inputs(
        gt, detections, tiou, "validation", blocked, with_labels=True,
        outside_fate="count as false positives of their class (as in the official evaluation)")
    label = class_of(dets, dtruth)
    order, tp = ranked_matches(dtruth, dvideo, label, dets.t_start, dets.t_end, dets.score,
                               thresholds)
    class_count = np.zeros((n_videos, len(truth.classes)), np.int64)
    np.add.at(class_count, (truth.video, truth.label), 1)
    return VideoTable(
        video_ids=np.asarray(truth.video_ids, dtype=str),
        gt_count=np.bincount(truth.video, minlength=n_videos).astype(np.int64), hits=hits,
        proposals_per_video=ppv, det_video=dvideo[order].astype(np.int64),
        det_label=label[order].astype(np.int64), det_tp=tp, class_count=class_count)


@dataclass(frozen=True)
class Difference:
    """``reference`` minus ``other`` on one metric: the point value (every video and
    seed once), the interval's bounds and what they say."""

    reference: str
    other: str
    metric: str
    value: float
    low: float
    high: float
    confidence: float

    @property
    def verdict(self) -> str:
        if self.low > 0:
            return "beats"
        return "loses to" if self.high < 0 else "ties with"

    def sentence(self) -> str:
        interval = f"[{self.low * 100:+.2f}, {self.high * 100:+.2f}]"
        why = "the interval excludes 0" if self.verdict != "ties with" else "the interval holds 0"
        return (f"{self.reference} {self.verdict} {self.other} on {self.metric}: "
                f"{self.value * 100:+.2f} points, {self.confidence:.0%} interval {interval} "
                f"({why})")


def paired_bootstrap(tables: Mapping[str, Sequence[VideoTable]], reference: str, *,
                     draws: int = 1000, confidence: float = 0.95,
                     seed: int = 0) -> list[Difference]:
    """``reference`` against every other variant of ``tables`` (variant -> one table per
    seed, all of the same videos), on each of :data:`METRICS`."""
    ids = [t.video_ids for ts in tables.values() for t in ts]
    if any(len(i) != len(ids[0]) or (i != ids[0]).any() for i in ids):
        raise ValueError("paired bootstrap: the variants were scored on different videos")
    rng = np.random.default_rng(seed)
    n_videos = len(ids[0])
    weights = rng.multinomial(n_videos, np.full(n_videos, 1.0 / n_videos), size=draws)
    value: dict[str, dict[str, float]] = {}
    drawn: dict[str, dict[str, np.ndarray]] = {}
    for variant, runs in tables.items():
        # (seeds, draws) per metric, then each draw's mean over resampled seeds.
        per_seed = [[t.scores(w) for w in weights] for t in runs]
        pick = rng.integers(0, len(runs), size=(draws, len(runs)))
        value[variant] = {m: float(np.mean([t.scores()[m] for t in runs])) for m in METRICS}
        drawn[variant] = {}
        for m in METRICS:
            grid = np.array([[s[m] for s in seed_draws] for seed_draws in per_seed])
            drawn[variant][m] = grid[pick, np.arange(draws)[:, None]].mean(axis=1)
    alpha = (1 - confidence) / 2
    out = []
    for other in tables:
        if other == reference:
            continue
        for m in METRICS:
            diff = drawn[reference][m] - drawn[other][m]
            low, high = np.quantile(diff, [alpha, 1 - alpha])
            out.append(Difference(reference, other, m, value[reference][m] - value[other][m],
                                  float(low), float(high), confidence))
    return out
