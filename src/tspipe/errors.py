"""Errors tspipe raises on purpose. Every message names the file, the item and the field."""

from __future__ import annotations

from pathlib import Path


class TspipeError(Exception):
    """Base class: an error about the user's input or environment, with a clear message."""


def locate(file: str | Path, message: str, *, video_id: str | None = None,
           entry: int | None = None, field: str | None = None) -> str:
    """``file: video 'x': entry 3: field 'score': message``: where, then what."""
    where = [str(file)]
    if video_id is not None:
        where.append(f"video {video_id!r}")
    if entry is not None:
        where.append(f"entry {entry}")
    if field is not None:
        where.append(f"field {field!r}")
    return f"{': '.join(where)}: {message}"


class ConfigError(TspipeError):
    """params.yaml (or an environment override) is invalid."""


class AnnotationError(TspipeError):
    """An annotation file cannot be read at all (malformed, missing a required field)."""

    def __init__(self, file: str | Path, message: str, *, video_id: str | None = None,
                 field: str | None = None) -> None:
        self.file = str(file)
        self.video_id = video_id
        self.field = field
        super().__init__(locate(file, message, video_id=video_id, field=field))


class ShapeError(TspipeError):
    """A tensor given to a localization model (BMN, G-TAD) or its losses does not have the
    shape it was built for (feature width, temporal scale, number of bins, prediction vs
    target)."""


class UnsafeIdError(TspipeError):
    """An id cannot be used as a file name (traversal, absolute path, empty, control chars)."""


class CatalogError(TspipeError):
    """The feature catalog cannot be used (not migrated, unreachable, inconsistent)."""


class StageError(TspipeError):
    """A stage cannot run: a missing input, an output that cannot be written."""


class DownloadError(TspipeError):
    """A video could not be fetched. ``permanent`` errors (404, private, removed, refused
    scheme) are not retried; transient ones (5xx, reset, timeout) are."""

    def __init__(self, video_id: str, source: str, message: str, *,
                 permanent: bool) -> None:
        self.video_id = video_id
        self.source = source
        self.permanent = permanent
        super().__init__(f"video {video_id!r} from {source}: {message}")


class VideoError(TspipeError):
    """A video file cannot be probed or decoded (zero bytes, truncated, no video stream)."""

    def __init__(self, path: str | Path, message: str, *, video_id: str | None = None) -> None:
        self.path = str(path)
        self.video_id = video_id
        who = f"video {video_id!r} ({self.path})" if video_id else self.path
        super().__init__(f"{who}: {message}")
