"""Snippet features in memory and on a model's time axis: the records a feature source is
read into (:class:`ClipTiming`, :class:`VideoFeatures`, :class:`FeatureSet`, made by
:func:`~tspipe.localize.feature_files.load_features`), the seconds the snippets cover,
:func:`rescale` to a fixed temporal scale (BMN/G-TAD's input), and the windows a long
video is cut into (THUMOS).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

# BMN/G-TAD's CUHK features: one snippet per 16 source frames (facts, section 3).
SNIPPET_FRAMES = 16


@dataclass(frozen=True, eq=False)
class ClipTiming:
    """When each snippet was taken: ``t_start``, ``t_end`` ``(T,)`` float64 seconds, and
    the clip settings when known (``fps`` of the clip grid, ``stride`` and ``frames`` in
    clip frames)."""

    t_start: np.ndarray
    t_end: np.ndarray
    fps: float | None = None
    stride: int | None = None
    frames: int | None = None

    @property
    def covered_duration(self) -> float:
        """Seconds from 0 to the last snippet's end: what normalized position 1.0 is."""
        return float(self.t_end[-1])


@dataclass(frozen=True, eq=False)
class VideoFeatures:
    """One video's features ``(T, C)`` float32. ``video_id``: the id asked for; ``key``: its
    name in the source (they differ by ActivityNet's ``v_`` prefix when matched so)."""

    video_id: str
    key: str
    features: np.ndarray
    timing: ClipTiming | None

    @property
    def num_clips(self) -> int:
        return int(self.features.shape[0])

    @property
    def covered_duration(self) -> float | None:
        return None if self.timing is None else self.timing.covered_duration


@dataclass
class FeatureSet:
    """What :func:`~tspipe.localize.feature_files.load_features` found: ``videos`` (asked
    order, or the source's order), ``missing`` (ids asked for that the source lacks),
    ``bad`` (id -> why it was skipped)."""

    source: str
    videos: dict[str, VideoFeatures] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    bad: dict[str, str] = field(default_factory=dict)

    def __getitem__(self, video_id: str) -> VideoFeatures:
        return self.videos[video_id]

    def __contains__(self, video_id: object) -> bool:
        return video_id in self.videos

    def __len__(self) -> int:
        return len(self.videos)


# -- positions and durations -------------------------------------------------------------

def covered_duration(num_clips: int, *, fps: float, stride: int, frames: int) -> float:
    """Seconds ``num_clips`` sliding clips cover from 0: ``((T - 1) * stride + frames) / fps``,
    the last window's end (tspipe windows; a lone padded window ends earlier: prefer the
    file's ``t_end`` when it has one, :attr:`VideoFeatures.covered_duration`)."""
    if num_clips <= 0:
        return 0.0
    return ((num_clips - 1) * stride + frames) / fps


def snippet_covered_duration(num_frames: int, duration_s: float, *,
                             snippet_frames: int = SNIPPET_FRAMES) -> float:
    """BMN/G-TAD's duration for CUHK snippet features: ``num_frames // 16 * 16 / num_frames
    * duration`` (the tail shorter than a snippet has no feature)."""
    if num_frames <= 0:
        return 0.0
    return num_frames // snippet_frames * snippet_frames / num_frames * duration_s


def rescale(features: np.ndarray, scale: int) -> np.ndarray:
    """``(T, C)`` -> ``(scale, C)`` float32 by linear interpolation over the snippet index
    at positions ``i * (T - 1) / (scale - 1)``, ``i = 0 .. scale - 1``: the first and last
    snippets are kept as they are; ``T == 1`` is repeated (BMN's rule, facts section 3).
    Computed in float64: an integer-valued linear ramp stays exact wherever the positions
    are."""
    features = np.asarray(features)
    if features.ndim != 2 or features.shape[0] == 0:
        raise ValueError(f"rescale needs a non-empty (T, C) array, got shape {features.shape}")
    if scale < 2:
        raise ValueError(f"rescale: scale must be >= 2, got {scale}")
    num = features.shape[0]
    if num == 1:
        return np.repeat(features.astype(np.float32), scale, axis=0)
    positions = np.arange(scale) * (num - 1) / (scale - 1)
    lower = np.minimum(np.floor(positions).astype(np.int64), num - 2)
    frac = (positions - lower)[:, None]
    data = features.astype(np.float64)
    out = data[lower] + frac * (data[lower + 1] - data[lower])
    return out.astype(np.float32)


# -- windows over long videos (THUMOS) ----------------------------------------------------

class SnippetWindow(NamedTuple):
    """Snippets ``[start, end)`` of a video, then ``padded`` padding rows: a window of
    ``end - start + padded`` snippets."""

    index: int
    start: int
    end: int
    padded: int = 0

    @property
    def size(self) -> int:
        return self.end - self.start + self.padded


def sliding_windows(num_clips: int, window: int, stride: int) -> list[SnippetWindow]:
    """Windows of ``window`` snippets every ``stride`` snippets (overlap ``window -
    stride``); when they do not reach the end, one more window aligned to the last
    snippet. A video shorter than a window gets one window padded to size; none for 0."""
    if window < 1 or stride < 1:
        raise ValueError(f"window ({window}) and stride ({stride}) must be >= 1")
    if num_clips <= 0:
        return []
    if num_clips <= window:
        return [SnippetWindow(0, 0, num_clips, window - num_clips)]
    starts = list(range(0, num_clips - window + 1, stride))
    if starts[-1] + window < num_clips:
        starts.append(num_clips - window)
    return [SnippetWindow(i, s, s + window) for i, s in enumerate(starts)]


def cut_window(features: np.ndarray, win: SnippetWindow, *, pad: str = "zero") -> np.ndarray:
    """``(T, C)`` -> ``(win.size, C)``: the window's snippets, then ``win.padded`` rows of
    zeros (``pad="zero"``) or copies of the last snippet (``pad="edge"``)."""
    part = np.asarray(features)[win.start:win.end]
    if not win.padded:
        return part
    if pad == "zero":
        fill = np.zeros((win.padded, part.shape[1]), dtype=part.dtype)
    elif pad == "edge":
        fill = np.repeat(part[-1:], win.padded, axis=0)
    else:
        raise ValueError(f"cut_window: pad must be 'zero' or 'edge', not {pad!r}")
    return np.concatenate([part, fill])


def window_to_video(segments: np.ndarray, win: SnippetWindow) -> np.ndarray:
    """Segments ``(K, 2)`` normalized to a window (1.0 = ``win.size`` snippets) -> snippet
    positions in the whole video (float; may pass ``win.end`` inside the padding)."""
    return win.start + np.asarray(segments, dtype=np.float64) * win.size
