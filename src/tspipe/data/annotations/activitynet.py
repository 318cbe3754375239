"""ActivityNet v1.3 JSON <-> ``Annotations``.

The file: ``{"version": str, "taxonomy": [{"nodeId", "nodeName", "parentId", "parentName"}],
"database": {video_id: {"subset", "duration", "resolution", "url", "annotations":
[{"segment": [t_start, t_end], "label"}]}}}``; times and durations in seconds. The classes
are the taxonomy's leaves (names that are no node's ``parentName``).

tspipe writes a few keys of its own where a video carries what the format has no key for
(``fps``, ``num_frames``, ``filename``, ``background``: TSP's "No action" intervals) and a
top-level ``classes`` where the class list is not what the reader would derive; ActivityNet
tools ignore unknown keys, and tspipe reads them back so the round trip is lossless.
"""

from __future__ import annotations

import codecs
import json
import logging
import math
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

from tspipe.data.annotations.model import Annotations, Segment, Video
from tspipe.data.annotations.tsp_csv import LabelMap, resolve_label_map
from tspipe.data.annotations.validate import (
    BACKGROUND,
    IssueLog,
    check_interval,
    check_label,
    log_report,
    parse_number,
)
from tspipe.errors import AnnotationError
from tspipe.io import atomic_write_text

logger = logging.getLogger(__name__)

# Keys of a video entry that map onto ``Video`` fields; every other key goes to ``extra``.
_VIDEO_KEYS = ("subset", "duration", "resolution", "url", "annotations",
               "fps", "num_frames", "filename", BACKGROUND)
_TOP_KEYS = ("version", "taxonomy", "classes", "database")


class _Duplicates(dict[str, Any]):
    """A JSON object in which some keys appeared more than once (the first value is kept)."""

    duplicate_keys: list[str]


