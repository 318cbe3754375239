"""The one clip sampler: clip windows placed on an exact frame grid.

A *clip* is ``frames`` consecutive frames at ``fps`` (TSP: 16 frames at 15 fps, 1.067 s).
Every position is a whole frame index at the clip rate, ``k``, whose time is exactly
``k / fps`` (``fps`` is a ``Fraction``: 30000/1001 stays exact). Training, GVF and
extraction all place clips through :class:`ClipSampler`, built from the one ``clip:``
section of params.yaml, so the three cannot drift apart (TSP's reference defined the clip
options twice).

Times given in seconds (floats read from annotation files) are snapped onto the frame grid
with a tolerance of ``TIME_TOLERANCE_S`` (1 µs, far below a frame): a segment that starts
at 1.0666666666666667 s starts at clip frame 16, not 17.
"""

from __future__ import annotations

import logging
import math
import numbers
from collections.abc import Iterable
from dataclasses import dataclass
from fractions import Fraction
from typing import NamedTuple, Protocol

import numpy as np
import pyarrow as pa

from tspipe.config import ClipConfig
from tspipe.errors import StageError

logger = logging.getLogger(__name__)

TIME_TOLERANCE_S = Fraction(1, 10**6)
# Frame rates given as floats are read as the nearest fraction with a denominator up to
# this: 29.97002997002997 (a float of 30000/1001) is 30000/1001; 29.97 is 2997/100.
_FPS_MAX_DENOMINATOR = 10**6

Number = int | float | Fraction


def as_fraction(value: Number | str) -> Fraction:
    """A frame rate as an exact ``Fraction``: ``15``, ``15.0``, ``"30000/1001"``, ``Fraction``."""
    if isinstance(value, bool):
        raise TypeError(f"a frame rate is a number, got {value!r}")
    if isinstance(value, Fraction | int):
        out = Fraction(value)
    elif isinstance(value, str):
        out = Fraction(value.strip())
    else:
        if not math.isfinite(value):
            raise ValueError(f"a frame rate must be finite, got {value!r}")
        out = Fraction(value).limit_denominator(_FPS_MAX_DENOMINATOR)
    if out <= 0:
        raise ValueError(f"a frame rate must be > 0, got {value!r}")
    return out


class Window(NamedTuple):
    """A clip's place in a video, at the clip frame rate.

    ``[start_frame, end_frame)`` are the real frames it covers; ``padded_frames`` copies of
    the last one complete it, so ``end_frame - start_frame + padded_frames == frames``.
    ``t_start``/``t_end`` are ``start_frame / fps`` and ``end_frame / fps`` seconds, computed
    exactly and rounded once to float.
    """

    index: int
    start_frame: int
    end_frame: int
    t_start: float
    t_end: float
    padded_frames: int = 0


class VideoLength(Protocol):
    """What placing windows needs to know of a video (``annotations.Video`` has it)."""

    video_id: str
    num_frames: int | None
    fps: float | None
    duration: float | None


