"""TSP's CSV files: ground truth (one row per action or background interval), video metadata
and label maps.

Ground truth columns: ``video-name,t-start,t-end,action-label,video-duration,filename,fps,
video-frames,temporal-region-label``; times and durations in seconds, ``fps`` frames per
second. The reference files list every ``Action`` row first (video by video, in the order
of the metadata CSV) and then every ``No action`` row, videos sorted by file name; the
writer follows the same layout so a clean file is rewritten byte for byte.
"""

from __future__ import annotations

import csv
import io
import json
import logging
from collections.abc import Sequence
from pathlib import Path

from tspipe.data.annotations.model import Action, Annotations, Segment, Video
from tspipe.data.annotations.validate import (
    BACKGROUND,
    IssueLog,
    check_interval,
    check_label,
    infer_subset,
    log_report,
    parse_frames,
    parse_number,
)
from tspipe.errors import AnnotationError
from tspipe.io import atomic_write_text

logger = logging.getLogger(__name__)

GROUNDTRUTH_COLUMNS = ("video-name", "t-start", "t-end", "action-label", "video-duration",
                       "filename", "fps", "video-frames", "temporal-region-label")
METADATA_COLUMNS = ("filename", "video-duration", "fps", "video-frames")
ACTION, NO_ACTION = "Action", "No action"
# Metadata durations have 15 significant digits, the ground truth's 17 (126.133333333333
# vs 126.13333333333334): a mismatch is one larger than a millisecond, far below a frame.
_DURATION_TOLERANCE_S = 1e-3

LabelMap = Sequence[str] | str | Path | None


def read_label_map(path: str | Path) -> list[str]:
    """A label map JSON: a list of class names, index = class id."""
    try:
        labels = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise AnnotationError(path, f"cannot read the label map: {exc}") from exc
    except json.JSONDecodeError as exc:
        raise AnnotationError(
            path, f"malformed JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}") from exc
    if not isinstance(labels, list) or not all(isinstance(x, str) and x for x in labels):
        raise AnnotationError(path, "a label map is a JSON list of non-empty strings")
    return _unique_labels(labels, path)


def resolve_label_map(label_map: LabelMap) -> list[str] | None:
    """A label map given as a list (used as is) or as the path of a label map JSON."""
    if label_map is None:
        return None
    if isinstance(label_map, str | Path):
        return read_label_map(label_map)
    return _unique_labels(list(label_map), "label_map")


def _unique_labels(labels: list[str], where: str | Path) -> list[str]:
    seen: set[str] = set()
    for i, label in enumerate(labels):
        if label in seen:
            raise AnnotationError(where, f"label {label!r} appears twice", field=f"[{i}]")
        seen.add(label)
    return labels


def _read_rows(path: Path, required: Sequence[str],
               log: IssueLog) -> csv.DictReader[str]:
    """A DictReader over ``path`` whose header has every ``required`` column, else raise.

    Other columns are reported (warning): tspipe does not keep them.
    """
    try:
        text = path.read_text(encoding="utf-8-sig")  # tolerate a spreadsheet's BOM
    except (OSError, UnicodeDecodeError) as exc:
        raise AnnotationError(path, f"cannot read the CSV: {exc}") from exc
    buffer = io.StringIO(text, newline="")
    reader = csv.DictReader(buffer)
    try:
        header = reader.fieldnames
    except csv.Error as exc:
        raise AnnotationError(path, f"unreadable CSV header: {exc}", field="header") from exc
    missing = [c for c in required if c not in (header or [])]
    if missing:
        raise AnnotationError(
            path, f"CSV header {header!r} lacks columns {missing}", field="header")
    unknown = [c for c in header or [] if c not in required]
    if unknown:
        log.warning(None, "header", f"columns {unknown} are not read")
    return reader


def _video_fields(row: dict[str, str], log: IssueLog, video_id: str, line: int, *,
                  prefix: str, action: Action) -> Video | None:
    """duration (s), fps, frames and filename of one row; None (error logged) if one is bad.

    An empty cell is an unknown value (None), written back empty.
    """
    def cell(name: str) -> str:
        return (row.get(name) or "").strip()

    def where(name: str) -> str:
        return f"{prefix}{name} (line {line})"

    positive: dict[str, float | None] = {}
    for name in ("video-duration", "fps"):
        value = parse_number(cell(name), log, video_id, where(name), action) if cell(name) else None
        if cell(name) and value is None:
            return None
        if value is not None and value <= 0:
            log.error(video_id, where(name), f"must be > 0, got {cell(name)!r}", action)
            return None
        positive[name] = value
    frames = None
    if cell("video-frames"):
        frames = parse_frames(cell("video-frames"), log, video_id, where("video-frames"), action)
        if frames is None:
            return None
    return Video(video_id, duration=positive["video-duration"], fps=positive["fps"],
                 num_frames=frames, filename=cell("filename") or None)


