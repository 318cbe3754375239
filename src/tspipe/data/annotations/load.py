"""One entry point for every annotation format, and the read report as a JSON-able dict."""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

from tspipe.data.annotations.activitynet import read_activitynet
from tspipe.data.annotations.model import Annotations
from tspipe.data.annotations.thumos import read_thumos14, thumos_files
from tspipe.data.annotations.tsp_csv import (
    GROUNDTRUTH_COLUMNS,
    METADATA_COLUMNS,
    LabelMap,
    apply_metadata,
    read_tsp_groundtruth,
    read_tsp_metadata,
)
from tspipe.data.annotations.validate import is_background_issue
from tspipe.errors import AnnotationError

logger = logging.getLogger(__name__)

Format = Literal["auto", "activitynet", "thumos14", "tsp_csv"]
# An issue's field down to a reason: "subset (line 3)" -> subset, "video id" -> video_id.
_REASON = re.compile(r"\[| \(")


def detect_format(path: str | Path) -> Format:
    """``activitynet`` for a ``.json`` file, ``thumos14`` for a directory of
    ``<Class>_val.txt``/``<Class>_test.txt`` files, ``tsp_csv`` for a ``.csv`` with the TSP
    ground-truth header; else raise ``AnnotationError``."""
    path = Path(path)
    if path.is_dir():
        if thumos_files(path):
            return "thumos14"
        raise AnnotationError(path, "a directory without <Class>_val.txt / <Class>_test.txt")
    if path.suffix.lower() == ".json":
        return "activitynet"
    if path.suffix.lower() == ".csv":
        try:
            with path.open(encoding="utf-8-sig") as fh:
                header = [c.strip() for c in fh.readline().split(",")]
        except (OSError, UnicodeDecodeError) as exc:
            raise AnnotationError(path, f"cannot read the CSV header: {exc}") from exc
        if set(GROUNDTRUTH_COLUMNS) <= set(header):
            return "tsp_csv"
        what = "a video metadata CSV" if set(METADATA_COLUMNS) <= set(header) else "unknown"
        raise AnnotationError(path, f"CSV header {header} is {what}, not TSP ground truth",
                              field="header")
    raise AnnotationError(path, "unknown annotation format: expected .json, .csv or a "
                          "THUMOS14 directory")


def read_annotations(path: str | Path, *, format: Format = "auto", label_map: LabelMap = None,
                     metadata: str | Path | None = None, subsets: Iterable[str] | None = None,
                     clamp_to_duration: bool = True) -> Annotations:
    """Read annotations in any supported format (detected when ``format="auto"``).

    ``label_map``: class list or label map JSON path (order = class id). ``metadata``: a TSP
    metadata CSV filling durations (seconds), fps, frames and filenames. ``subsets``: keep
    only these subsets' videos (the read report keeps every issue of the file).
    """
    kind = detect_format(path) if format == "auto" else format
    if kind == "activitynet":
        ann = read_activitynet(path, label_map=label_map, clamp_to_duration=clamp_to_duration)
        if metadata is not None:
            apply_metadata(ann, read_tsp_metadata(metadata))
    elif kind == "thumos14":
        ann = read_thumos14(path, metadata_csv=metadata, label_map=label_map,
                            clamp_to_duration=clamp_to_duration)
    elif kind == "tsp_csv":
        ann = read_tsp_groundtruth(path, label_map=label_map, metadata_csv=metadata,
                                   clamp_to_duration=clamp_to_duration)
    else:
        raise AnnotationError(path, f"unknown format {format!r}", field="format")
    if subsets is not None:
        wanted = set(subsets)
        kept = {k: v for k, v in ann.videos.items() if v.subset in wanted}
        logger.info("%s: %d of %d videos are in subsets %s", path, len(kept), len(ann.videos),
                    sorted(wanted))
        ann.videos = kept
    counts = ann.counts()
    logger.info("%s: %d videos, %d segments, %d background, %d classes", path, counts.videos,
                counts.segments, counts.background, counts.classes)
    return ann


def summary(ann: Annotations) -> dict[str, Any]:
    """Counts of what was read, kept, dropped and clamped: a JSON-able report.

    ``dropped``/``clamped`` count issues by their action; segments and background intervals
    apart. ``dropped_videos_by_reason``: dropped videos by the field of their issue
    (``subset``, ``video_id``, ``duration``...). ``kept`` + ``dropped`` accounts for every
    item of the file.
    """
    per_subset: dict[str, dict[str, int]] = {}
    for video in ann.videos.values():
        row = per_subset.setdefault(video.subset or "unknown",
                                    {"videos": 0, "segments": 0, "background": 0})
        row["videos"] += 1
        row["segments"] += len(video.segments)
        row["background"] += len(video.background)
    actions = Counter(
        (i.action, "background" if is_background_issue(i) else "segments") for i in ann.issues)
    reasons = Counter(_REASON.split(i.field)[0].strip().replace(" ", "_")
                      for i in ann.issues if i.action == "dropped_video")
    counts = ann.counts()
    return {
        "source": ann.source,
        "classes": counts.classes,
        "videos": counts.videos,
        "segments": counts.segments,
        "background": counts.background,
        "per_subset": dict(sorted(per_subset.items())),
        "errors": len(ann.errors()),
        "warnings": len(ann.warnings()),
        "kept": {"videos": counts.videos, "segments": counts.segments,
                 "background": counts.background},
        "dropped": {"videos": sum(reasons.values()),
                    "segments": actions["dropped_segment", "segments"],
                    "background": actions["dropped_segment", "background"]},
        "dropped_videos_by_reason": dict(sorted(reasons.items())),
        "clamped": {"segments": actions["clamped", "segments"],
                    "background": actions["clamped", "background"]},
    }
