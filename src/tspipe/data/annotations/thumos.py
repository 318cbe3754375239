"""THUMOS14 temporal annotations <-> ``Annotations``.

One text file per class and split, ``<Class>_val.txt`` (validation) or ``<Class>_test.txt``
(testing); each line ``video_name t_start t_end`` (whitespace separated, seconds). The files
carry no duration: an optional TSP metadata CSV gives duration, fps, frames and filename.

THUMOS14 also ships ``Ambiguous_{val,test}.txt``: intervals where annotators could not
decide. They are not an action class, so they stay out of ``classes`` and ``segments`` and
live in ``Video.extra["ambiguous"]`` as ``[[t_start, t_end], ...]`` (written back).

The files hold no order across classes, so each video's segments are sorted by
(start, end, label) and videos by id: the same files always read to the same value.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from tspipe.data.annotations.model import Annotations, Segment, Video
from tspipe.data.annotations.tsp_csv import (
    LabelMap,
    apply_metadata,
    find_metadata,
    metadata_index,
    read_tsp_metadata,
    resolve_label_map,
    write_tsp_metadata,
)
from tspipe.data.annotations.validate import (
    IssueLog,
    check_interval,
    log_report,
    parse_number,
    sort_segments,
)
from tspipe.errors import AnnotationError
from tspipe.io import atomic_write_text

logger = logging.getLogger(__name__)

AMBIGUOUS = "Ambiguous"
FILE_PATTERN = re.compile(r"^(?P<label>.+)_(?P<split>val|test)\.txt$")
SPLIT_SUBSET = {"val": "validation", "test": "testing"}
SUBSET_SPLIT = {subset: split for split, subset in SPLIT_SUBSET.items()}


def thumos_files(directory: str | Path) -> list[Path]:
    """The ``<Class>_val.txt`` / ``<Class>_test.txt`` files of ``directory``, sorted by name."""
    return sorted(p for p in Path(directory).iterdir()
                  if p.is_file() and FILE_PATTERN.match(p.name))


def read_thumos14(directory: str | Path, *, metadata_csv: str | Path | None = None,
                  label_map: LabelMap = None, clamp_to_duration: bool = True) -> Annotations:
    """Read a directory of THUMOS14 temporal annotation files.

    Classes: ``label_map`` (list or label map JSON path) when given, else the sorted class
    names of the files found (an empty file still names its class), ``Ambiguous`` excluded.
    Durations (seconds) come from ``metadata_csv`` only; without it no interval is checked
    against a duration. Bad lines are dropped and reported on ``issues``.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise AnnotationError(directory, "not a directory of THUMOS14 annotation files")
    files = thumos_files(directory)
    if not files:
        raise AnnotationError(directory, "no <Class>_val.txt or <Class>_test.txt file")
    metadata = read_tsp_metadata(metadata_csv) if metadata_csv is not None else None
    by_file = metadata_index(metadata) if metadata is not None else {}
    classes = resolve_label_map(label_map)
    if classes is None:
        classes = sorted({_match(p)[0] for p in files} - {AMBIGUOUS})
    known = frozenset(classes)

    ann = Annotations(classes=classes, source=str(directory))
    for path in files:
        log = IssueLog(str(path))
        _read_file(path, ann, log, known, clamp_to_duration, by_file)
        log_report(path, log.issues)
        ann.issues.extend(log.issues)
    if metadata is not None:  # fills what the files never say: fps, frames, filename
        apply_metadata(ann, metadata)
    for video in ann.videos.values():
        video.segments = sort_segments(video.segments)
        if AMBIGUOUS.lower() in video.extra:
            video.extra[AMBIGUOUS.lower()].sort()
    ann.videos = dict(sorted(ann.videos.items()))
    return ann


def _match(path: Path) -> tuple[str, str]:
    match = FILE_PATTERN.match(path.name)
    if match is None:
        raise AnnotationError(path, "not named <Class>_val.txt or <Class>_test.txt")
    return match["label"], SPLIT_SUBSET[match["split"]]


