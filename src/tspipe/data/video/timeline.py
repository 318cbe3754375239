"""When each decoded frame is shown, and which frame a constant-fps output takes.

The rule, shared by ``decode``, ``probe`` and ``standardize`` (and so by extraction, GVF and
training):

1. **Order** is the decoder's output order (presentation order; the decoder reorders
   B-frames by the bitstream, not by timestamps). Frame ``i`` is the ``i``-th frame out.
2. **Times are best-effort.** Each frame brings its timestamp (pts, else dts, else none).
   Within a window of ``REORDER_WINDOW`` frames the timestamps are sorted and the ``i``-th
   frame gets the ``i``-th smallest: a file whose B-frames were muxed with pts == dts
   (box.mp4: raw pts go backwards in 231 of 454 steps) gets its true times back, and a
   well-formed file is unchanged. A missing timestamp is the previous one plus the nominal
   frame step; one that still does not advance is put just after its predecessor. Times
   are rebased so that the first frame is at 0 s (cityCC0.mpg starts at 0.54 s).
3. **The end** of the video is the latest frame's time plus its duration (the container's,
   else the nominal step): the last frame is shown for its whole duration.
4. **Resampling** to ``fps``: output frame ``k`` (time ``k / fps``) is the *latest* frame
   whose time is ``<= k / fps``; outputs run while ``k / fps`` is before the end. A 4 s
   file at 25 fps gives 60 frames at 15 fps; a sparse file (tree.avi, 68 frames over
   29.6 s) repeats each frame until the next one is due.

Times are float seconds; comparisons allow ``EPS`` (1 µs) so that a timestamp lying exactly
on an output instant (0.2 s is frame 5 at 25 fps and output 3 at 15 fps) is not lost to
binary rounding.
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from typing import Generic, NamedTuple, TypeVar

T = TypeVar("T")

REORDER_WINDOW = 16  # frames; H.264/HEVC reorder at most 16 frames (max_num_reorder_frames)
EPS = 1e-6  # seconds


class Timed(NamedTuple, Generic[T]):
    """A frame (any payload) with its best-effort time in seconds from the first frame."""

    t: float
    item: T


class Timeline(Generic[T]):
    """Turns frames in decoder order with raw timestamps into :class:`Timed` frames.

    ``push`` the frames one by one (raw ``pts`` and ``duration`` in seconds, or None); it
    returns the frames whose times are final (at most ``window`` frames are held back).
    ``finish`` returns the rest. Afterwards ``end`` is the end time, ``count`` the number of
    frames and ``raw_backsteps`` how often the raw timestamps did not advance.
    """

    def __init__(self, nominal_step: float, *, window: int = REORDER_WINDOW) -> None:
        if not nominal_step > 0:
            raise ValueError(f"nominal_step must be > 0 s, got {nominal_step}")
        self.step = nominal_step
        self.window = window
        self.count = 0
        self.raw_backsteps = 0
        self.raw_steps: list[float] = []  # raw timestamp differences, for the CFR check
        self._pending: deque[T] = deque()
        self._heap: list[float] = []
        self._last_raw: float | None = None
        self._max_raw = -math.inf
        self._max_raw_duration: float | None = None
        self._origin: float | None = None
        self._last_t: float | None = None

    def push(self, pts: float | None, duration: float | None, item: T) -> list[Timed[T]]:
        if pts is None:  # no timestamp at all: one nominal step after the latest one
            pts = 0.0 if self._last_raw is None else self._max_raw + self.step
        if self._last_raw is not None:
            self.raw_steps.append(pts - self._last_raw)
            if pts <= self._last_raw:
                self.raw_backsteps += 1
        self._last_raw = pts
        if pts >= self._max_raw:
            self._max_raw = pts
            self._max_raw_duration = duration if duration and duration > 0 else None
        self.count += 1
        self._pending.append(item)
        heapq.heappush(self._heap, pts)
        out: list[Timed[T]] = []
        while len(self._pending) > self.window:
            out.append(self._release())
        return out

    def finish(self) -> list[Timed[T]]:
        out: list[Timed[T]] = []
        while self._pending:
            out.append(self._release())
        return out

    def _release(self) -> Timed[T]:
        raw = heapq.heappop(self._heap)
        if self._origin is None:
            self._origin = raw
        t = raw - self._origin
        if self._last_t is not None and t <= self._last_t:
            t = self._last_t + 2 * EPS  # does not advance: shown just after its predecessor
        self._last_t = t
        return Timed(t, self._pending.popleft())

    @property
    def end(self) -> float:
        """End of the video in seconds from the first frame (0.0 before any frame)."""
        if self._origin is None or self._last_t is None:
            return 0.0
        latest = max(self._last_t, self._max_raw - self._origin)
        return latest + (self._max_raw_duration or self.step)


def output_count(end: float, fps: float) -> int:
    """Number of output frames ``k >= 0`` with ``k / fps`` before ``end`` (seconds)."""
    return max(0, math.ceil((end - EPS) * fps))


def resample(timed: Iterable[Timed[T]], fps: float, end: float | None = None,
             *, timeline: Timeline | None = None) -> Iterator[tuple[int, T, bool]]:
    """Apply the rule (4): yield ``(k, item, first)`` for output frames ``k = 0, 1, ...``.

    ``first`` is False when ``item`` repeats the previous output's frame (convert once,
    reuse). The end time is ``end``, or ``timeline.end`` once ``timed`` is exhausted (a
    streaming caller only knows it then).
    """
    if not fps > 0:
        raise ValueError(f"fps must be > 0, got {fps}")
    k = 0
    prev: T | None = None
    prev_used = False
    have_prev = False
    for t, item in timed:
        # Samples before this frame's time take the previous frame (the latest one <= k/fps).
        while have_prev and k / fps < t - EPS:
            yield k, prev, not prev_used  # type: ignore[misc]
            prev_used = True
            k += 1
        prev, prev_used, have_prev = item, False, True
    stop = end if end is not None else (timeline.end if timeline is not None else None)
    if stop is None:
        raise ValueError("resample needs `end` or the `timeline` that timed the frames")
    n = output_count(stop, fps)
    while have_prev and k < n:
        yield k, prev, not prev_used  # type: ignore[misc]
        prev_used = True
        k += 1


def resample_indices(times: Sequence[float], end: float, fps: float) -> list[int]:
    """Source frame index for each output frame at ``fps`` (rule 4), e.g.
    ``resample_indices([0, .04, .08, .12], .16, 15) == [0, 1, 3]``."""
    return [i for _k, i, _first in resample((Timed(t, i) for i, t in enumerate(times)),
                                             fps, end)]
