"""What a video really holds: header facts checked against a full decode.

Headers lie (tree.avi says 444 frames at 15 fps and holds 68 at about 2.3 fps; box.mp4
says 456 and 455 decode), so ``probe`` always counts by decoding and reports each
disagreement as a warning. The times follow :mod:`tspipe.data.video.timeline`.
"""

from __future__ import annotations

import logging
import statistics
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tspipe.data.video.backends import BACKENDS, VideoReader
from tspipe.data.video.decode import open_reader, timed_frames
from tspipe.data.video.header import VideoHeader, truncation
from tspipe.errors import VideoError

log = logging.getLogger(__name__)

# Frames are decoded but not kept; backends that convert every frame anyway make them tiny.
_COUNT_SIZE = (32, 32)
_FPS_TOLERANCE = 0.01  # relative: header vs decoded average frame rate
_STEP_TOLERANCE = 0.02  # relative to the median frame step, for "constant frame rate"

# A file that decodes to less than this fraction of the frames its header leads one to
# expect is refused. Real files lose a few frames at the end (box.mp4: 455 of 456; all six
# samples of shared/data/videos keep >= 99.7 %, AVI's "drop frame" chunks left out, see
# expected_frames), and a Matroska download cut in half still holds the video up to the
# cut, frame for frame with true times (about 50 %: kept, with its duration warning). A
# wrong timescale or edit list in an MP4 header leaves almost nothing: 1 of 164 frames
# with the media timescale off x1000, 2 off x100, 17 off x10 (all under 11 %), and
# standardizing would repeat those few pictures over the whole declared time (1 picture
# for 43 s). A quarter sits between, with a factor of 2 of room on each side.
MIN_DECODED_FRACTION = 0.25
# One picture has no motion, and its duration is only the time the container shows it:
# every clip of it would be that picture repeated. (A 5-frame, 0.5 s video is kept, with
# a "shorter than one clip" warning: its frames move.)
MIN_DECODED_FRAMES = 2


@dataclass(frozen=True)
class ProbeResult:
    """One video as decoded. ``fps`` is the decoded average (frames / duration);
    ``duration`` runs from the first frame's time to the end of the last frame;
    ``frames_header`` is None where the container states no count (WebM, MPEG-PS)."""

    path: str
    container: str
    codec: str
    width: int
    height: int
    fps: float
    constant_fps: bool
    frames_header: int | None
    frames_decoded: int
    duration: float
    has_audio: bool
    warnings: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["warnings"] = list(self.warnings)
        return data


@dataclass(frozen=True)
class _Decoded:
    count: int
    duration: float
    backsteps: int
    steps: list[float]


def probe(path: str | Path, *, backend: str | None = None, cross_check: bool = False,
          video_id: str | None = None) -> ProbeResult:
    """Read the header, decode every frame, and report what disagrees.

    ``backend`` decodes (None or ``"auto"``: the default, PyAV); ``cross_check`` also
    decodes with every other available backend and warns for each that gets another frame
    count or fails. Raises :class:`VideoError` for a file that is empty, truncated, not a
    video, has no video stream or no decodable frame, and for one that decodes to fewer
    than :data:`MIN_DECODED_FRAMES` frames or less than :data:`MIN_DECODED_FRACTION` of
    the frames its header leads one to expect (:func:`expected_frames`).
    """
    path = Path(path)
    with open_reader(path, backend, video_id=video_id) as reader:
        header = reader.header
        if why := truncation(header):
            raise VideoError(path, why, video_id=video_id)
        decoded = _decode_all(reader)
        name, rejected = reader.backend, reader.decode_errors
    if why := too_few_frames(header, decoded.count):
        raise VideoError(path, why, video_id=video_id)
    fps = decoded.count / decoded.duration if decoded.duration > 0 else header.fps or 0.0
    constant = decoded.backsteps == 0 and _uniform(decoded.steps, header.time_base)
    warnings = _warnings(header, decoded, fps, constant)
    if rejected:
        warnings.append(f"corrupt data: the decoder rejected {rejected} packets")
    if cross_check:
        warnings += _cross_check(path, name, decoded.count)
    for warning in warnings:
        log.info("%s: %s", path, warning)
    return ProbeResult(
        path=str(path), container=header.container, codec=header.codec,
        width=header.width, height=header.height, fps=round(fps, 6), constant_fps=constant,
        frames_header=header.frames, frames_decoded=decoded.count,
        duration=round(decoded.duration, 6), has_audio=header.has_audio,
        warnings=tuple(warnings))


