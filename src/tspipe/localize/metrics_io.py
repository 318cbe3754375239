"""Ground truth and predictions for the localization metrics, read the way the official
ActivityNet evaluation (activitynet/ActivityNet ``Evaluation/``) reads them, into columns.

Ground truth: an ActivityNet v1.3 JSON (``.json`` / ``.json.gz``) is read *raw*, as the
official code reads it: segments are kept as written (not clipped to the video, zero-length
ones kept), the classes are the labels seen in the kept videos in first-seen order, and a
video without annotations is no ground-truth video at all. Any other format goes through
``tspipe.data.annotations`` (whose readers clamp segments past the video's end and drop
zero-length ones; a warning counts them).

Predictions: the ActivityNet result JSON, ``{"version", "external_data", "results":
{video_id: [{"label", "score", "segment": [t_start, t_end]}]}}``; proposals have no label.
Keys are video ids compared *as given* with the ground truth's: the ActivityNet JSON has
ids without ``v_`` (as do TSP's ground-truth CSVs), while TSP's file names and many feature
files say ``v_<id>``; a prediction under ``v_<id>`` is a prediction for another video.
Not reproduced (no effect on any number): the official readers refuse a ground truth
without ``taxonomy``/``version`` and a result file without ``version``/``external_data``.
"""

from __future__ import annotations

import contextlib
import gc
import gzip
import json
import logging
import math
import numbers
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from tspipe.data.annotations import Annotations, read_annotations
from tspipe.errors import AnnotationError, TspipeError, locate

try:  # a faster parser when present; the standard library otherwise
    import orjson
except ImportError:  # pragma: no cover - orjson comes with prefect
    orjson = None  # type: ignore[assignment]

logger = logging.getLogger(__name__)

_NUMBER = frozenset({int, float})  # JSON numbers; bool is no number here


class EvaluationError(TspipeError):
    """An evaluation cannot run: bad thresholds, no ground truth in the subset."""


class PredictionError(EvaluationError):
    """A result file (or one of its entries) cannot be evaluated."""

    def __init__(self, file: str | Path, message: str, *, video_id: str | None = None,
                 entry: int | None = None, field: str | None = None) -> None:
        self.file = str(file)
        self.video_id = video_id
        self.entry = entry
        self.field = field
        super().__init__(locate(file, message, video_id=video_id, entry=entry, field=field))


@dataclass(frozen=True, eq=False)
class GroundTruth:
    """Ground-truth segments of one subset, one row per segment (G rows).

    ``video_ids``: videos with at least one segment, first-seen order; ``classes``: labels
    in first-seen order (the official class index). Arrays: ``video``, ``label`` (int64
    indices into those), ``t_start``, ``t_end`` (float64 seconds), all ``(G,)``.
    """

    video_ids: tuple[str, ...]
    classes: tuple[str, ...]
    video: np.ndarray
    label: np.ndarray
    t_start: np.ndarray
    t_end: np.ndarray
    subset: str
    source: str

    def __len__(self) -> int:
        return len(self.video)


@dataclass(frozen=True, eq=False)
class Predictions:
    """Predicted segments (detections or proposals), one row per entry (N rows).

    ``video_ids``: every video of the result file that was not blocked, file order (an
    empty list still names its video). Arrays, all ``(N,)``: ``video`` (index into
    ``video_ids``), ``entry`` (index in that video's list, for messages), ``t_start``,
    ``t_end`` (float64 seconds), ``score`` (float64) and, for detections, ``label`` (index
    into ``labels``). Rows are in file order, which decides ties (see ``metrics``).
    """

    video_ids: tuple[str, ...]
    video: np.ndarray
    entry: np.ndarray
    t_start: np.ndarray
    t_end: np.ndarray
    score: np.ndarray
    labels: tuple[str, ...] | None
    label: np.ndarray | None
    source: str
    blocked_videos: int = 0

    def __len__(self) -> int:
        return len(self.video)

    def where(self, row: int) -> tuple[str, int]:
        """(video id, entry index) of a row, for messages."""
        return self.video_ids[int(self.video[row])], int(self.entry[row])