def _read_file(path: Path, ann: Annotations, log: IssueLog, known: frozenset[str],
               clamp: bool, metadata: dict[str, Video]) -> None:
    """Add the intervals of one class file to ``ann.videos``; log each dropped line."""
    label, subset = _match(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise AnnotationError(path, f"cannot read the file: {exc}") from exc
    for number, line in enumerate(lines, start=1):
        parts = line.split()
        if not parts:
            continue
        video_id = parts[0]
        if len(parts) != 3:
            log.error(video_id, f"line {number}",
                      f"expected 'video_name t_start t_end', got {line.strip()!r}",
                      "dropped_segment")
            continue
        if label != AMBIGUOUS and label not in known:
            log.error(video_id, f"label (line {number})",
                      f"unknown label {label!r} (not in the class list)", "dropped_segment")
            continue
        t_start = parse_number(parts[1], log, video_id, f"t_start (line {number})",
                               "dropped_segment")
        t_end = parse_number(parts[2], log, video_id, f"t_end (line {number})",
                             "dropped_segment")
        if t_start is None or t_end is None:
            continue
        video = ann.videos.get(video_id)
        if video is None:
            # The duration is needed now, to check intervals against it.
            meta = find_metadata(metadata, video_id)
            video = ann.videos[video_id] = Video(
                video_id, subset=subset, duration=None if meta is None else meta.duration)
        elif video.subset != subset:
            log.error(video_id, f"subset (line {number})",
                      f"the video is already in {video.subset!r} files", "dropped_segment")
            continue
        kept = check_interval(t_start, t_end, video.duration, log, video_id,
                              f"t_start,t_end (line {number})", clamp=clamp)
        if kept is None:
            continue
        if label == AMBIGUOUS:
            video.extra.setdefault(AMBIGUOUS.lower(), []).append([kept.t_start, kept.t_end])
        else:
            video.segments.append(Segment(kept.t_start, kept.t_end, label))


def write_thumos14(ann: Annotations, directory: str | Path, *,
                   metadata_csv: str | Path | None = None) -> list[Path]:
    """Write one ``<Class>_<val|test>.txt`` per class (empty ones too, so the class list
    survives) and split present, plus ``Ambiguous_*.txt``; times written with ``repr``.

    Videos must be in the validation or testing subset (THUMOS14 has no other temporal
    annotations). ``metadata_csv``, when given, receives durations, fps and frames (what
    the text files cannot hold). Background intervals are not written (logged).
    Returns the paths written, sorted.
    """
    directory = Path(directory)
    lines: dict[tuple[str, str], list[str]] = {}
    splits: set[str] = set()
    for video in ann.videos.values():
        split = SUBSET_SPLIT.get(video.subset or "")
        if split is None:
            raise AnnotationError(directory, "THUMOS14 files hold only the validation and "
                                  f"testing subsets, not {video.subset!r}",
                                  video_id=video.video_id, field="subset")
        splits.add(split)
        intervals = [(s.label, s.t_start, s.t_end) for s in video.segments]
        intervals += [(AMBIGUOUS, s, e) for s, e in video.extra.get(AMBIGUOUS.lower(), [])]
        for label, t_start, t_end in intervals:
            lines.setdefault((label, split), []).append(
                f"{video.video_id} {float(t_start)!r} {float(t_end)!r}")
    for split in splits:
        for label in ann.classes:
            lines.setdefault((label, split), [])
    not_written = sum(len(v.background) for v in ann.videos.values())
    if not_written:
        logger.warning("%s: %d background intervals are not written (THUMOS14 has no place "
                       "for them)", directory, not_written)

    paths = []
    for (label, split), rows in sorted(lines.items()):
        if not label or Path(label).name != label or label.startswith("."):
            raise AnnotationError(directory, f"class {label!r} cannot be a file name",
                                  field="label")
        text = "".join(f"{row}\n" for row in rows)
        paths.append(atomic_write_text(directory / f"{label}_{split}.txt", text))
    if metadata_csv is not None:
        paths.append(write_tsp_metadata(ann, metadata_csv))
    return sorted(paths)
