"""PyAV (its own FFmpeg 8): the default backend; see :mod:`.backends` for the measurement."""

from __future__ import annotations

import bisect
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
from av.video.reformatter import VideoReformatter

from tspipe.data.video.header import open_container, read_header, truncation
from tspipe.data.video.reader import Size, SourceFrame
from tspipe.errors import VideoError

log = logging.getLogger(__name__)

# swscale's area averaging: antialiased when downscaling, and faster than its bilinear
# (vtest.avi 768x576 -> 112x112: 0.47 s vs 0.51 s for 795 frames).
INTERPOLATION = "AREA"
# Containers whose sample index PyAV can seek in exactly (to a keyframe by its pts).
_SEEKABLE_FORMATS = frozenset({"mov,mp4,m4a,3gp,3g2,mj2", "matroska,webm"})


class PyAVReader:
    """PyAV (FFmpeg 8): frames stay FFmpeg frames until ``to_rgb``, which resizes and
    converts in one swscale call, so frames the resampler drops are never converted."""

    backend = "pyav"

    def __init__(self, path: Path, *, video_id: str | None = None) -> None:
        self.path, self.video_id = path, video_id
        self.container = open_container(path, video_id=video_id)
        self.stream = self.container.streams.video[0]
        self.stream.thread_type = "AUTO"  # frame + slice threads: box.mp4 1.27x on 2 cores
        self.header = read_header(self.container, path)
        self._tb = float(self.stream.time_base)
        self._started = False
        self.decode_errors = 0
        self._table: _PacketTable | None = None
        # One reformatter for the whole file: it keeps its swscale context, where
        # frame.to_ndarray(width=...) builds a new one per frame (2x slower end to end).
        self._reformatter = VideoReformatter()

    def frames(self, size: Size | None) -> Iterator[SourceFrame]:
        for frame in self._decode_from_start():
            ts = frame.pts if frame.pts is not None else frame.dts
            yield SourceFrame(None if ts is None else ts * self._tb,
                              frame.duration * self._tb if frame.duration else None, frame)

    def to_rgb(self, image: av.VideoFrame, size: Size | None) -> np.ndarray:
        return self.convert(image, size, "rgb24").to_ndarray()

    def convert(self, image: av.VideoFrame, size: Size | None, pix_fmt: str) -> av.VideoFrame:
        """``image`` scaled to ``size`` (H, W) and converted to ``pix_fmt`` by swscale."""
        height, width = size if size is not None else (None, None)
        return self._reformatter.reformat(image, width=width, height=height, format=pix_fmt,
                                          interpolation=INTERPOLATION)

    def read(self, indices: Sequence[int], size: Size | None) -> dict[int, np.ndarray]:
        table = self._packet_table()
        if table.seekable:
            try:
                return self._read_seeking(table, indices, size)
            except _SeekMiss as miss:
                log.debug("%s: seek missed frame %d; decoding from the start", self.path, miss)
        return self._read_sequential(indices, size)

    def close(self) -> None:
        self.container.close()

    def __enter__(self) -> PyAVReader:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _decode_from_start(self) -> Iterator[av.VideoFrame]:
        if self._started:
            self.container.seek(0, stream=self.stream)
        self._started = True
        yield from self._decode()

    def _decode(self) -> Iterator[av.VideoFrame]:
        """Frames from the current position. Like the ffmpeg tool, a packet the decoder
        rejects is skipped (counted in ``decode_errors``); a file with no decodable frame or
        a cut index raises a VideoError once the packets run out."""
        count, self.decode_errors, first_error = 0, 0, None
        for packet in self.container.demux(self.stream):
            try:
                frames = packet.decode()
            except av.FFmpegError as exc:
                self.decode_errors += 1
                first_error = first_error or exc
                continue
            count += len(frames)
            yield from frames
        if why := truncation(self.header):  # the decoder may stop quietly at the cut
            raise VideoError(self.path, f"{why}; {count} frames decoded",
                             video_id=self.video_id)
        if self.decode_errors and not count:
            raise VideoError(self.path, f"no decodable frames: the decoder rejected all "
                             f"{self.decode_errors} packets ({first_error})",
                             video_id=self.video_id)
        if self.decode_errors:
            log.warning("%s: the decoder rejected %d packets (first: %s); %d frames decoded",
                        self.path, self.decode_errors, first_error, count)

    def _read_sequential(self, indices: Sequence[int], size: Size | None
                         ) -> dict[int, np.ndarray]:
        wanted, out = set(indices), {}
        last = max(indices)
        for i, frame in enumerate(self._decode_from_start()):
            if i in wanted:
                out[i] = self.to_rgb(frame, size)
            if i >= last:
                break
        return out

    def _read_seeking(self, table: _PacketTable, indices: Sequence[int], size: Size | None
                      ) -> dict[int, np.ndarray]:
        """Seek to the keyframe before each wanted frame unless decoding on is as short."""
        out: dict[int, np.ndarray] = {}
        frames: Iterator[av.VideoFrame] | None = None
        pos: int | None = None  # pts of the last frame decoded since the last seek
        for i in indices:
            if i >= len(table.pts):
                break  # past the end: the caller reports it
            target = table.pts[i]
            key = table.keyframe_before(target)
            if frames is None or pos is None or not key <= pos < target:
                if frames is not None:
                    frames.close()
                self.container.seek(key, stream=self.stream, backward=True)
                self._started = True
                frames, pos = self._decode(), None
            for frame in frames:
                pos = frame.pts
                if pos == target:
                    out[i] = self.to_rgb(frame, size)
                    break
                if pos is None or pos > target:
                    raise _SeekMiss(i)
            else:
                raise _SeekMiss(i)
        return out

    def _packet_table(self) -> _PacketTable:
        if self._table is None:
            self._table = _PacketTable.scan(self)
        return self._table


class _SeekMiss(Exception):
    pass


@dataclass(frozen=True)
class _PacketTable:
    """Presentation timestamps of the video packets, from demuxing alone (no decoding)."""

    pts: list[int]  # sorted: frame i's pts
    keys: list[int]  # sorted keyframe pts
    seekable: bool

    @classmethod
    def scan(cls, reader: PyAVReader) -> _PacketTable:
        container, stream = reader.container, reader.stream
        if reader._started:
            container.seek(0, stream=stream)
        reader._started = True
        pts, keys, pts_eq_dts = [], [], True
        for packet in container.demux(stream):
            if packet.size == 0:  # AVI's empty index entries (tree.avi) hold no frame
                continue
            if packet.pts is None:
                return cls([], [], seekable=False)
            pts.append(packet.pts)
            pts_eq_dts &= packet.pts == packet.dts
            if packet.is_keyframe:
                keys.append(packet.pts)
        # B-frames muxed with pts == dts (box.mp4): packet pts are not the frames' times.
        reorders = bool(stream.codec_context.has_b_frames)
        seekable = (container.format.name in _SEEKABLE_FORMATS and bool(keys)
                    and len(set(pts)) == len(pts) and not (reorders and pts_eq_dts))
        return cls(sorted(pts), sorted(keys), seekable)

    def keyframe_before(self, pts: int) -> int:
        return self.keys[max(0, bisect.bisect_right(self.keys, pts) - 1)]


class PyAVBackend:
    name = "pyav"

    def unavailable_reason(self) -> str | None:
        return None  # a hard dependency: if it were missing, nothing here would import

    def open(self, path: Path, *, video_id: str | None = None) -> PyAVReader:
        return PyAVReader(path, video_id=video_id)