def read_json(path: str | Path) -> Any:
    """A JSON file, gzip-compressed when its name ends in ``.gz``.

    orjson parses when installed (it comes with prefect and dvc), else the standard
    library, which also reads the NaN that ``json.dump`` writes for a NaN score (so that
    the entry check can name it). The cyclic garbage collector is paused meanwhile: a
    result file is half a million small dicts, and collections triggered by their
    allocation took 40% of the time (1.8 s -> 1.2 s with json, 1.1 s -> 0.5 s with orjson,
    54 MB of ActivityNet-size results, measured).
    """
    path = Path(path)
    try:
        data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise TspipeError(f"{path}: cannot read the file: {exc}") from exc
    paused = gc.isenabled()
    gc.disable()
    try:
        if orjson is not None:
            with contextlib.suppress(orjson.JSONDecodeError):
                return orjson.loads(data)
        return json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise TspipeError(f"{path}: not UTF-8 text: {exc}") from exc
    except json.JSONDecodeError as exc:
        raise TspipeError(f"{path}: malformed JSON at line {exc.lineno}, column {exc.colno}: "
                          f"{exc.msg}") from exc
    finally:
        if paused:
            gc.enable()


def read_blocked(path: str | Path) -> frozenset[str]:
    """A blocked-video list: a JSON list of video ids (the official code's blocked list,
    OpenTAD's ``blocked.json``). Ids are compared as given."""
    ids = read_json(path)
    if not isinstance(ids, list) or not all(isinstance(v, str) for v in ids):
        raise TspipeError(f"{path}: a blocked list is a JSON list of video ids (strings)")
    return frozenset(ids)


def _is_json_path(path: Path) -> bool:
    return path.name.lower().endswith((".json", ".json.gz"))


def load_ground_truth(source: Any, *, subset: str = "validation",
                      blocked: Collection[str] = frozenset()) -> GroundTruth:
    """The ground truth of ``subset`` without the ``blocked`` videos.

    ``source``: a ``GroundTruth`` (``blocked`` applied, unused classes and videos
    dropped; ``subset`` is not looked at), an ``Annotations``, an
    ActivityNet document (dict) or a path (ActivityNet JSON read raw; other formats through
    ``tspipe.data.annotations.read_annotations``).
    """
    if isinstance(source, GroundTruth):
        return _drop_blocked(source, blocked)
    if isinstance(source, Annotations):
        return _from_annotations(source, subset, blocked)
    if isinstance(source, Mapping):
        return _from_document(source, subset, blocked, "<ground truth>")
    path = Path(source)
    if _is_json_path(path):
        return _from_document(read_json(path), subset, blocked, str(path))
    ann = read_annotations(path)
    altered = [i for i in ann.issues if i.action in ("clamped", "dropped_segment")
               and not i.field.startswith("background")
               and ann.videos.get(i.video_id or "") is not None
               and ann.videos[i.video_id or ""].subset == subset]
    if altered:
        logger.warning("%s: the reader clamped or dropped %d ground-truth segments of subset "
                       "%r (first: %s); the official evaluation reads ActivityNet JSON segments "
                       "as written, so numbers may differ from it slightly", path, len(altered),
                       subset, altered[0])
    return _from_annotations(ann, subset, blocked)


def _from_annotations(ann: Annotations, subset: str, blocked: Collection[str]) -> GroundTruth:
    rows = ((video.video_id, s.label, s.t_start, s.t_end)
            for video in ann.videos.values() if video.subset == subset
            and video.video_id not in blocked for s in video.segments)
    return _columns(rows, subset, ann.source or "<annotations>")


def _from_document(doc: Mapping[str, Any], subset: str, blocked: Collection[str],
                   source: str) -> GroundTruth:
    database = doc.get("database")
    if not isinstance(database, Mapping):
        raise AnnotationError(source, "no top-level 'database' object", field="database")

    def rows() -> Iterable[tuple[str, str, float, float]]:
        for video_id, entry in database.items():
            if not isinstance(entry, Mapping):
                raise AnnotationError(source, "not an object", video_id=video_id)
            if entry.get("subset") != subset or video_id in blocked:
                continue
            annotations = entry.get("annotations")
            if not isinstance(annotations, list):  # the official reader fails here too
                raise AnnotationError(source, "missing or not a list", video_id=video_id,
                                      field="annotations")
            for i, ann in enumerate(annotations):
                problem = _entry_problem(ann, with_label=True, with_score=False)
                if problem is not None:
                    raise AnnotationError(source, problem[1], video_id=video_id,
                                          field=f"annotations[{i}].{problem[0]}")
                yield video_id, ann["label"], float(ann["segment"][0]), float(ann["segment"][1])

    return _columns(rows(), subset, source)