def read_tsp_metadata(path: str | Path) -> Annotations:
    """A TSP metadata CSV (``filename,video-duration,fps,video-frames``) as videos.

    Videos are keyed by the file stem (``v_JDg--pjY5gg.mp4`` -> ``v_JDg--pjY5gg``) and have
    no segments; ``issues`` reports duplicate file names and bad numbers (video dropped).
    """
    path = Path(path)
    log = IssueLog(str(path))
    reader = _read_rows(path, METADATA_COLUMNS, log)
    videos: dict[str, Video] = {}
    try:
        for row in reader:
            line = reader.line_num
            filename = (row.get("filename") or "").strip()
            if _ragged(row):
                log.error(filename or None, f"line {line}", "wrong number of cells",
                          "dropped_video")
                continue
            if not filename:
                log.error(None, f"filename (line {line})", "missing", "dropped_video")
                continue
            video_id = Path(filename).stem
            video = _video_fields(row, log, video_id, line, prefix="", action="dropped_video")
            if video is None:
                continue
            if video_id in videos:
                log.error(video_id, f"filename (line {line})",
                          f"duplicate video {filename!r}: the first row is kept", "dropped_video")
                continue
            videos[video_id] = video
    except csv.Error as exc:
        raise AnnotationError(path, f"malformed CSV at line {reader.line_num}: {exc}") from exc
    log_report(path, log.issues)
    return Annotations(videos=videos, source=str(path), issues=log.issues)


def write_tsp_metadata(ann: Annotations, path: str | Path) -> Path:
    """Write ``filename,video-duration,fps,video-frames`` (seconds, frames per second,
    frames; an empty cell is unknown) for every video that knows one of them.

    A video without a ``filename`` is written as ``<video_id>.mp4``.
    """
    rows = [[v.filename or f"{v.video_id}.mp4", _num(v.duration), _num(v.fps),
             "" if v.num_frames is None else str(v.num_frames)]
            for v in ann.videos.values()
            if (v.filename, v.duration, v.fps, v.num_frames) != (None, None, None, None)]
    return atomic_write_text(path, _csv_text(METADATA_COLUMNS, rows))


def metadata_index(metadata: Annotations) -> dict[str, Video]:
    """Metadata videos by file name, for :func:`find_metadata`."""
    return {m.filename: m for m in metadata.videos.values() if m.filename}


def find_metadata(by_file: dict[str, Video], video_id: str,
                  filename: str | None = None) -> Video | None:
    """The metadata of a video: by its filename, then ``<id>.mp4``, then ``v_<id>.mp4``
    (TSP's ActivityNet files name ``v_<youtube id>.mp4`` the video ``<youtube id>``)."""
    return (by_file.get(filename or "") or by_file.get(f"{video_id}.mp4")
            or by_file.get(f"v_{video_id}.mp4"))


def apply_metadata(ann: Annotations, metadata: Annotations) -> None:
    """Fill each video's unknown duration/fps/frames/filename from ``metadata``, in place.

    Videos are matched by :func:`find_metadata`. A known value that disagrees with the
    metadata is kept and reported as a warning.
    """
    by_file = metadata_index(metadata)
    log = IssueLog(metadata.source or "metadata")
    matched = 0
    for vid, video in ann.videos.items():
        meta = find_metadata(by_file, vid, video.filename)
        if meta is None:
            continue
        matched += 1
        video.filename = video.filename or meta.filename
        for name, column in (("duration", "video-duration"), ("fps", "fps"),
                             ("num_frames", "video-frames")):
            ours, theirs = getattr(video, name), getattr(meta, name)
            if ours is None:
                setattr(video, name, theirs)
            elif theirs is not None and abs(ours - theirs) > _DURATION_TOLERANCE_S:
                log.warning(vid, column, f"annotations say {ours!r}, metadata {theirs!r}: "
                            "the annotations' value is kept")
    if matched < len(ann.videos) or matched < len(metadata.videos):
        logger.info("%s: metadata for %d of %d videos; %d metadata rows have no annotations",
                    metadata.source, matched, len(ann.videos), len(metadata.videos) - matched)
    log_report(log.file, log.issues)
    ann.issues.extend(metadata.issues + log.issues)


def read_tsp_groundtruth(path: str | Path, *, label_map: LabelMap = None,
                         subset: str | None = None, metadata_csv: str | Path | None = None,
                         clamp_to_duration: bool = True) -> Annotations:
    """Read a TSP ground-truth CSV: ``Action`` rows become segments, ``No action`` rows
    become ``Video.background`` intervals (seconds).

    ``subset`` defaults to the one the file name says (``train``/``valid``/``test``).
    ``label_map`` (a list or a label map JSON path) fixes the classes and their order;
    without it the classes are the sorted labels seen. ``metadata_csv`` fills unknown video
    fields and cross-checks the known ones. Bad rows are dropped and reported on ``issues``.
    """
    path = Path(path)
    classes = resolve_label_map(label_map)
    known = frozenset(classes) if classes is not None else None
    subset = subset if subset is not None else infer_subset(path)
    if subset is None:
        logger.warning("%s: the file name names no subset; videos get subset None", path)
    log = IssueLog(str(path))
    reader = _read_rows(path, GROUNDTRUTH_COLUMNS, log)
    videos: dict[str, Video] = {}
    try:
        for row in reader:
            _read_row(row, reader.line_num, videos, log, known, subset, clamp_to_duration)
    except csv.Error as exc:
        raise AnnotationError(path, f"malformed CSV at line {reader.line_num}: {exc}") from exc
    if classes is None:
        classes = sorted({s.label for v in videos.values() for s in v.segments})
    log_report(path, log.issues)
    ann = Annotations(videos=videos, classes=classes, source=str(path), issues=log.issues)
    if metadata_csv is not None:
        apply_metadata(ann, read_tsp_metadata(metadata_csv))
    return ann