@dataclass(frozen=True, slots=True, init=False)
class ClipSampler:
    """Clips of ``frames`` frames at ``fps``, sliding windows every ``stride`` frames.

    Contract:
      * a video of ``n`` clip-rate frames has windows starting at
        ``range(0, n - frames + 1, stride)``; the tail shorter than a clip is not covered
        (as TSP's reference);
      * a video shorter than one clip (``0 < n < frames``) has ONE window, its last frame
        repeated ``frames - n`` times (``padded_frames``); the reference crashes there;
      * clip frame ``k`` is source frame ``floor(k * source_fps / fps)`` (30 -> 15 fps:
        every 2nd frame; 25 -> 15: 0, 1, 3, 5, 6, 8, ...);
      * a training clip lies inside its segment: the times ``k / fps`` of its frames are in
        ``[t_start, t_end)`` (within ``TIME_TOLERANCE_S``); positions are on the same frame
        grid as extraction windows, so training and extraction see the same frame phase.
    """

    frames: int
    fps: Fraction
    stride: int

    def __init__(self, frames: int, fps: Number | str, stride: int) -> None:
        object.__setattr__(self, "frames", _positive_int(frames, "frames"))
        object.__setattr__(self, "fps", as_fraction(fps))
        object.__setattr__(self, "stride", _positive_int(stride, "stride"))

    @classmethod
    def from_config(cls, cfg: ClipConfig) -> ClipSampler:
        return cls(cfg.frames, cfg.fps, cfg.stride)

    @property
    def clip_duration(self) -> Fraction:
        """Seconds one clip spans: ``frames / fps`` (TSP: 16/15 s)."""
        return self.frames / self.fps

    def time(self, frame: int) -> Fraction:
        """The exact time of clip frame ``frame``, seconds."""
        return frame / self.fps

    # -- how many frames ---------------------------------------------------------------
    def frames_in(self, duration_s: Number) -> int:
        """Clip-rate frames of a video lasting ``duration_s``: those with ``k / fps`` before
        its end (``ceil(duration * fps)``, within the time tolerance)."""
        return max(0, self._frame_at_or_after(duration_s))

    def frames_from_source(self, num_source_frames: int, source_fps: Number | str) -> int:
        """Clip-rate frames whose source frame exists: ``ceil(N * fps / source_fps)``.

        For 30 -> 15 fps this is ``len(range(N)[::2])``, the reference's count.
        """
        if num_source_frames < 0:
            raise ValueError(f"num_source_frames must be >= 0, got {num_source_frames}")
        exact = num_source_frames * self.fps / as_fraction(source_fps)
        return math.ceil(exact)

    def frames_for_video(self, video: VideoLength) -> int:
        """From the video's frame count and fps when both are known, else its duration."""
        if video.num_frames is not None and video.fps:
            return self.frames_from_source(video.num_frames, video.fps)
        if video.duration is not None:
            return self.frames_in(video.duration)
        raise StageError(f"video {video.video_id!r}: neither num_frames and fps nor duration "
                         "is known, so its clip windows cannot be placed (probe it first)")

    # -- sliding windows ---------------------------------------------------------------
    def num_windows(self, n: int) -> int:
        """``len(range(0, n - frames + 1, stride))``, and 1 for ``0 < n < frames``."""
        if n <= 0:
            return 0
        return 1 if n < self.frames else (n - self.frames) // self.stride + 1

    def window(self, start_frame: int, *, index: int = 0, n: int | None = None) -> Window:
        """The clip starting at ``start_frame``; padded when the video (``n`` frames) ends
        before the clip does."""
        end = start_frame + self.frames
        if n is not None:
            if not 0 <= start_frame < n:
                raise ValueError(f"start frame {start_frame} is outside a video of {n} frames")
            end = min(end, n)
        return Window(index, start_frame, end, float(self.time(start_frame)),
                      float(self.time(end)), start_frame + self.frames - end)

    def windows(self, n: int) -> list[Window]:
        """Extraction windows of a video of ``n`` frames at the clip rate."""
        count = self.num_windows(n)
        return [self.window(i * self.stride, index=i, n=n) for i in range(count)]

    def windows_for_duration(self, duration_s: Number) -> list[Window]:
        return self.windows(self.frames_in(duration_s))

    def source_indices(self, window: Window, source_fps: Number | str, *,
                       num_source_frames: int | None = None) -> np.ndarray:
        """Source frame indices of the clip's ``frames`` frames, shape ``(frames,)``:
        ``floor(k * source_fps / fps)`` for ``k`` in the window, then the last one repeated
        ``padded_frames`` times. With ``num_source_frames``, an index past the last frame
        (a container that said one frame more than it holds) becomes the last frame."""
        ratio = as_fraction(source_fps) / self.fps
        num, den = ratio.numerator, ratio.denominator
        idx = [k * num // den for k in range(window.start_frame, window.end_frame)]
        idx += idx[-1:] * window.padded_frames
        out = np.asarray(idx, dtype=np.int64)
        if num_source_frames is not None:
            np.minimum(out, num_source_frames - 1, out=out)
        return out

    # -- training positions ------------------------------------------------------------
    def fits(self, t_start: Number, t_end: Number) -> bool:
        """Whether a segment is at least one clip long, ``(t_end - t_start) * fps >= frames``
        (TSP's rule for dropping short segments), within the time tolerance."""
        length = (_exact(t_end) - _exact(t_start)) * self.fps
        return length >= self.frames - TIME_TOLERANCE_S * self.fps

    def start_range(self, t_start: Number, t_end: Number) -> tuple[int, int]:
        """First and last (inclusive) start frame of a clip inside ``[t_start, t_end)``.

        A segment that :meth:`fits` always has one (the last start is at least the first);
        one that does not raises ``ValueError``.
        """
        if not self.fits(t_start, t_end):
            raise ValueError(f"segment [{t_start}, {t_end}] s is shorter than one clip "
                             f"({float(self.clip_duration):.4f} s): it should have been dropped")
        first = self._frame_at_or_after(t_start)
        # Within the tolerance a fitting segment may sit 2 µs short of a grid window.
        return first, max(first, self._frame_at_or_after(t_end) - self.frames)

    def train_clip_start(self, t_start: Number, t_end: Number,
                         rng: np.random.Generator) -> Window:
        """A training clip inside the segment, its start uniform over the possible frames."""
        first, last = self.start_range(t_start, t_end)
        return self.window(first + int(rng.integers(0, last - first + 1)))

    def valid_clip_starts(self, t_start: Number, t_end: Number, n: int = 5) -> list[Window]:
        """``n`` clips at the reference's validation positions: a clip starts at
        ``t_start + r * (t_end - t_start - clip_duration)`` for ``r`` in
        ``linspace(0, 1, n)``, here the first grid frame at or after that time."""
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        first, last = self.start_range(t_start, t_end)
        begin, end = _exact(t_start) * self.fps, _exact(t_end) * self.fps
        room = end - begin - self.frames
        tolerance = TIME_TOLERANCE_S * self.fps
        starts = [math.ceil(begin + Fraction(i, max(n - 1, 1)) * room - tolerance)
                  for i in range(n)]
        return [self.window(min(max(k, first), last), index=i) for i, k in enumerate(starts)]

    def fits_mask(self, t_start: np.ndarray, t_end: np.ndarray) -> np.ndarray:
        """:meth:`fits` over arrays of seconds (float arithmetic, same tolerance)."""
        fps = float(self.fps)
        length = (np.asarray(t_end, np.float64) - np.asarray(t_start, np.float64)) * fps
        return length >= self.frames - float(TIME_TOLERANCE_S) * fps

    def _frame_at_or_after(self, t: Number) -> int:
        """The first clip frame whose time is at or after ``t`` (within the tolerance)."""
        return math.ceil((_exact(t) - TIME_TOLERANCE_S) * self.fps)


def _positive_int(value: int, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    return int(value)


def _exact(t: Number) -> Fraction:
    """Seconds as an exact Fraction (a float is taken at its exact binary value)."""
    if isinstance(t, float) and not math.isfinite(t):
        raise ValueError(f"a time must be finite, got {t!r}")
    return Fraction(t)


# -- extraction windows table ------------------------------------------------------------
WINDOWS_SCHEMA = pa.schema([
    ("video_id", pa.string()),
    ("clip_index", pa.int32()),
    ("start_frame", pa.int64()),   # clip-rate frames, [start_frame, end_frame)
    ("end_frame", pa.int64()),
    ("t_start", pa.float64()),     # seconds, start_frame / fps
    ("t_end", pa.float64()),
    ("padded_frames", pa.int32()),  # copies of the last frame completing a short clip
])


def windows_table(videos: Iterable[VideoLength], sampler: ClipSampler) -> pa.Table:
    """Every extraction window of every video, one row each (see :class:`ClipSampler`).

    A video's frame count at the clip rate comes from ``num_frames`` and ``fps`` when both
    are known, else from ``duration``; a video with neither raises ``StageError``. Times
    are ``frame * den / num`` in float64: the quotient of two exact integers, correctly
    rounded, so equal to ``float(Fraction(frame) / fps)``.
    """
    ids: list[str] = []
    lengths: list[int] = []
    for video in videos:
        ids.append(video.video_id)
        lengths.append(sampler.frames_for_video(video))
    n = np.asarray(lengths, dtype=np.int64)
    # num_windows, vectorised: none for an empty video, one (padded) for a short one.
    counts = np.where(n < sampler.frames, np.minimum(n, 1),
                      (n - sampler.frames) // sampler.stride + 1)
    if (counts == 0).any():
        logger.warning("%d videos have no frame and get no window (first: %s)",
                       int((counts == 0).sum()), ids[int(np.argmin(counts))])
    total = int(counts.sum())
    first_row = np.repeat(np.cumsum(counts) - counts, counts)
    clip_index = np.arange(total, dtype=np.int64) - first_row
    start = clip_index * sampler.stride
    end = np.minimum(start + sampler.frames, np.repeat(n, counts))
    num, den = sampler.fps.numerator, sampler.fps.denominator
    return pa.table({
        "video_id": pa.array(ids, pa.string()).take(np.repeat(np.arange(len(ids)), counts)),
        "clip_index": clip_index.astype(np.int32),
        "start_frame": start,
        "end_frame": end,
        "t_start": (start * den) / num,
        "t_end": (end * den) / num,
        "padded_frames": (start + sampler.frames - end).astype(np.int32),
    }, schema=WINDOWS_SCHEMA.with_metadata(sampler_metadata(sampler)))


def sampler_metadata(sampler: ClipSampler) -> dict[str, str]:
    """The sampler's settings as Parquet schema metadata: a table says how it was cut."""
    return {"tspipe.clip.frames": str(sampler.frames), "tspipe.clip.fps": str(sampler.fps),
            "tspipe.clip.stride": str(sampler.stride)}

