"""Write frames to a video file with PyAV: ``standardize``'s encoder, also used by the tests
and the benchmark to make real files in any codec FFmpeg can encode."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping
from fractions import Fraction
from pathlib import Path
from types import TracebackType

import av
import numpy as np
from av.video.frame import PictureType

H264_PRESET = "veryfast"


def as_rate(fps: float | Fraction | int) -> Fraction:
    """A frame rate as an exact fraction: 15 -> 15, 29.97 -> 2997/100,
    ``Fraction(30000, 1001)`` unchanged (NTSC rates should be passed that way)."""
    if isinstance(fps, Fraction):
        rate = fps
    else:
        rate = Fraction(str(fps)) if isinstance(fps, float) else Fraction(fps)
    if rate <= 0:
        raise ValueError(f"fps must be > 0, got {fps}")
    return rate


# x264's macroblock-tree rate control reads memory it did not initialize: with it, the
# same frames and options gave other bytes depending on what the process had allocated
# before (64x48 and 320x240 frames; glibc's MALLOC_PERTURB_ changed the output, and a
# renderer running between frames made SynthActions' bytes differ run to run). Off, the
# bytes are the same whatever the heap held, at a few percent of size at equal quality.
X264_DETERMINISTIC = "mbtree=0"


def h264_options(*, crf: int, gop: int | None) -> dict[str, str]:
    """libx264 options: constant quality ``crf``; with ``gop``, a keyframe exactly every
    ``gop`` frames (no scene-cut keyframes in between) and closed GOPs, so that any frame
    can be reached by decoding at most ``gop`` frames from the keyframe before it. The
    same frames always give the same bytes (:data:`X264_DETERMINISTIC`)."""
    params = [X264_DETERMINISTIC]
    if gop is not None:
        params.insert(0, f"keyint={gop}:min-keyint={gop}:scenecut=0")
    return {"crf": str(crf), "preset": H264_PRESET, "x264-params": ":".join(params)}


class VideoWriter:
    """One video stream written frame by frame; ``write(frame, pts)`` takes an RGB
    ``(H, W, 3) uint8`` array or an ``av.VideoFrame``; ``pts`` is in ``time_base`` units
    (default ``1 / rate``, i.e. the frame number)."""

    def __init__(self, path: str | Path, *, rate: Fraction | float, width: int, height: int,
                 codec: str = "libx264", pix_fmt: str = "yuv420p",
                 options: Mapping[str, str] | None = None, gop: int | None = None,
                 time_base: Fraction | None = None, threads: int = 1,
                 container_options: Mapping[str, str] | None = None) -> None:
        self.rate = as_rate(rate)
        self.time_base = time_base or 1 / self.rate
        self.width, self.height, self.pix_fmt = width, height, pix_fmt
        # +bitexact: no muxer version string, so equal input gives equal bytes.
        self._container = av.open(str(path), mode="w",
                                  container_options={"fflags": "+bitexact",
                                                     **(container_options or {})})
        try:
            self._stream = self._container.add_stream(codec, rate=self.rate,
                                                      options=dict(options or {}))
            self._stream.width, self._stream.height = width, height
            self._stream.pix_fmt = pix_fmt
            self._stream.time_base = self.time_base
            self._stream.codec_context.time_base = self.time_base
            # One thread: x264's bitstream depends on its thread count.
            self._stream.codec_context.thread_count = threads
            if gop is not None:
                self._stream.codec_context.gop_size = gop
        except BaseException:
            self._container.close()
            raise
        self.frames = 0

    def write(self, frame: np.ndarray | av.VideoFrame, pts: int | None = None) -> None:
        if isinstance(frame, np.ndarray):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
        if frame.format.name != self.pix_fmt or frame.width != self.width \
                or frame.height != self.height:
            frame = frame.reformat(width=self.width, height=self.height, format=self.pix_fmt)
        frame.pts = self.frames if pts is None else pts
        frame.time_base = self.time_base
        # A decoded keyframe keeps pict_type I through reformat, and libx264 obeys it as a
        # forced keyframe: the source's GOP would leak into ours. The encoder decides.
        frame.pict_type = PictureType.NONE
        for packet in self._stream.encode(frame):
            self._container.mux(packet)
        self.frames += 1

    def close(self) -> None:
        try:
            for packet in self._stream.encode(None):
                self._container.mux(packet)
        finally:
            self._container.close()

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc_type is None:
            self.close()
        else:
            self._container.close()


def write_video(path: str | Path, frames: Iterable[np.ndarray], *, fps: float | Fraction,
                codec: str = "libx264", pix_fmt: str = "yuv420p",
                options: Mapping[str, str] | None = None, pts: Iterable[int] | None = None,
                time_base: Fraction | None = None) -> int:
    """Encode RGB ``(H, W, 3) uint8`` frames; ``pts`` (in ``time_base`` units) makes a
    variable frame rate. Returns the number of frames written."""
    it = iter(frames)
    first = next(it, None)
    if first is None:
        raise ValueError(f"{path}: no frames to write")
    stamps = iter(pts) if pts is not None else None
    height, width = first.shape[:2]
    with VideoWriter(path, rate=fps, width=width, height=height, codec=codec, pix_fmt=pix_fmt,
                     options=options, time_base=time_base) as writer:
        for frame in itertools.chain([first], it):
            writer.write(frame, None if stamps is None else next(stamps))
        return writer.frames
