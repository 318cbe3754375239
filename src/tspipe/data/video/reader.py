"""The interface every decoder backend implements (PyAV, decord, torchcodec)."""

from __future__ import annotations

import functools
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple, Protocol

import numpy as np

from tspipe.data.video.header import VideoHeader

Size = tuple[int, int]  # (H, W)


class SourceFrame(NamedTuple):
    """One decoded frame: raw timestamp and duration (seconds, None if unknown) and the
    backend's image (convert it with the reader's ``to_rgb``)."""

    pts: float | None
    duration: float | None
    image: Any


class VideoReader(Protocol):
    """One open video file, decoded by one backend."""

    backend: str
    path: Path
    video_id: str | None  # named in the errors it raises
    header: VideoHeader
    decode_errors: int  # packets the decoder rejected in the last pass (PyAV counts them)

    def frames(self, size: Size | None) -> Iterator[SourceFrame]:
        """Every frame, in the decoder's output order, from the start."""
        ...

    def to_rgb(self, image: Any, size: Size | None) -> np.ndarray:
        """``(H, W, 3) uint8`` RGB of one of ``frames``' images (``size`` as passed there)."""
        ...

    def read(self, indices: Sequence[int], size: Size | None) -> dict[int, np.ndarray]:
        """RGB frames by decoded-frame index (``indices`` sorted, unique)."""
        ...

    def close(self) -> None: ...


class Backend(Protocol):
    name: str

    def unavailable_reason(self) -> str | None:
        """None if the backend can decode here, else why not (import error, ...)."""
        ...

    def open(self, path: Path, *, video_id: str | None = None) -> VideoReader: ...


def library_size(header: VideoHeader, size: Size | None) -> Size | None:
    """None (decode at the source size) when ``size`` is the source size: libraries that
    resize while decoding then skip the scaler."""
    return None if size == (header.height, header.width) else size


@functools.cache
def import_problem(module: str) -> str | None:
    """None if ``module`` imports, else why not (asked once per process)."""
    import importlib

    try:
        importlib.import_module(module)
    except Exception as exc:  # ImportError, or OSError/RuntimeError from native libraries
        return f"import {module} failed: {type(exc).__name__}: {str(exc).splitlines()[0]}"
    return None