def _first_wins(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """``object_pairs_hook``: json.loads alone keeps the last of duplicate keys, silently."""
    obj: dict[str, Any] = {}
    duplicates = []
    for key, value in pairs:
        if key in obj:
            duplicates.append(key)
        else:
            obj[key] = value
    if not duplicates:
        return obj
    marked = _Duplicates(obj)
    marked.duplicate_keys = duplicates
    return marked


def _duplicates(obj: object) -> list[str]:
    """The repeated keys of ``obj`` and of every object nested in it."""
    if isinstance(obj, dict):
        found = list(getattr(obj, "duplicate_keys", []))
        return found + [k for v in obj.values() for k in _duplicates(v)]
    if isinstance(obj, list):
        return [k for v in obj for k in _duplicates(v)]
    return []


def taxonomy_leaves(taxonomy: list[dict[str, Any]]) -> list[str]:
    """The sorted names of the taxonomy's leaf nodes: ActivityNet's action classes."""
    parents = {node.get("parentName") for node in taxonomy}
    return sorted({node["nodeName"] for node in taxonomy if node["nodeName"] not in parents})


def _default_classes(taxonomy: list[dict[str, Any]] | None,
                     videos: dict[str, Video]) -> list[str]:
    """The classes the reader derives when the file gives no explicit list."""
    if taxonomy is not None:
        return taxonomy_leaves(taxonomy)
    return sorted({s.label for v in videos.values() for s in v.segments})


def read_activitynet(path: str | Path, *, label_map: LabelMap = None,
                     clamp_to_duration: bool = True,
                     video_ids: Collection[str] | None = None) -> Annotations:
    """Read an ActivityNet v1.3 JSON file.

    Classes: ``label_map`` (list or label map JSON path; order = class id) when given, else
    the taxonomy's leaves sorted by name, else the sorted labels seen. Bad videos and
    segments are dropped and reported on ``issues``; segments past the video's duration
    (seconds) are clamped when ``clamp_to_duration``, else dropped. A malformed file raises
    ``AnnotationError``.

    ``video_ids``: read only these videos' entries (the others are neither parsed nor
    reported; classes derived from the segments are those of these videos): a stage that
    works on a batch of a 20k-video file reads its batch, not the file's every video.
    """
    wanted = frozenset(video_ids) if video_ids is not None else None
    path = Path(path)
    try:
        doc = json.loads(_json_text(path), object_pairs_hook=_first_wins)
    except OSError as exc:
        raise AnnotationError(path, f"cannot read the file: {exc}") from exc
    except json.JSONDecodeError as exc:
        raise AnnotationError(
            path, f"malformed JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}") from exc
    if not isinstance(doc, dict):
        raise AnnotationError(path, f"the top level is a {_json_type(doc)}, not an object "
                              "with a 'database' of videos")
    if not isinstance(doc.get("database"), dict):
        what = "missing" if "database" not in doc else f"a {_json_type(doc['database'])}"
        raise AnnotationError(path, f"no top-level 'database' object ({what}): ActivityNet "
                              "files map video ids to entries there", field="database")
    taxonomy = doc.get("taxonomy")
    if taxonomy is not None and not (
            isinstance(taxonomy, list)
            and all(isinstance(n, dict) and isinstance(n.get("nodeName"), str) for n in taxonomy)):
        raise AnnotationError(path, "not a list of nodes with a 'nodeName'", field="taxonomy")
    explicit = doc.get("classes")
    if explicit is not None and not (
            isinstance(explicit, list) and all(isinstance(c, str) for c in explicit)):
        raise AnnotationError(path, "not a list of class names", field="classes")

    log = IssueLog(str(path))
    outside = [v for k, v in doc.items() if k != "database"]
    for key in list(getattr(doc, "duplicate_keys", [])) + _duplicates(outside):
        log.error(None, key, "key appears twice in one object: the first is kept", "kept")
    database: dict[str, Any] = doc["database"]
    for video_id in getattr(database, "duplicate_keys", []):
        log.error(video_id, "database", "video id appears twice: the first entry is kept",
                  "dropped_video")

    classes = resolve_label_map(label_map)
    if classes is None and explicit is not None:
        classes = list(explicit)
    if classes is None and taxonomy is not None:
        classes = taxonomy_leaves(taxonomy)
    known = frozenset(classes) if classes is not None else None

    videos: dict[str, Video] = {}
    for video_id, entry in database.items():
        if wanted is not None and video_id not in wanted:
            continue
        video = _read_video(video_id, entry, log, known, clamp_to_duration)
        if video is not None:
            videos[video_id] = video
    if classes is None:
        classes = _default_classes(None, videos)
    log_report(path, log.issues)
    return Annotations(
        videos=videos, classes=classes, version=doc.get("version"), taxonomy=taxonomy,
        source=str(path), issues=log.issues,
        extra={k: v for k, v in doc.items() if k not in _TOP_KEYS},
    )


def _json_text(path: Path) -> str:
    """The file's text: UTF-8, with a byte order mark tolerated (Windows editors write one,
    and the TSP CSVs are read the same way). UTF-16/32 and other encodings are refused by
    name: JSON files are UTF-8 (RFC 8259)."""
    data = path.read_bytes()
    for bom, name in ((codecs.BOM_UTF32_LE, "UTF-32"), (codecs.BOM_UTF32_BE, "UTF-32"),
                      (codecs.BOM_UTF16_LE, "UTF-16"), (codecs.BOM_UTF16_BE, "UTF-16")):
        if data.startswith(bom):
            raise AnnotationError(path, f"the file is {name} text (it starts with a {name} "
                                  "byte order mark): save it as UTF-8")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise AnnotationError(path, f"not UTF-8 text (byte {exc.start} is 0x{data[exc.start]:02x}"
                              "): save it as UTF-8") from None


def _json_type(value: object) -> str:
    """The JSON name of a parsed value's type, for messages."""
    names = {dict: "object", list: "list", str: "string", bool: "boolean", type(None): "null"}
    return names.get(type(value), "number")


def _read_video(video_id: str, entry: object, log: IssueLog, known: frozenset[str] | None,
                clamp: bool) -> Video | None:
    """One database entry as a ``Video``, or None (error logged) when it cannot be used."""
    if not isinstance(entry, dict):
        log.error(video_id, "database", f"entry is a {type(entry).__name__}, not an object",
                  "dropped_video")
        return None
    for key in _duplicates(entry):
        log.error(video_id, key, "key appears twice in one object: the first is kept", "kept")
    subset = entry.get("subset")
    if not isinstance(subset, str) or not subset:
        log.error(video_id, "subset", f"missing or not a string: {subset!r}", "dropped_video")
        return None
    duration = parse_number(entry.get("duration"), log, video_id, "duration", "dropped_video")
    if duration is None:
        return None
    if duration <= 0:
        log.error(video_id, "duration", f"must be > 0 s, got {duration!r}", "dropped_video")
        return None
    annotations = entry.get("annotations", [])
    if not isinstance(annotations, list):
        log.error(video_id, "annotations", "not a list", "dropped_video")
        return None
    video = Video(video_id, duration=duration, subset=subset,
                  extra={k: v for k, v in entry.items() if k not in _VIDEO_KEYS})
    for key, valid in _OPTIONAL.items():
        if key not in entry:
            continue
        if valid(entry[key]):
            setattr(video, key, entry[key])
        else:  # kept verbatim, written back verbatim: nothing is lost
            video.extra[key] = entry[key]
            log.warning(video_id, key, f"unexpected value {entry[key]!r}: kept as is in extra")

    for i, item in enumerate(annotations):
        field = f"annotations[{i}]"
        if not isinstance(item, dict):
            log.error(video_id, field, "not an object", "dropped_segment")
            continue
        others = sorted(set(item) - {"segment", "label"})
        if others:
            log.warning(video_id, field, f"keys {others} are not read (the segment is kept)")
        times = _pair(item.get("segment"), log, video_id, f"{field}.segment")
        label = check_label(item.get("label"), known, log, video_id, f"{field}.label")
        if times is None or label is None:
            continue
        kept = check_interval(*times, duration, log, video_id, f"{field}.segment", clamp=clamp)
        if kept is not None:
            video.segments.append(Segment(kept.t_start, kept.t_end, label))

    background = entry.get(BACKGROUND, [])
    for i, item in enumerate(background if isinstance(background, list) else [background]):
        field = f"{BACKGROUND}[{i}]"
        times = _pair(item, log, video_id, field)
        kept = None if times is None else check_interval(
            *times, duration, log, video_id, field, clamp=clamp)
        if kept is not None:
            video.background.append((kept.t_start, kept.t_end))
    return video


def _is_positive_number(value: object) -> bool:
    return (isinstance(value, int | float) and not isinstance(value, bool)
            and math.isfinite(value) and value > 0)


# Optional video keys and their validity test: "url", "resolution" are ActivityNet's own;
# "fps", "num_frames", "filename" are tspipe's (the format has no key for them).
_OPTIONAL: dict[str, Callable[[object], bool]] = {
    "url": lambda v: isinstance(v, str),
    "resolution": lambda v: isinstance(v, str),
    "filename": lambda v: isinstance(v, str),
    "fps": _is_positive_number,
    "num_frames": lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0,
}


def _pair(value: object, log: IssueLog, video_id: str,
          field: str) -> tuple[float, float] | None:
    """``[t_start, t_end]`` as floats (seconds), or None after logging why not."""
    if not isinstance(value, list | tuple) or len(value) != 2:
        log.error(video_id, field, f"not a [t_start, t_end] pair: {value!r}", "dropped_segment")
        return None
    t_start = parse_number(value[0], log, video_id, f"{field}[0]", "dropped_segment")
    t_end = parse_number(value[1], log, video_id, f"{field}[1]", "dropped_segment")
    return None if t_start is None or t_end is None else (t_start, t_end)


def activitynet_document(ann: Annotations) -> dict[str, Any]:
    """The ActivityNet JSON object of ``ann``; database in ``ann.videos`` order."""
    doc: dict[str, Any] = {}
    if ann.version is not None:
        doc["version"] = ann.version
    if ann.taxonomy is not None:
        doc["taxonomy"] = ann.taxonomy
    if ann.classes != _default_classes(ann.taxonomy, ann.videos):
        doc["classes"] = ann.classes
    doc["database"] = {vid: _video_entry(v) for vid, v in ann.videos.items()}
    doc.update((k, v) for k, v in ann.extra.items() if k not in _TOP_KEYS)
    return doc


def _video_entry(video: Video) -> dict[str, Any]:
    entry: dict[str, Any] = {"subset": video.subset, "duration": video.duration}
    if video.resolution is not None:
        entry["resolution"] = video.resolution
    if video.url is not None:
        entry["url"] = video.url
    entry["annotations"] = [{"segment": [s.t_start, s.t_end], "label": s.label}
                            for s in video.segments]
    for key, value in (("fps", video.fps), ("num_frames", video.num_frames),
                       ("filename", video.filename)):
        if value is not None:
            entry[key] = value
    if video.background:
        entry[BACKGROUND] = [[s, e] for s, e in video.background]
    entry.update((k, v) for k, v in video.extra.items() if k not in entry)
    return entry


def write_activitynet(ann: Annotations, path: str | Path) -> Path:
    """Write ``ann`` as ActivityNet v1.3 JSON (2-space indent, key order kept: same input,
    same bytes). Floats are written exactly (JSON uses the shortest round-trip repr)."""
    missing = [v.video_id for v in ann.videos.values() if v.subset is None or v.duration is None]
    if missing:
        field = "subset" if ann.videos[missing[0]].subset is None else "duration"
        raise AnnotationError(path, f"{len(missing)} videos lack a subset or a duration, which "
                              "ActivityNet requires", video_id=missing[0], field=field)
    text = json.dumps(activitynet_document(ann), indent=2, ensure_ascii=False, allow_nan=False)
    return atomic_write_text(path, text + "\n")
