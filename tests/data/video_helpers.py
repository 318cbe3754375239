"""Real encoded test videos whose frames say their own index (tests of tspipe.data.video).

Each frame shows its index in binary as ``BITS`` vertical black/white bars, which survive
lossy codecs and resizing, so a test can tell which source frame a decoded frame is.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np

from tspipe.data.video.encode import write_video

BITS = 10  # indices up to 1023


def pattern_frame(index: int, height: int, width: int) -> np.ndarray:
    """``(H, W, 3) uint8``: bar ``b`` (left to right) is white when bit ``b`` of
    ``index`` is set."""
    bar = np.arange(width) * BITS // width
    row = np.where((index >> bar) & 1, 255, 0).astype(np.uint8)
    return np.ascontiguousarray(np.broadcast_to(row[None, :, None], (height, width, 3)))


def read_pattern(frame: np.ndarray) -> int:
    """The index a (decoded, possibly resized) :func:`pattern_frame` shows."""
    width = frame.shape[1]
    value = 0
    for b in range(BITS):
        centre = int((b + 0.5) * width / BITS)
        if frame[:, max(0, centre - 1):centre + 2].mean() > 127:
            value |= 1 << b
    return value


def make_video(path: Path, frames: int, *, fps: float | Fraction = 25, size: tuple[int, int]
               = (48, 64), codec: str = "libx264", pix_fmt: str = "yuv420p",
               pts: list[int] | None = None, time_base: Fraction | None = None,
               options: dict[str, str] | None = None) -> Path:
    """Encode ``frames`` pattern frames of ``size`` (H, W); ``pts`` in ``time_base`` units
    give a variable frame rate."""
    h, w = size
    write_video(path, (pattern_frame(i, h, w) for i in range(frames)), fps=fps, codec=codec,
                pix_fmt=pix_fmt, pts=pts, time_base=time_base, options=options)
    return path


def expected_indices(times: list[float], end: float, fps: float) -> list[int]:
    """The rule, written out plainly: output ``k`` shows the latest frame with
    ``times[i] <= k / fps``, for every ``k / fps < end``."""
    out, k = [], 0
    while k / fps < end - 1e-9:
        out.append(max(i for i, t in enumerate(times) if t <= k / fps + 1e-9))
        k += 1
    return out
