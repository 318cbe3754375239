"""Decode a video to RGB frames at a constant frame rate and size; read frames by index.

The one decoder path of the pipeline (extraction, GVF, training, standardizing): frames in
decoder order, best-effort times and "latest frame at or before ``k / fps``" resampling, as
documented in :mod:`tspipe.data.video.timeline`.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np

from tspipe.data.video.backends import Size, SourceFrame, VideoReader, get_backend
from tspipe.data.video.timeline import Timed, Timeline, resample
from tspipe.errors import VideoError

log = logging.getLogger(__name__)


class DecodedFrame(NamedTuple):
    """One output frame. ``index`` is the output frame number ``k`` (the decoded-frame
    number when no fps is asked), ``t`` its time in seconds (``k / fps``, else the frame's
    best-effort time), ``frame`` ``(H, W, 3) uint8`` RGB, read-only: a frame repeated by
    resampling is the same array."""

    index: int
    t: float
    frame: np.ndarray


class FrameBatch(NamedTuple):
    """Consecutive output frames: ``index (N,) int64``, ``t (N,) float64`` and
    ``frames (N, H, W, 3) uint8`` (a fresh, writable array the caller owns)."""

    index: np.ndarray
    t: np.ndarray
    frames: np.ndarray


def resolve_size(width: int, height: int, *, size: Size | None = None,
                 short_side: int | None = None, even: bool = False) -> Size:
    """Output ``(H, W)``: ``size`` as given, or the short side scaled to ``short_side``
    keeping the aspect ratio (rounded half up), or the source size. ``even`` rounds both
    down to even numbers (H.264 in yuv420p needs them; 97x61 -> 96x60)."""
    if size is not None and short_side is not None:
        raise ValueError("give `size` or `short_side`, not both")
    if size is not None:
        h, w = (int(v) for v in size)
    elif short_side is not None:
        scale = short_side / min(width, height)
        h, w = int(height * scale + 0.5), int(width * scale + 0.5)
    else:
        h, w = height, width
    if even:
        h, w = max(2, h - h % 2), max(2, w - w % 2)
    if h <= 0 or w <= 0:
        raise ValueError(f"output size must be positive, got (H, W) = ({h}, {w})")
    return h, w


@contextlib.contextmanager
def open_reader(path: str | Path, backend: str | None = "auto", *,
                video_id: str | None = None) -> Iterator[VideoReader]:
    """Open ``path`` with a backend (``"auto"``: the measured default, PyAV)."""
    reader = get_backend(backend).open(Path(path), video_id=video_id)
    try:
        yield reader
    finally:
        reader.close()


def timed_frames(reader: VideoReader, size: Size | None
                 ) -> tuple[Iterator[Timed[SourceFrame]], Timeline[SourceFrame]]:
    """The reader's frames with best-effort times; the timeline's ``end``, ``count`` and
    raw-timestamp statistics are complete once the iterator is exhausted."""
    timeline: Timeline[SourceFrame] = Timeline(reader.header.nominal_step)

    def frames() -> Iterator[Timed[SourceFrame]]:
        for sf in reader.frames(size):
            yield from timeline.push(sf.pts, sf.duration, sf)
        yield from timeline.finish()
        if timeline.count == 0:
            raise VideoError(reader.path, "no decodable frames: the video stream decodes to "
                             "nothing", video_id=reader.video_id)

    return frames(), timeline


def decode(path: str | Path, *, fps: float | None = None, size: Size | None = None,
           short_side: int | None = None, backend: str | None = "auto",
           video_id: str | None = None) -> Iterator[DecodedFrame]:
    """RGB frames of ``path``, resampled to a constant ``fps`` (None: every decoded frame)
    and resized to ``size`` ``(H, W)`` or to ``short_side`` (None: the source size).

    Raises :class:`VideoError` for a file that cannot be opened or decoded (also midway:
    frames already yielded stay valid).
    """
    with open_reader(path, backend, video_id=video_id) as reader:
        out_size = resolve_size(reader.header.width, reader.header.height, size=size,
                                short_side=short_side)
        timed, timeline = timed_frames(reader, out_size)
        if fps is None:
            for i, (t, sf) in enumerate(timed):
                yield DecodedFrame(i, t, _read_only(reader.to_rgb(sf.image, out_size)))
            return
        rgb = None
        for k, sf, first in resample(timed, fps, timeline=timeline):
            if first:
                rgb = _read_only(reader.to_rgb(sf.image, out_size))
            yield DecodedFrame(k, k / fps, rgb)  # type: ignore[arg-type]


def decode_batches(path: str | Path, *, batch_size: int = 64, **kwargs: object
                   ) -> Iterator[FrameBatch]:
    """:func:`decode` (same keyword arguments) in batches of up to ``batch_size`` frames."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    pending: list[DecodedFrame] = []
    for item in decode(path, **kwargs):  # type: ignore[arg-type]
        pending.append(item)
        if len(pending) == batch_size:
            yield _batch(pending)
            pending = []
    if pending:
        yield _batch(pending)


def read_frames(path: str | Path, indices: Sequence[int], *, size: Size | None = None,
                short_side: int | None = None, backend: str | None = "auto",
                video_id: str | None = None) -> np.ndarray:
    """Decoded frames by index (as :func:`decode` with ``fps=None`` numbers them), in the
    order asked, repeats allowed: ``(N, H, W, 3) uint8``.

    PyAV seeks to the keyframe before each frame in MP4/Matroska files whose packet
    timestamps can be trusted (fast on keyframe-dense files such as ``standardize``'s: 16
    frames of a 30 fps file with ``gop=15`` in about 10 ms), and otherwise decodes from the
    start, converting only the frames asked for. Each call demuxes the file once to index
    its packets (about 4 µs per packet); for many reads of one file keep a reader,
    ``with open_reader(path) as r: r.read(sorted_unique_indices, (H, W))``.
    """
    order = [int(i) for i in indices]
    if any(i < 0 for i in order):
        raise ValueError(f"frame indices must be >= 0, got {min(order)}")
    with open_reader(path, backend, video_id=video_id) as reader:
        out_size = resolve_size(reader.header.width, reader.header.height, size=size,
                                short_side=short_side)
        got = reader.read(sorted(set(order)), out_size) if order else {}
    if missing := sorted(set(order) - got.keys()):
        raise VideoError(path, f"no frame {missing[0]}: the video has fewer frames "
                         f"({len(missing)} of the {len(set(order))} asked are missing)",
                         video_id=video_id)
    if not order:
        return np.empty((0, *out_size, 3), dtype=np.uint8)
    return np.stack([got[i] for i in order])


def _batch(items: list[DecodedFrame]) -> FrameBatch:
    return FrameBatch(np.array([x.index for x in items], dtype=np.int64),
                      np.array([x.t for x in items], dtype=np.float64),
                      np.stack([x.frame for x in items]))


def _read_only(image: np.ndarray) -> np.ndarray:
    image.flags.writeable = False
    return image
