"""Optical flow for I3D's flow stream: computed once per video, stored as quantized uint8.

What a flow file holds (one HDF5 file per video, ``data/flow/<video_id>.h5``):

- dataset ``flow``, ``(T, H, W, 2) uint8``: for clip-rate frame ``t`` (the frames the clip
  sampler numbers: decoded at ``fps`` through :func:`tspipe.data.video.decode`, the one
  decoder path, resized to ``short_side`` if set), the flow from frame ``t`` to frame
  ``t + 1`` in pixels of the stored size, channel 0 = x (right), 1 = y (down). The last
  frame has no successor and repeats the flow before it, so a flow file has as many frames
  as the RGB stream and the same windows cover the same time. A video of one frame gets
  one zero flow.
- quantization, as is customary for TV-L1 flow (denseflow / the I3D feature releases):
  clip to ``[-bound, bound]`` (default 20 px), then ``q = round((f + bound) * 255 /
  (2 bound))``. :func:`dequantize` maps back, ``f = q * 2 bound / 255 - bound``; the error
  is at most ``bound / 255`` px (0.078 px at 20), and zero flow reads back as +0.078
  (127.5 rounds to 128);
- attributes: ``method``, ``bound``, ``fps``, ``height``, ``width``, ``frames``,
  ``settings`` (JSON of everything that decides the numbers) and ``source`` (the video file).

Methods (OpenCV, ``opencv-contrib-python-headless``):

- ``tvl1``: ``cv2.optflow.DualTVL1OpticalFlow`` with OpenCV's defaults (tau 0.25,
  lambda 0.15, theta 0.3, 5 scales, 5 warps, epsilon 0.01, 300 inner iterations): the
  reference quality the I3D paper used. Slow on a CPU (about 0.3 s a frame pair at
  128x96 on one core; ``benchmarks/flow.py``).
- ``farneback``: ``cv2.calcOpticalFlowFarneback`` (pyramid scale 0.5, 3 levels, window 15,
  3 iterations, poly_n 5, sigma 1.2): some 50x faster, coarser at motion boundaries.

Both run on grayscale frames (ITU-R BT.601 luma, ``cv2.COLOR_RGB2GRAY``), one OpenCV thread
per call: the flow stage runs videos in parallel instead (``flow.workers``).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NamedTuple

import numpy as np

from tspipe.data.video import decode
from tspipe.errors import ConfigError, VideoError
from tspipe.io import atomic_path

log = logging.getLogger(__name__)

Method = Literal["tvl1", "farneback"]
METHODS: tuple[Method, ...] = ("tvl1", "farneback")
DEFAULT_BOUND = 20.0
FORMAT_VERSION = 1
DATASET = "flow"

# Farneback's arguments (pyr_scale, levels, winsize, iterations, poly_n, poly_sigma, flags).
FARNEBACK_ARGS = (0.5, 3, 15, 3, 5, 1.2, 0)


def _cv2() -> Any:
    try:
        import cv2
    except ImportError as exc:  # pragma: no cover - a dependency of tspipe
        raise ConfigError("optical flow needs OpenCV: pip install "
                          "opencv-contrib-python-headless") from exc
    return cv2


def quantize(flow: np.ndarray, bound: float = DEFAULT_BOUND) -> np.ndarray:
    """Flow in pixels (any shape, float) -> uint8: clipped to ``+-bound``, 255 steps."""
    if bound <= 0:
        raise ValueError(f"bound must be > 0, got {bound}")
    scaled = (np.clip(flow, -bound, bound) + bound) * (255.0 / (2.0 * bound))
    return np.rint(scaled).astype(np.uint8)


def dequantize(q: np.ndarray, bound: float = DEFAULT_BOUND) -> np.ndarray:
    """uint8 -> flow in pixels, float32: ``q * 2 bound / 255 - bound``."""
    return q.astype(np.float32) * np.float32(2.0 * bound / 255.0) - np.float32(bound)


FlowFn = Callable[[np.ndarray, np.ndarray], np.ndarray]


def flow_function(method: str) -> FlowFn:
    """``fn(prev_gray, next_gray) -> (H, W, 2) float32`` flow from ``prev`` to ``next``."""
    cv2 = _cv2()
    if method == "tvl1":
        tvl1 = cv2.optflow.DualTVL1OpticalFlow_create()

        def calc_tvl1(prev: np.ndarray, nxt: np.ndarray) -> np.ndarray:
            return tvl1.calc(prev, nxt, None)

        return calc_tvl1
    if method == "farneback":
        def calc_farneback(prev: np.ndarray, nxt: np.ndarray) -> np.ndarray:
            return cv2.calcOpticalFlowFarneback(prev, nxt, None, *FARNEBACK_ARGS)

        return calc_farneback
    raise ConfigError(f"optical flow method {method!r}: choose one of {', '.join(METHODS)}")


def to_gray(rgb: np.ndarray) -> np.ndarray:
    """``(H, W, 3) uint8`` RGB -> ``(H, W) uint8`` luma (BT.601, OpenCV's rounding)."""
    return _cv2().cvtColor(np.ascontiguousarray(rgb), _cv2().COLOR_RGB2GRAY)


def frames_flow(frames: Iterable[np.ndarray], method: str, bound: float = DEFAULT_BOUND
                ) -> np.ndarray:
    """Quantized flow ``(T, H, W, 2) uint8`` of ``T`` RGB frames ``(H, W, 3) uint8``
    (consecutive pairs; the last frame repeats the flow before it)."""
    fn = flow_function(method)
    out: list[np.ndarray] = []
    prev: np.ndarray | None = None
    prev_rgb: np.ndarray | None = None
    for rgb in frames:
        gray = to_gray(rgb)
        if prev is not None:
            if rgb is prev_rgb:  # the decoder repeated a frame (upsampling): no motion
                out.append(quantize(np.zeros((*gray.shape, 2), np.float32), bound))
            else:
                out.append(quantize(fn(prev, gray), bound))
        prev, prev_rgb = gray, rgb
    if prev is None:
        raise ValueError("no frames")
    out.append(out[-1] if out else quantize(np.zeros((*prev.shape, 2), np.float32), bound))
    return np.stack(out)


@dataclass(frozen=True)
class FlowSettings:
    """Everything that decides a flow file's numbers."""

    method: Method
    fps: float
    short_side: int | None = None
    bound: float = DEFAULT_BOUND
    backend: str = "auto"

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ConfigError(f"optical flow method {self.method!r}: choose one of "
                              f"{', '.join(METHODS)}")

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "fps": float(self.fps), "short_side": self.short_side,
                "bound": float(self.bound), "backend": self.backend,
                "format": FORMAT_VERSION}


