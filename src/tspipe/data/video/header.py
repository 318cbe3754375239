"""Open a video with PyAV and read what its container says, or say precisely why not.

Every backend starts here: the header (size, codec, rates, header frame count, audio) comes
from PyAV whichever library decodes, and bad files fail here with a specific reason.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from pathlib import Path

import av
import av.logging

from tspipe.errors import VideoError

log = logging.getLogger(__name__)

# Bytes 4..8 of an MP4/MOV file name its first box: ftyp, or in old QuickTime files one of
# the others. (FFmpeg's own "moov atom not found" also comes for any file named .mp4.)
_ISO_BMFF_BOXES = frozenset({b"ftyp", b"moov", b"mdat", b"wide", b"free", b"skip"})


@dataclass(frozen=True)
class VideoHeader:
    """What the container and the video stream's header declare (nothing decoded yet)."""

    path: Path
    container: str  # demuxer alias, e.g. "mp4", "avi", "webm", "mpeg"
    codec: str  # FFmpeg's canonical codec name, e.g. "h264", "msmpeg4v3"
    width: int
    height: int
    pix_fmt: str | None
    fps: float | None  # the stream's average (else guessed) frame rate
    time_base: float  # seconds per timestamp tick
    frames: int | None  # frame count the container states; None where it has none
    duration: float | None  # the video stream's duration, seconds
    container_duration: float | None  # the whole file's (all streams), seconds
    has_audio: bool
    file_size: int
    index_end: int | None  # the last byte the container's sample index points at
    # Non-empty entries of that index (AVI leaves its empty "drop frame" chunks out of it;
    # an MP4's is cut to its edit list); None where the container keeps none.
    frames_indexed: int | None = None

    @property
    def nominal_step(self) -> float:
        """Seconds per frame by the header (1/25 s when the header gives no rate)."""
        return 1.0 / self.fps if self.fps and self.fps > 0 else 1.0 / 25.0


def open_container(path: str | Path, *, video_id: str | None = None
                   ) -> av.container.InputContainer:
    """Open ``path`` for reading its first video stream, or raise a :class:`VideoError`
    naming the reason: missing, empty, truncated, not a media file, no video stream."""
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise VideoError(path, f"cannot read the file: {exc.strerror or exc}",
                         video_id=video_id) from None
    if path.is_dir():
        raise VideoError(path, "is a directory, not a video file", video_id=video_id)
    if size == 0:
        raise VideoError(path, "empty file (0 bytes)", video_id=video_id)
    try:
        container = av.open(str(path), metadata_errors="ignore")
    except av.FFmpegError as exc:
        raise VideoError(path, _why_unopenable(path, exc), video_id=video_id) from None
    except OSError as exc:
        raise VideoError(path, f"cannot read the file: {exc}", video_id=video_id) from None
    if not container.streams.video:
        found = ", ".join(f"{s.type} ({s.codec_context.name})" for s in container.streams)
        container.close()
        raise VideoError(path, "no video stream: the file holds only "
                         f"{found or 'no streams at all'}", video_id=video_id)
    return container


def read_header(container: av.container.InputContainer, path: str | Path) -> VideoHeader:
    path = Path(path)
    stream = container.streams.video[0]
    ctx = stream.codec_context
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    tb = stream.time_base
    duration = float(stream.duration * tb) if stream.duration and tb else None
    return VideoHeader(
        path=path,
        container=_container_alias(container.format.name, path),
        codec=ctx.codec.canonical_name if ctx.codec else ctx.name,
        width=ctx.width, height=ctx.height,
        pix_fmt=ctx.pix_fmt,
        fps=float(rate) if rate else None,
        time_base=float(tb) if tb else 0.0,
        frames=stream.frames or None,
        duration=duration,
        container_duration=container.duration / av.time_base if container.duration else None,
        has_audio=bool(container.streams.audio),
        file_size=path.stat().st_size,
        index_end=_index_end(stream),
        frames_indexed=_frames_indexed(stream),
    )


def truncation(header: VideoHeader) -> str | None:
    """Why the file looks cut short (its sample index points past its end), or None."""
    if header.index_end is not None and header.index_end > header.file_size:
        return (f"truncated: the container's index refers to {header.index_end:,} bytes "
                f"but the file has {header.file_size:,} (a copy or download cut short?)")
    return None


def _index_end(stream: av.video.stream.VideoStream) -> int | None:
    entries = stream.index_entries
    if entries is None or len(entries) == 0:
        return None
    return max(e.pos + e.size for e in entries)


def _frames_indexed(stream: av.video.stream.VideoStream) -> int | None:
    entries = stream.index_entries
    if entries is None or len(entries) == 0:
        return None
    return sum(1 for e in entries if e.size > 0) or None


def _container_alias(names: str, path: Path) -> str:
    """FFmpeg names a demuxer by all its aliases ("mov,mp4,m4a,..."): report the one that
    matches the file's extension, else the first."""
    aliases = names.split(",")
    ext = path.suffix.lower().lstrip(".")
    return ext if ext in aliases else aliases[0]


def _why_unopenable(path: Path, exc: av.FFmpegError) -> str:
    """A specific reason for a file FFmpeg cannot open, from its first bytes and the error
    FFmpeg logged (PyAV keeps FFmpeg quiet by default, so we open once more to listen)."""
    ffmpeg_said = _ffmpeg_errors_on_open(path)
    with path.open("rb") as fh:
        head = fh.read(16)
    said = f" (FFmpeg: {'; '.join(ffmpeg_said)})" if ffmpeg_said else ""
    if head[4:8] in _ISO_BMFF_BOXES:
        return ("truncated or incomplete MP4: it has no 'moov' atom, the index an MP4 "
                f"writer adds last, so the file was cut short or never finished{said}")
    if isinstance(exc, av.InvalidDataError):
        return ("not a video file: FFmpeg recognises no media format in it "
                f"({path.stat().st_size} bytes)")
    return f"cannot be opened: {exc}{said}"


def _ffmpeg_errors_on_open(path: Path) -> list[str]:
    old = av.logging.get_level()
    av.logging.set_level(av.logging.ERROR)
    try:
        with av.logging.Capture() as logs, contextlib.suppress(av.FFmpegError, OSError):
            av.open(str(path), metadata_errors="ignore").close()
    finally:
        av.logging.set_level(old)
    return [message.strip() for _level, _name, message in logs]
