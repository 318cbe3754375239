"""TSP's ground-truth segment table (actions and background) and the clip tables' files.

One row per action segment and per background gap, with TSP's columns (snake_case; see
``REFERENCE_COLUMNS`` for the CSV's names). :mod:`tspipe.data.clips_compare` checks the
table against TSP's published CSVs. The clip sampler lives in
:mod:`tspipe.data.clip_sampler` and is re-exported here: ``from tspipe.data.clips import
ClipSampler``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Literal, NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from tspipe.data.annotations import Annotations, Video
from tspipe.data.annotations.tsp_csv import ACTION, GROUNDTRUTH_COLUMNS, NO_ACTION
from tspipe.data.clip_sampler import (
    TIME_TOLERANCE_S,
    WINDOWS_SCHEMA,
    ClipSampler,
    VideoLength,
    Window,
    as_fraction,
    windows_table,
)
from tspipe.errors import AnnotationError, StageError
from tspipe.io import atomic_path

__all__ = [
    "GROUNDTRUTH_SCHEMA", "REFERENCE_BACKGROUND_CLIPS", "REFERENCE_COLUMNS", "REGION_LABELS",
    "TIME_TOLERANCE_S", "WINDOWS_SCHEMA", "ClipSampler", "GapRule", "TrainableSegments",
    "VideoLength", "Window", "as_fraction", "background_gaps", "build_groundtruth",
    "read_table", "to_reference_columns", "trainable_segments", "windows_table",
    "write_table",
]

logger = logging.getLogger(__name__)

_TOL = float(TIME_TOLERANCE_S)

# How background gaps are cut from the action segments of a video:
#   "merged":      segments that overlap or touch are merged first; a gap is a stretch of
#                  [0, duration] covered by no segment, so background never overlaps an action.
#   "consecutive": TSP's published tables: segments sorted by start (ties in the
#                  annotations' order), a gap runs from one segment's end to the next one's
#                  start. A segment nested in a longer one opens a false gap inside the longer
#                  one (about 100 rows of ActivityNet train overlap an action). Kept to
#                  reproduce the reference.
GapRule = Literal["merged", "consecutive"]
REGION_LABELS = (ACTION, NO_ACTION)  # index = TSP's temporal region id
# TSP's tables keep background gaps at least this many clips long (16 frames at 15 fps):
# five on ActivityNet (shortest row 5.334 s, 16/3 s = 5.333), one on THUMOS14 (1.067 s).
REFERENCE_BACKGROUND_CLIPS = {"activitynet": 5, "thumos14": 1}

GROUNDTRUTH_SCHEMA = pa.schema([
    ("video_id", pa.string()),
    ("t_start", pa.float64()),       # seconds, within [0, video_duration]
    ("t_end", pa.float64()),
    ("action_label", pa.string()),   # null for background
    ("action_index", pa.int32()),    # position in the class list; -1 for background
    ("region_label", pa.string()),   # "Action" / "No action"
    ("region_index", pa.int8()),     # 0 Action / 1 No action
    ("video_duration", pa.float64()),
    ("fps", pa.float64()),
    ("video_frames", pa.int64()),
    ("filename", pa.string()),
    ("subset", pa.string()),
])
# Our column -> the column of TSP's ground-truth CSV (the indices and subset have none).
REFERENCE_COLUMNS = {
    "video_id": "video-name", "t_start": "t-start", "t_end": "t-end",
    "action_label": "action-label", "video_duration": "video-duration",
    "filename": "filename", "fps": "fps", "video_frames": "video-frames",
    "region_label": "temporal-region-label",
}


def build_groundtruth(ann: Annotations, *, min_background: float,
                      gaps: GapRule = "merged") -> pa.Table:
    """TSP's segment table: one row per action segment and per background gap.

    Action rows are the annotations' segments, clamped to ``[0, duration]`` (a segment left
    empty is dropped and logged). Background rows are the gaps of ``[0, duration]`` between
    the action segments (``gaps`` says how, see ``GapRule``), before the first and after
    the last one included, kept when at least ``min_background`` seconds long (within
    ``TIME_TOLERANCE_S``; a gap of zero length is never a row). ``Video.background`` is not
    read: background is always derived. A video without segments has no row (an
    unannotated video is not known to be action-free); one without a duration gets no
    background. Rows are ordered by video (the annotations' order), then time.
    """
    if min_background < 0:
        raise ValueError(f"min_background must be >= 0 s, got {min_background}")
    if gaps not in ("merged", "consecutive"):
        raise ValueError(f"gaps must be 'merged' or 'consecutive', got {gaps!r}")
    videos = list(ann.videos.values())
    action_video, bounds, action_class = _action_segments(ann, videos)
    duration = np.asarray([np.nan if v.duration is None else v.duration for v in videos],
                          dtype=np.float64)
    known = ~np.isnan(duration[action_video])
    if not known.all():
        logger.warning("%d videos have no duration and get no background row",
                       len(np.unique(action_video[~known])))
    bg_video, bg_start, bg_end = background_gaps(
        action_video[known], bounds[known, 0], bounds[known, 1], duration,
        min_background=min_background, gaps=gaps)

    row_video = np.concatenate([action_video, bg_video])
    t_start = np.concatenate([bounds[:, 0], bg_start])
    t_end = np.concatenate([bounds[:, 1], bg_end])
    region = np.repeat(np.array([0, 1], dtype=np.int8), [len(action_video), len(bg_video)])
    action_index = np.concatenate([action_class, np.full(len(bg_video), -1, dtype=np.int32)])
    order = np.lexsort((t_end, region, t_start, row_video))
    row_video, t_start, t_end = row_video[order], t_start[order], t_end[order]
    region, action_index = region[order], action_index[order]

    take = pa.array(row_video)
    per_video = {
        "video_id": pa.array([v.video_id for v in videos], pa.string()),
        "video_duration": pa.array(duration, pa.float64(), from_pandas=True),
        "fps": pa.array([v.fps for v in videos], pa.float64()),
        "video_frames": pa.array([v.num_frames for v in videos], pa.int64()),
        "filename": pa.array([v.filename for v in videos], pa.string()),
        "subset": pa.array([v.subset for v in videos], pa.string()),
    }
    background = action_index < 0
    columns = {
        "video_id": per_video["video_id"].take(take),
        "t_start": t_start,
        "t_end": t_end,
        "action_label": pa.array(ann.classes, pa.string()).take(
            pa.array(np.where(background, 0, action_index), mask=background)),
        "action_index": action_index,
        "region_label": pa.array(REGION_LABELS, pa.string()).take(pa.array(region)),
        "region_index": region,
        **{name: per_video[name].take(take)
           for name in ("video_duration", "fps", "video_frames", "filename", "subset")},
    }
    logger.info("ground truth: %d action rows, %d background rows (%s gaps >= %g s)",
                len(action_video), len(bg_video), gaps, min_background)
    metadata = {"tspipe.background.gaps": gaps,
                "tspipe.background.min_s": repr(float(min_background))}
    return pa.table(columns, schema=GROUNDTRUTH_SCHEMA.with_metadata(metadata))


def _action_segments(ann: Annotations, videos: list[Video]
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every segment clamped to its video: (video position, ``(N, 2)`` seconds, class id)."""
    class_index = {c: i for i, c in enumerate(ann.classes)}
    seg_video: list[int] = []
    seg_bounds: list[tuple[float, float]] = []
    seg_class: list[int] = []
    emptied = 0
    for i, video in enumerate(videos):
        for seg in video.segments:
            t_start = max(seg.t_start, 0.0)
            t_end = seg.t_end if video.duration is None else min(seg.t_end, video.duration)
            if t_end - t_start <= _TOL:
                emptied += 1
                continue
            if seg.label not in class_index:
                raise AnnotationError(ann.source or "annotations", f"label {seg.label!r} is "
                                      "not in the class list", video_id=video.video_id,
                                      field="segments")
            seg_video.append(i)
            seg_bounds.append((t_start, t_end))
            seg_class.append(class_index[seg.label])
    if emptied:
        logger.warning("%d segments are empty once clamped to their video and get no row",
                       emptied)
    return (np.asarray(seg_video, dtype=np.int64),
            np.asarray(seg_bounds, dtype=np.float64).reshape(-1, 2),
            np.asarray(seg_class, dtype=np.int32))


def background_gaps(video: np.ndarray, t_start: np.ndarray, t_end: np.ndarray,
                    duration: np.ndarray, *, min_background: float,
                    gaps: GapRule = "merged") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The background gaps of segments given as arrays: ``(video, gap_start, gap_end)``.

    ``video[i]`` indexes ``duration`` (seconds). Segments may come in any order; for the
    "consecutive" rule, segments starting together keep their given order. See
    :func:`build_groundtruth` for the rule.
    """
    order = np.lexsort((t_start, video))  # stable: ties stay in the given order
    video, t_start, t_end = video[order], t_start[order], t_end[order]
    first = np.ones(len(video), dtype=bool)
    first[1:] = video[1:] != video[:-1]
    last = np.ones(len(video), dtype=bool)
    last[:-1] = first[1:]
    reach = _grouped_cummax(video, t_end) if gaps == "merged" else t_end
    before = np.where(first, 0.0, np.roll(reach, 1))
    gap_video = np.concatenate([video, video[last]])
    gap_start = np.concatenate([before, reach[last]])
    gap_end = np.concatenate([t_start, duration[video[last]]])
    length = gap_end - gap_start
    keep = (length > _TOL) & (length >= min_background - _TOL)
    return gap_video[keep], gap_start[keep], gap_end[keep]


def _grouped_cummax(group: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Running maximum of ``values`` restarting at each group (``group`` non-decreasing).

    Exact: the running maximum is taken over integer keys ``group * n + rank(value)``.
    """
    n = len(values)
    by_value = np.argsort(values, kind="stable")
    rank = np.empty(n, dtype=np.int64)
    rank[by_value] = np.arange(n)
    offset = group.astype(np.int64) * n
    return values[by_value[np.maximum.accumulate(offset + rank) - offset]]


class TrainableSegments(NamedTuple):
    """The rows of a ground-truth table that hold a clip, and how many did not."""

    table: pa.Table
    dropped_action: int
    dropped_background: int


def trainable_segments(table: pa.Table, sampler: ClipSampler) -> TrainableSegments:
    """Drop the rows shorter than one clip (:meth:`ClipSampler.fits`, TSP's rule)."""
    fits = sampler.fits_mask(table["t_start"].to_numpy(), table["t_end"].to_numpy())
    background = table["region_index"].to_numpy() == 1
    dropped = TrainableSegments(table.filter(pa.array(fits)),
                                int((~fits & ~background).sum()),
                                int((~fits & background).sum()))
    if dropped.dropped_action or dropped.dropped_background:
        logger.info("dropped %d action and %d background rows shorter than one clip (%.3f s)",
                    dropped.dropped_action, dropped.dropped_background,
                    float(sampler.clip_duration))
    return dropped


def to_reference_columns(table: pa.Table) -> pa.Table:
    """A ground-truth table with TSP's CSV columns, names and order (background label "")."""
    out = table.select(list(REFERENCE_COLUMNS)).rename_columns(list(REFERENCE_COLUMNS.values()))
    labels = pc.fill_null(out["action-label"], "")
    return out.set_column(out.column_names.index("action-label"), "action-label", labels) \
        .select(list(GROUNDTRUTH_COLUMNS))


# -- Parquet ----------------------------------------------------------------------------
def write_table(table: pa.Table, path: str | Path) -> Path:
    """Write ``table`` as Parquet atomically (temp file, then rename)."""
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)
    return Path(path)


def read_table(path: str | Path, *, schema: pa.Schema | None = None) -> pa.Table:
    """Read a Parquet table; with ``schema``, check it has those columns and types."""
    path = Path(path)
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowException) as exc:
        raise StageError(f"{path}: cannot read the Parquet table: {exc}") from exc
    if schema is None:
        return table
    missing = [f.name for f in schema if f.name not in table.column_names]
    if missing:
        raise StageError(f"{path}: the table lacks columns {missing}")
    wrong = [f"{f.name} ({table.schema.field(f.name).type}, expected {f.type})"
             for f in schema if not table.schema.field(f.name).type.equals(f.type)]
    if wrong:
        raise StageError(f"{path}: columns of the wrong type: {', '.join(wrong)}")
    return table