def _ragged(row: dict[str, str]) -> bool:
    # DictReader files surplus cells under the key None and fills missing ones with None.
    return None in row or any(value is None for value in row.values())


def _read_row(row: dict[str, str], line: int, videos: dict[str, Video], log: IssueLog,
              known: frozenset[str] | None, subset: str | None, clamp: bool) -> None:
    """Add one ground-truth row to ``videos``, or log why it is dropped."""
    video_id = (row.get("video-name") or "").strip() or None
    region = (row.get("temporal-region-label") or "").strip()
    if _ragged(row):
        log.error(video_id, f"line {line}", "wrong number of cells", "dropped_segment")
        return
    if region not in (ACTION, NO_ACTION):
        log.error(video_id, f"temporal-region-label (line {line})",
                  f"{region!r} is neither {ACTION!r} nor {NO_ACTION!r}", "dropped_segment")
        return
    prefix = f"{BACKGROUND} " if region == NO_ACTION else ""
    if video_id is None:
        log.error(None, f"{prefix}video-name (line {line})", "missing", "dropped_segment")
        return
    fields = _video_fields(row, log, video_id, line, prefix=prefix, action="dropped_segment")
    if fields is None:
        return
    fields.subset = subset
    video = videos.setdefault(video_id, fields)
    for name, column in (("duration", "video-duration"), ("filename", "filename"),
                         ("fps", "fps"), ("num_frames", "video-frames")):
        if getattr(video, name) != getattr(fields, name):
            log.error(video_id, f"{prefix}{column} (line {line})",
                      f"{getattr(fields, name)!r} contradicts {getattr(video, name)!r} of the "
                      "video's earlier rows (a duplicate video id?)", "dropped_segment")
            return
    t_start = parse_number(row["t-start"].strip(), log, video_id,
                           f"{prefix}t-start (line {line})", "dropped_segment")
    t_end = parse_number(row["t-end"].strip(), log, video_id,
                         f"{prefix}t-end (line {line})", "dropped_segment")
    if t_start is None or t_end is None:
        return
    label = row["action-label"].strip()
    if prefix and label:
        log.error(video_id, f"{prefix}action-label (line {line})",
                  f"a {NO_ACTION!r} row has the label {label!r}", "dropped_segment")
        return
    if not prefix and check_label(label, known, log, video_id,
                                  f"action-label (line {line})") is None:
        return
    kept = check_interval(t_start, t_end, video.duration, log, video_id,
                          f"{prefix}t-start,t-end (line {line})", clamp=clamp)
    if kept is None:
        return
    if prefix:
        video.background.append((kept.t_start, kept.t_end))
    else:
        video.segments.append(Segment(kept.t_start, kept.t_end, label))


def write_tsp_groundtruth(ann: Annotations, path: str | Path) -> Path:
    """Write a TSP ground-truth CSV in the reference layout (all Action rows, then all
    No action rows by file name). Times are written with ``repr``: they read back equal.

    The file holds no subset: name it so that :func:`infer_subset` finds it. A video with
    no segment and no background has no row, so it is not written (logged).
    """
    rows: list[list[str]] = []
    for video in ann.videos.values():
        rows.extend(_gt_row(video, s.t_start, s.t_end, s.label, ACTION) for s in video.segments)
    for video in sorted(ann.videos.values(), key=lambda v: v.filename or v.video_id):
        rows.extend(_gt_row(video, s, e, "", NO_ACTION) for s, e in video.background)
    empty = [v.video_id for v in ann.videos.values() if not v.segments and not v.background]
    if empty:
        logger.warning("%s: %d videos have no interval and get no row (first: %s)",
                       path, len(empty), empty[0])
    return atomic_write_text(path, _csv_text(GROUNDTRUTH_COLUMNS, rows))


def _gt_row(video: Video, t_start: float, t_end: float, label: str, region: str) -> list[str]:
    return [video.video_id, _num(t_start), _num(t_end), label, _num(video.duration),
            video.filename or "", _num(video.fps),
            "" if video.num_frames is None else str(video.num_frames), region]


def _num(value: float | None) -> str:
    # repr is the shortest text that reads back as the same float.
    return "" if value is None else repr(float(value))


def _csv_text(header: Sequence[str], rows: list[list[str]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()