def _columns(rows: Iterable[tuple[str, str, float, float]], subset: str,
             source: str) -> GroundTruth:
    videos: dict[str, int] = {}
    classes: dict[str, int] = {}
    video, label, t_start, t_end = [], [], [], []
    for video_id, name, start, end in rows:
        video.append(videos.setdefault(video_id, len(videos)))
        label.append(classes.setdefault(name, len(classes)))
        t_start.append(start)
        t_end.append(end)
    return GroundTruth(
        video_ids=tuple(videos), classes=tuple(classes),
        video=np.array(video, dtype=np.int64), label=np.array(label, dtype=np.int64),
        t_start=np.array(t_start, dtype=np.float64), t_end=np.array(t_end, dtype=np.float64),
        subset=subset, source=source)


def _drop_blocked(gt: GroundTruth, blocked: Collection[str]) -> GroundTruth:
    """``gt`` without the blocked videos, its classes and videos those with segments left
    (first-seen order, as the official reader derives them)."""
    keep = ~np.isin(gt.video, [i for i, v in enumerate(gt.video_ids) if v in blocked])
    if keep.all() and np.array_equal(np.unique(gt.label), np.arange(len(gt.classes))) \
            and np.array_equal(np.unique(gt.video), np.arange(len(gt.video_ids))):
        return gt
    rows = zip((gt.video_ids[v] for v in gt.video[keep]), (gt.classes[c] for c in gt.label[keep]),
               gt.t_start[keep].tolist(), gt.t_end[keep].tolist(), strict=True)
    return _columns(rows, gt.subset, gt.source)


def load_predictions(source: Any, *, with_labels: bool,
                     blocked: Collection[str] = frozenset()) -> Predictions:
    """Predictions from a ``Predictions`` (``blocked`` applied), a result document (dict)
    or a result JSON path (``.json`` or ``.json.gz``), without the ``blocked`` videos.

    Every entry is checked: an entry that is not an object, a missing field, a segment that
    is not two finite numbers or ends before it starts, a score that is not a finite number
    or (``with_labels``) a label that is not a string raises ``PredictionError`` naming the
    video and the entry index. Zero-length segments and segments outside the video are kept.
    """
    if isinstance(source, Predictions):
        if with_labels and source.label is None:
            raise PredictionError(source.source, "detections need labels; these have none",
                                  field="label")
        return _filter_videos(source, blocked)
    if isinstance(source, Mapping):
        name, doc = "<predictions>", source
    else:
        name, doc = str(source), read_json(source)
    results = doc.get("results") if isinstance(doc, Mapping) else None
    if not isinstance(results, Mapping):
        raise PredictionError(name, "no top-level 'results' object {video_id: [entries]}",
                              field="results")
    return _parse_results(results, name, with_labels, blocked)