def expected_frames(header: VideoHeader) -> tuple[int, str] | None:
    """How many frames the header leads one to expect, and from what: an AVI's non-empty
    index entries (its frame count also counts the empty "drop frame" chunks, each a
    repeat of the picture before: tree.avi counts 444 and holds 68 pictures over its
    29.6 s), else the container's frame count (an MP4's sample table), else duration x
    frame rate; None where the header gives none of them."""
    if header.container == "avi" and header.frames_indexed:
        return header.frames_indexed, "the AVI index's non-empty entries"
    if header.frames:
        return header.frames, "the header's frame count"
    duration = header.duration or header.container_duration
    if duration and header.fps:
        return (round(duration * header.fps),
                f"the header's {duration:.3f} s at {header.fps:.3f} fps")
    return None


def too_few_frames(header: VideoHeader, decoded: int) -> str | None:
    """Why ``decoded`` frames are too few to use the file (see :data:`MIN_DECODED_FRAMES`,
    :data:`MIN_DECODED_FRACTION`), or None."""
    expected = expected_frames(header)
    if expected is not None and decoded < MIN_DECODED_FRACTION * expected[0]:
        count, source = expected
        return (f"only {decoded} of {count} frames decode ({decoded / count:.1%}; {count} "
                f"from {source}), under the {MIN_DECODED_FRACTION:.0%} a usable file keeps: "
                "a wrong timescale or edit list in its header, or a file mostly lost; "
                "standardized, its few pictures would be repeated over the whole declared "
                "time")
    if decoded < MIN_DECODED_FRAMES:
        return (f"only {decoded} frame decodes: a still picture, not a video (its duration "
                "is only the time the container shows it, so every clip would repeat it)")
    return None


def _decode_all(reader: VideoReader) -> _Decoded:
    timed, timeline = timed_frames(reader, _COUNT_SIZE)
    for _ in timed:
        pass
    return _Decoded(timeline.count, timeline.end, timeline.raw_backsteps, timeline.raw_steps)


def _uniform(steps: list[float], tick: float) -> bool:
    """Every raw frame step within 2 % (or 1.5 timestamp ticks: WebM's 1 ms ticks make a
    26.777 fps file alternate 37 and 38 ms) of the median step."""
    if not steps:
        return True
    median = statistics.median(steps)
    slack = max(_STEP_TOLERANCE * median, 1.5 * tick)
    return all(abs(s - median) <= slack for s in steps)


def _warnings(header: VideoHeader, decoded: _Decoded, fps: float, constant: bool
              ) -> list[str]:
    out: list[str] = []
    if header.frames is not None and header.frames != decoded.count:
        out.append(f"frame count: the header says {header.frames}, "
                   f"{decoded.count} frames decode")
    if decoded.backsteps:
        out.append(f"timestamps not monotonic: the raw pts go backwards in "
                   f"{decoded.backsteps} of {len(decoded.steps)} steps (B-frames muxed with "
                   "pts == dts?); times come from decoder order and sorted timestamps")
    if header.fps and fps and abs(header.fps - fps) > _FPS_TOLERANCE * fps:
        out.append(f"frame rate: the header says {header.fps:.3f} fps, the decoded frames "
                   f"average {fps:.3f} fps")
    if not constant and not decoded.backsteps and decoded.steps:
        out.append(f"variable frame rate: frame steps from {min(decoded.steps):.3f} to "
                   f"{max(decoded.steps):.3f} s")
    declared, what = ((header.duration, "the video stream's header")
                      if header.duration is not None
                      else (header.container_duration, "the container"))
    step = decoded.duration / decoded.count if decoded.count else header.nominal_step
    if declared is not None and abs(declared - decoded.duration) > 1.5 * max(step, 0.04):
        out.append(f"duration: {what} says {declared:.3f} s, the decoded frames span "
                   f"{decoded.duration:.3f} s (a cut file, or a longer audio track?)")
    return out


def _cross_check(path: Path, primary: str, count: int) -> list[str]:
    out: list[str] = []
    for name, backend in BACKENDS.items():
        if name == primary:
            continue
        if (why := backend.unavailable_reason()) is not None:
            log.debug("cross-check of %s skips %s: %s", path, name, why)
            continue
        try:
            with open_reader(path, name) as reader:
                other = _decode_all(reader).count
        except VideoError as exc:
            reason = str(exc).removeprefix(f"{exc.path}: ")
            out.append(f"decoders disagree: {name} fails ({reason}); {primary} decodes "
                       f"{count} frames")
            continue
        if other != count:
            out.append(f"decoders disagree: {name} decodes {other} frames, {primary} {count}")
    return out

