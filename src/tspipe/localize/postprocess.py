"""From BMN / G-TAD score maps to an ActivityNet result file: candidate proposals, Gaussian
soft-NMS, seconds, video-level classes (facts: shared/reference/localization.md, 4-5).

Positions are normalized to the feature-covered span (0 = first snippet's start, 1 = the
last one's end; see :mod:`tspipe.localize.features`) until :func:`to_seconds`.

Map conventions (``convention=``), for a temporal scale of T positions:

- ``"start_end"`` (BMN): ``map[s, e]``, shape ``(T, T)``, is the proposal ``[s, e + 1) / T``;
  cells with ``s > e`` are invalid;
- ``"duration_start"`` (G-TAD): ``map[d, s]``, shape ``(D, T)`` with ``D <= T`` the longest
  duration, is the proposal ``[s, s + d + 1) / T``; cells ending past T are invalid.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from tspipe.errors import TspipeError, locate
from tspipe.localize.feature_files import match_id
from tspipe.localize.metrics import segment_tiou
from tspipe.localize.metrics_io import read_json

log = logging.getLogger(__name__)

CONVENTIONS = ("start_end", "duration_start")
SCORINGS = ("bmn", "gtad")
# BMN: alpha 0.4, decay only above 0.5 + (0.9 - 0.5) * width of the top proposal.
BMN_ALPHA = 0.4
BMN_LOW_THRESHOLD = 0.5
BMN_HIGH_THRESHOLD = 0.9
# G-TAD ActivityNet: decay on any overlap by exp(-tIoU^2 / 0.8).
GTAD_ALPHA = 0.8
TOP_PROPOSALS = 100  # both keep 100 proposals per ActivityNet video
TOP_CLASSES = 2
MAX_DETECTIONS = 200
# BMN paper's boundary selection (opt-in, not in the reference code's inference).
BOUNDARY_RATIO = 0.5
RESULT_VERSION = "VERSION 1.3"


class ClassScoreError(TspipeError):
    """A video-level class score file cannot be read."""


class Proposals(NamedTuple):
    """``segments`` ``(K, 2)`` float64 (normalized, or seconds after :func:`to_seconds`),
    ``scores`` ``(K,)`` float64."""

    segments: np.ndarray
    scores: np.ndarray


class Detections(NamedTuple):
    """Labelled proposals: ``segments`` ``(N, 2)`` seconds, ``scores`` ``(N,)``,
    ``labels`` N class names."""

    segments: np.ndarray
    scores: np.ndarray
    labels: tuple[str, ...]


Threshold = float | Callable[[float], float] | None


def _segments(segments: Any, what: str) -> np.ndarray:
    out = np.asarray(segments, dtype=np.float64)
    if out.size == 0:
        return out.reshape(0, 2)
    if out.ndim != 2 or out.shape[1] != 2:
        raise ValueError(f"{what}: segments must have shape (K, 2), got {out.shape}")
    return out


# -- soft-NMS ------------------------------------------------------------------------------

def soft_nms(segments: Any, scores: Any, *, alpha: float, top_k: int,
             threshold: Threshold = 0.0) -> Proposals:
    """Gaussian soft-NMS: repeatedly keep the top-scoring remaining proposal (the first one
    on a tie), then multiply the score of every remaining proposal whose tIoU with it
    exceeds the threshold (strictly) by ``exp(-tIoU^2 / alpha)``; stop after ``top_k`` or
    when none remain. ``threshold``: a number, a function of the kept proposal's width
    (BMN's adaptive rule, :func:`bmn_threshold`), or None (= 0: any overlap decays).

    Returns the kept proposals in the order kept, with their decayed scores.
    """
    seg = _segments(segments, "soft_nms")
    score = np.array(scores, dtype=np.float64).reshape(-1)
    if len(score) != len(seg):
        raise ValueError(f"soft_nms: {len(seg)} segments but {len(score)} scores")
    if alpha <= 0:
        raise ValueError(f"soft_nms: alpha must be > 0, got {alpha}")
    # Kept proposals stay in place, masked (score -inf, ``alive`` False), and the decay is
    # applied with a mask instead of gathering the remaining rows and scattering back:
    # the same element-wise operations on the same values, so the same numbers, in less
    # time (~5,000 candidates a video: G-TAD 12.3 -> 7.4 ms, BMN 7.4 -> 5.2 ms a video,
    # benchmarks/evaluate_scale.py).
    start, end = np.ascontiguousarray(seg[:, 0]), np.ascontiguousarray(seg[:, 1])
    alive = np.ones(len(score), dtype=bool)
    kept: list[int] = []
    kept_scores: list[float] = []
    while len(kept) < min(top_k, len(score)):
        best = int(np.argmax(score))  # the first maximum (NaN first), as in kept order
        if not alive[best]:  # every remaining score is -inf: the first remaining one
            best = int(np.flatnonzero(alive)[0])
        kept.append(best)
        kept_scores.append(float(score[best]))
        score[best], alive[best] = -np.inf, False
        width = float(seg[best, 1] - seg[best, 0])
        limit = threshold(width) if callable(threshold) else (threshold or 0.0)
        tiou = segment_tiou(seg[best, 0], seg[best, 1], start, end)
        hit = (tiou > limit) & alive  # NaN (two zero-length segments) never decays
        with np.errstate(invalid="ignore"):  # -inf * 0 on kept rows, never copied
            decayed = score * np.exp(-np.square(tiou) / alpha)
        np.copyto(score, decayed, where=hit)
    return Proposals(seg[kept].reshape(-1, 2), np.array(kept_scores, dtype=np.float64))


def bmn_threshold(width: float) -> float:
    """BMN's adaptive overlap threshold: ``0.5 + (0.9 - 0.5) * width`` (normalized width of
    the kept proposal), so wide proposals suppress only near-duplicates."""
    return BMN_LOW_THRESHOLD + (BMN_HIGH_THRESHOLD - BMN_LOW_THRESHOLD) * width


def bmn_soft_nms(segments: Any, scores: Any, *, top_k: int = TOP_PROPOSALS) -> Proposals:
    """BMN's post-processing on normalized segments: alpha 0.4, adaptive threshold
    :func:`bmn_threshold`, 100 proposals (JJBOY/BMN, facts section 4). The threshold reads
    the width in normalized units: pass segments before :func:`to_seconds`."""
    return soft_nms(segments, scores, alpha=BMN_ALPHA, top_k=top_k, threshold=bmn_threshold)


def gtad_soft_nms(segments: Any, scores: Any, *, top_k: int = TOP_PROPOSALS) -> Proposals:
    """G-TAD's ActivityNet post-processing: every overlapping proposal decays by
    ``exp(-tIoU^2 / 0.8)``, 100 proposals (frostinassiky/gtad ``anet``, facts section 5)."""
    return soft_nms(segments, scores, alpha=GTAD_ALPHA, top_k=top_k, threshold=0.0)


# -- candidates from the maps --------------------------------------------------------------

def boundary_candidates(prob: Any, *, ratio: float = BOUNDARY_RATIO) -> np.ndarray:
    """``(T,)`` bool: positions whose probability exceeds ``ratio * max`` or is a local peak
    (above both neighbours; above the one neighbour at either end). The BMN/BSN papers'
    boundary selection."""
    p = np.asarray(prob, dtype=np.float64).reshape(-1)
    left = np.concatenate([[-np.inf], p[:-1]])
    right = np.concatenate([p[1:], [-np.inf]])
    return (p > ratio * p.max()) | ((p > left) & (p > right))


def proposals_from_maps(start: Any | None, end: Any | None, reg_map: Any, cls_map: Any, *,
                        convention: str, scoring: str = "bmn",
                        boundary_filter: bool = False) -> Proposals:
    """Every valid map cell as a normalized proposal, sorted by score (descending, ties in
    (start, end) order).

    ``start``, ``end``: ``(T,)`` boundary probabilities, position k at time k / T (needed
    for ``scoring="bmn"``); ``reg_map`` (IoU regression) and ``cls_map`` (classification):
    ``(T, T)`` or ``(D, T)`` in ``convention`` (module docstring).

    - ``scoring="bmn"``: proposal ``[s, e) / T`` scores ``start[s] * end[e] * cls * reg``
      (in that order); ``end[e]`` must exist, so proposals end before position T, i.e.
      the facts' ``i < j + 1 < T``. Every such cell is a candidate, as in the reference
      inference; ``boundary_filter=True`` keeps only starts and ends that pass
      :func:`boundary_candidates` (the papers' selection; off by default).
    - ``scoring="gtad"``: ``cls * reg``; ``start``/``end`` unused; cells may end at T.
    """
    if convention not in CONVENTIONS:
        raise ValueError(f"convention must be one of {CONVENTIONS}, not {convention!r}")
    if scoring not in SCORINGS:
        raise ValueError(f"scoring must be one of {SCORINGS}, not {scoring!r}")
    reg = np.asarray(reg_map, dtype=np.float64)
    cls = np.asarray(cls_map, dtype=np.float64)
    if reg.ndim != 2 or reg.shape != cls.shape:
        raise ValueError(f"reg_map {reg.shape} and cls_map {cls.shape} must be one 2-D shape")
    rows, cols = np.indices(reg.shape)
    scale = reg.shape[1]
    if convention == "start_end":
        if reg.shape[0] != scale:
            raise ValueError(f"a start_end map is (T, T), got {reg.shape}")
        s, e = rows, cols + 1
    else:
        if reg.shape[0] > scale:
            raise ValueError(f"a duration_start map is (D, T) with D <= T, got {reg.shape}")
        s, e = cols, cols + rows + 1
    valid = (s < e) & (e <= scale)
    if scoring == "bmn":
        if start is None or end is None:
            raise ValueError("scoring='bmn' needs the start and end probabilities")
        p_start = np.asarray(start, dtype=np.float64).reshape(-1)
        p_end = np.asarray(end, dtype=np.float64).reshape(-1)
        if len(p_start) != scale or len(p_end) != scale:
            raise ValueError(f"start ({len(p_start)}) and end ({len(p_end)}) must have the "
                             f"maps' temporal scale {scale}")
        valid &= e < scale
        s, e, cls, reg = s[valid], e[valid], cls[valid], reg[valid]
        if boundary_filter:
            keep = boundary_candidates(p_start)[s] & boundary_candidates(p_end)[e]
            s, e, cls, reg = s[keep], e[keep], cls[keep], reg[keep]
        score = p_start[s] * p_end[e] * cls * reg
    else:
        s, e = s[valid], e[valid]
        score = cls[valid] * reg[valid]
    order = np.lexsort((e, s))  # (start, end) order first, so the stable sort keeps it on ties
    order = order[np.argsort(-score[order], kind="stable")]
    segments = np.stack([s[order], e[order]], axis=1) / scale
    return Proposals(segments.astype(np.float64).reshape(-1, 2), score[order])


def to_seconds(segments: Any, duration: float) -> np.ndarray:
    """Normalized ``(K, 2)`` -> seconds: clipped to [0, 1], times the feature-covered
    ``duration`` (:attr:`tspipe.localize.features.VideoFeatures.covered_duration`, or
    :func:`~tspipe.localize.features.snippet_covered_duration` for CUHK features)."""
    return np.clip(_segments(segments, "to_seconds"), 0.0, 1.0) * duration


# -- classes -------------------------------------------------------------------------------

def combine_with_classes(proposals: Proposals, class_scores: Mapping[str, float], *,
                         top_k_classes: int = TOP_CLASSES,
                         max_detections: int = MAX_DETECTIONS) -> Detections:
    """Detections = proposals x video-level classes (BMN, G-TAD on ActivityNet): for each of
    the ``top_k_classes`` best classes (ties: mapping order), every proposal labelled with
    it, score = proposal score x class score; then sorted by score (descending; ties: class
    rank, then proposal order) and cut to ``max_detections``."""
    best = sorted(class_scores.items(), key=lambda kv: -kv[1])[:top_k_classes]
    seg = _segments(proposals.segments, "combine_with_classes")
    prop_scores = np.asarray(proposals.scores, dtype=np.float64).reshape(-1)
    if not best or not len(seg):
        return Detections(np.zeros((0, 2)), np.zeros(0), ())
    scores = np.concatenate([prop_scores * float(score) for _, score in best])
    labels = [label for label, _ in best for _ in range(len(seg))]
    order = np.argsort(-scores, kind="stable")[:max_detections]
    return Detections(np.tile(seg, (len(best), 1))[order], scores[order],
                      tuple(labels[i] for i in order))


@dataclass(frozen=True)
class ClassScores:
    """Video-level class scores: ``scores[video_id][label]``; ``classes`` in the file's
    order; ``bad``: video id -> why its scores were skipped."""

    source: str
    classes: tuple[str, ...]
    scores: dict[str, dict[str, float]]
    bad: dict[str, str] = field(default_factory=dict)

    def for_video(self, video_id: str) -> dict[str, float] | None:
        """The scores of ``video_id``, matched up to ActivityNet's ``v_`` prefix."""
        key = match_id(video_id, self.scores)
        return None if key is None else self.scores[key]


def load_class_scores(path: str | Path) -> ClassScores:
    """Video-level classifier output, either CUHK's layout (``cuhk_val_simp_share.json``:
    ``{"results": {video_id: [one score per class]}, "class": [names]}``) or a plain
    ``{video_id: {label: score}}`` (also accepted under ``"results"``). A video whose
    scores are malformed or not finite is skipped and named in ``bad`` and a warning."""
    doc = read_json(path)
    if not isinstance(doc, Mapping):
        raise ClassScoreError(locate(path, "a JSON object expected"))
    scores: dict[str, dict[str, float]] = {}
    bad: dict[str, str] = {}
    if "class" in doc:
        names = doc["class"]
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise ClassScoreError(locate(path, "a list of class names expected", field="class"))
        results = doc.get("results")
        if not isinstance(results, Mapping):
            raise ClassScoreError(locate(path, "an object {video_id: [scores]} expected",
                                         field="results"))
        for video_id, values in results.items():
            if not isinstance(values, list) or len(values) != len(names):
                bad[video_id] = f"{len(names)} scores expected, got {values!r:.60}"
            elif not all(_finite(v) for v in values):
                bad[video_id] = "scores must be finite numbers"
            else:
                scores[video_id] = {n: float(v) for n, v in zip(names, values, strict=True)}
        classes = tuple(names)
    else:
        results = doc["results"] if isinstance(doc.get("results"), Mapping) else doc
        seen: dict[str, None] = {}
        for video_id, values in results.items():
            if not isinstance(values, Mapping) or not all(
                    isinstance(k, str) and _finite(v) for k, v in values.items()):
                bad[video_id] = "an object {label: finite score} expected"
                continue
            scores[video_id] = {k: float(v) for k, v in values.items()}
            seen.update(dict.fromkeys(values))
        classes = tuple(seen)
    if bad:
        log.warning("%s: class scores of %d videos skipped: %s", path, len(bad),
                    ", ".join(f"{k} ({v})" for k, v in list(bad.items())[:5]))
    return ClassScores(str(path), classes, scores, bad)


def _finite(value: object) -> bool:
    return (isinstance(value, int | float) and not isinstance(value, bool)
            and math.isfinite(value))


# -- the result file -----------------------------------------------------------------------

def results_json(by_video: Mapping[str, Proposals | Detections], *,
                 version: str = RESULT_VERSION,
                 external_data: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The ActivityNet result document (what :func:`tspipe.localize.load_predictions`
    reads): ``Detections`` give entries with ``label``, ``Proposals`` without. Segments
    must already be in seconds; keys are written as given (the evaluator compares ids as
    written: ActivityNet's ground truth has no ``v_``)."""
    results: dict[str, list[dict[str, Any]]] = {}
    for video_id, items in by_video.items():
        seg = _segments(items.segments, f"results_json: video {video_id!r}")
        scores = np.asarray(items.scores, dtype=np.float64).reshape(-1).tolist()
        entries = [{"segment": [s, e], "score": x}
                   for (s, e), x in zip(seg.tolist(), scores, strict=True)]
        if isinstance(items, Detections):
            for entry, label in zip(entries, items.labels, strict=True):
                entry["label"] = label
        results[video_id] = entries
    return {"version": version, "results": results,
            "external_data": dict(external_data) if external_data is not None else {}}