def _parse_results(results: Mapping[str, Any], source: str, with_labels: bool,
                   blocked: Collection[str]) -> Predictions:
    video_ids: list[str] = []
    counts, starts, ends, scores, labels = [], [], [], [], []
    label_index: dict[Any, int] = {}
    n_blocked = 0
    for video_id, entries in results.items():
        if video_id in blocked:  # skipped before any check, as the official reader does
            n_blocked += 1
            continue
        if not isinstance(entries, list):
            raise PredictionError(source, f"a list of entries expected, got "
                                  f"{type(entries).__name__}", video_id=video_id)
        # One pass per column over plain lists: the fast path, for JSON's int and float.
        # Anything else goes entry by entry: numpy scalars pass, a bad entry is named.
        try:
            segments = [e["segment"] for e in entries]
            v_start = [s[0] for s in segments]
            v_end = [s[1] for s in segments]
            v_score = [e["score"] for e in entries]
            v_label = [e["label"] for e in entries] if with_labels else []
            ok = (all(type(s) is list and len(s) == 2 for s in segments)
                  and _NUMBER.issuperset(map(type, v_start))
                  and _NUMBER.issuperset(map(type, v_end))
                  and _NUMBER.issuperset(map(type, v_score))
                  and all(type(x) is str for x in v_label))
        except (KeyError, TypeError, IndexError):
            ok = False
        if not ok:
            _check_entries(source, video_id, entries, with_labels)
            v_start = [float(e["segment"][0]) for e in entries]
            v_end = [float(e["segment"][1]) for e in entries]
            v_score = [float(e["score"]) for e in entries]
            v_label = [e["label"] for e in entries] if with_labels else []
        video_ids.append(video_id)
        counts.append(len(entries))
        starts += v_start
        ends += v_end
        scores += v_score
        labels += [label_index.setdefault(x, len(label_index)) for x in v_label]
    n = sum(counts)
    video = np.repeat(np.arange(len(video_ids), dtype=np.int64), counts)
    entry = np.arange(n, dtype=np.int64) - np.repeat(np.cumsum(counts, dtype=np.int64)
                                                     - np.asarray(counts, dtype=np.int64), counts)
    t_start = np.array(starts, dtype=np.float64)
    t_end = np.array(ends, dtype=np.float64)
    score = np.array(scores, dtype=np.float64)
    bad = ~(np.isfinite(t_start) & np.isfinite(t_end) & np.isfinite(score)) | (t_end < t_start)
    if bad.any():
        video_id = video_ids[int(video[int(np.argmax(bad))])]
        _check_entries(source, video_id, results[video_id], with_labels)
    return Predictions(
        video_ids=tuple(video_ids), video=video, entry=entry, t_start=t_start, t_end=t_end,
        score=score, labels=tuple(label_index) if with_labels else None,
        label=np.array(labels, dtype=np.int64) if with_labels else None, source=source,
        blocked_videos=n_blocked)


def _check_entries(source: str, video_id: str, entries: list[Any], with_labels: bool) -> None:
    """Raise ``PredictionError`` for the first bad entry of a video, if any."""
    for i, entry in enumerate(entries):
        problem = _entry_problem(entry, with_label=with_labels, with_score=True)
        if problem is not None:
            raise PredictionError(source, problem[1], video_id=video_id, entry=i,
                                  field=problem[0] or None)


def _entry_problem(entry: object, *, with_label: bool,
                   with_score: bool) -> tuple[str, str] | None:
    """(field, what is wrong) with one entry, or None when it is fine."""
    if not isinstance(entry, Mapping):
        return "", f"an object expected, got {type(entry).__name__}"
    segment = entry.get("segment")
    if segment is None:
        return "segment", "missing"
    if not isinstance(segment, list | tuple) or len(segment) != 2:
        return "segment", f"not a [t_start, t_end] pair: {segment!r}"
    if not all(_is_finite_number(t) for t in segment):
        return "segment", f"times must be finite numbers (seconds): {segment!r}"
    if segment[1] < segment[0]:
        return "segment", f"end {segment[1]!r} s < start {segment[0]!r} s"
    if with_score:
        if "score" not in entry:
            return "score", "missing"
        if not _is_finite_number(entry["score"]):
            return "score", f"not a finite number: {entry['score']!r}"
    if with_label:
        if "label" not in entry:
            return "label", "missing"
        if not isinstance(entry["label"], str):
            return "label", f"not a string: {entry['label']!r}"
    return None


def _is_finite_number(value: object) -> bool:
    """A real number (numpy scalars too), not a bool, finite."""
    return (isinstance(value, numbers.Real) and not isinstance(value, bool | np.bool_)
            and math.isfinite(value))


def _filter_videos(pred: Predictions, blocked: Collection[str]) -> Predictions:
    drop = [i for i, v in enumerate(pred.video_ids) if v in blocked]
    if not drop:
        return pred
    keep_ids = [i for i in range(len(pred.video_ids)) if i not in set(drop)]
    remap = np.full(len(pred.video_ids), -1, dtype=np.int64)
    remap[keep_ids] = np.arange(len(keep_ids))
    rows = remap[pred.video] >= 0
    return replace(
        pred, video_ids=tuple(pred.video_ids[i] for i in keep_ids), video=remap[pred.video][rows],
        entry=pred.entry[rows], t_start=pred.t_start[rows], t_end=pred.t_end[rows],
        score=pred.score[rows], label=None if pred.label is None else pred.label[rows],
        blocked_videos=pred.blocked_videos + len(drop))