def video_flow(path: str | Path, settings: FlowSettings, *, video_id: str | None = None
               ) -> np.ndarray:
    """Quantized flow of one video, ``(T, H, W, 2) uint8`` (see the module docstring).
    Raises :class:`VideoError` if the file cannot be decoded."""
    frames = (item.frame for item in decode(path, fps=settings.fps,
                                            short_side=settings.short_side,
                                            backend=settings.backend, video_id=video_id))
    first = next(frames, None)
    if first is None:
        raise VideoError(path, f"no frames at {settings.fps} fps to compute flow from",
                         video_id=video_id)
    return frames_flow(itertools.chain([first], frames), settings.method, settings.bound)


def write_flow(dest: str | Path, flow: np.ndarray, settings: FlowSettings, *,
               source: str = "") -> Path:
    """Write one video's quantized flow atomically (a reader never sees half a file)."""
    import h5py

    if flow.dtype != np.uint8 or flow.ndim != 4 or flow.shape[-1] != 2:
        raise ValueError(f"expected (T, H, W, 2) uint8 flow, got {flow.shape} {flow.dtype}")
    t, h, w, _ = flow.shape
    with atomic_path(dest) as tmp, h5py.File(tmp, "w") as f:
        f.create_dataset(DATASET, data=flow, chunks=(1, h, w, 2), compression="lzf")
        f.attrs.update({"method": settings.method, "bound": float(settings.bound),
                        "fps": float(settings.fps), "height": h, "width": w,
                        "frames": t, "source": source,
                        "settings": json.dumps(settings.to_dict(), sort_keys=True)})
    return Path(dest)


class FlowFile(NamedTuple):
    """A flow file's quantized frames ``(T, H, W, 2) uint8`` and how to read them."""

    flow: np.ndarray
    bound: float
    fps: float
    method: str
    settings: dict[str, Any]

    def pixels(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Frames ``start:stop`` in pixels, ``(n, H, W, 2) float32``."""
        return dequantize(self.flow[start:stop], self.bound)


@contextlib.contextmanager
def _open_flow(path: Path, video_id: str | None) -> Iterator[tuple[Any, Any]]:
    """The checked ``flow`` dataset and attributes of a flow file, or a VideoError naming
    the file and what is wrong with it."""
    import h5py

    if not path.exists():
        raise VideoError(path, "no flow file: the flow stage has not made one for this video "
                         "(run it; data/flow/report.json says why a video failed)",
                         video_id=video_id)
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise VideoError(path, f"not a readable tspipe flow file ({exc})",
                         video_id=video_id) from exc
    with f:
        if DATASET not in f or not {"bound", "fps", "method", "settings"} <= set(f.attrs):
            raise VideoError(path, "not a tspipe flow file (no flow dataset or attributes)",
                             video_id=video_id)
        data = f[DATASET]
        if data.dtype != np.uint8 or data.ndim != 4 or data.shape[-1] != 2:
            raise VideoError(path, f"dataset {DATASET!r} is {data.shape} {data.dtype}, not "
                             "(T, H, W, 2) uint8", video_id=video_id)
        yield data, f.attrs


def read_flow(path: str | Path, *, video_id: str | None = None) -> FlowFile:
    """Read a whole flow file; a missing or malformed one raises :class:`VideoError`."""
    with _open_flow(Path(path), video_id) as (data, attrs):
        return FlowFile(data[()], float(attrs["bound"]), float(attrs["fps"]),
                        str(attrs["method"]), json.loads(attrs["settings"]))


def iter_flow(path: str | Path, *, fps: float, video_id: str | None = None,
              block: int = 64) -> Iterator[np.ndarray]:
    """A flow file's frames in pixels, ``(H, W, 2) float32`` each, read ``block`` frames at
    a time (a long video is never held whole). The file must have been made at ``fps``."""
    path = Path(path)
    with _open_flow(path, video_id) as (data, attrs):
        bound, made_at = float(attrs["bound"]), float(attrs["fps"])
        if abs(made_at - float(fps)) > 1e-6:
            raise VideoError(path, f"flow made at {made_at} fps, but clips are taken at "
                             f"{fps} fps: rerun the flow stage at this clip rate",
                             video_id=video_id)
        for start in range(0, data.shape[0], block):
            yield from dequantize(data[start:start + block], bound)


def flow_settings_of(path: str | Path) -> dict[str, Any] | None:
    """The settings a finished flow file was made with (None: no readable file)."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            return json.loads(f.attrs["settings"])
    except (OSError, KeyError, ValueError):
        return None
