"""What SynthActions shows: sprites (the actor, distractors) and the background texture.

A sprite is a textured shape, premultiplied RGB + alpha, resampled once per quantized
(scale_x, scale_y, angle) and cached for the video, so compositing a frame
(:func:`blit`) costs a few slice-and-blend operations. The actor is striped with an
off-centre dot (so that turning is visible); distractors are blotchy or checkered, unlike
the actor. Where they move is ``tspipe.data.synth_render``'s business.
"""

from __future__ import annotations

import math

import numpy as np

SHAPES = ("disc", "square", "triangle", "star", "cross", "ring", "diamond", "hexagon")
_ANGLE_BINS = 120  # 3 degree bins: finer than one spin step at 15 fps, coarse enough to cache
_SCALE_BINS = 32  # 1/32 scale steps: under a pixel at the actor's size


class Sprite:
    """A textured shape (premultiplied RGB + alpha) with its resampled views cached."""

    def __init__(self, rgb: np.ndarray, alpha: np.ndarray, diameter: float) -> None:
        n = alpha.shape[0]
        src = np.concatenate([rgb * alpha[..., None], alpha[..., None]], axis=-1)
        # A zero border: samples falling outside the shape clamp onto transparent pixels.
        self._src = np.pad(src, ((1, 1), (1, 1), (0, 0))).astype(np.float32)
        self._n = n
        self._diameter = diameter
        self._cache: dict[tuple[int, int, int], tuple[np.ndarray, np.ndarray]] = {}

    def view(self, sx: float, sy: float, angle: float) -> tuple[np.ndarray, np.ndarray]:
        """Premultiplied RGB (h, w, 3) and alpha (h, w) float32, h = w odd, centred."""
        key = (max(2, round(sx * _SCALE_BINS)), max(2, round(sy * _SCALE_BINS)),
               round(angle / (2 * math.pi) * _ANGLE_BINS) % _ANGLE_BINS)
        if key not in self._cache:
            self._cache[key] = self._resample(key[0] / _SCALE_BINS, key[1] / _SCALE_BINS,
                                              key[2] * 2 * math.pi / _ANGLE_BINS)
        return self._cache[key]

    def _resample(self, sx: float, sy: float, angle: float) -> tuple[np.ndarray, np.ndarray]:
        half = math.ceil(self._diameter * max(sx, sy) * 0.75) + 1  # covers the rotated corners
        v, u = np.mgrid[-half:half + 1, -half:half + 1].astype(np.float32)
        u, v = u / sx, v / sy  # undo the scale (frame axes: squash is vertical on screen)
        cos, sin = math.cos(angle), math.sin(angle)
        px_per_unit = self._n / self._diameter
        centre = (self._n - 1) / 2 + 1  # +1: the zero border
        xs = (cos * u + sin * v) * px_per_unit + centre
        ys = (-sin * u + cos * v) * px_per_unit + centre
        out = _bilinear(self._src, ys, xs)
        return np.ascontiguousarray(out[..., :3]), np.ascontiguousarray(out[..., 3])


def blit(canvas: np.ndarray, pre: np.ndarray, alpha: np.ndarray, cx: int, cy: int,
         opacity: float) -> None:
    """Alpha-composite a premultiplied sprite centred at (cx, cy), clipped to the canvas."""
    if opacity <= 0:
        return
    size = alpha.shape[0]
    top, left = cy - size // 2, cx - size // 2
    y0, x0 = max(top, 0), max(left, 0)
    y1, x1 = min(top + size, canvas.shape[0]), min(left + size, canvas.shape[1])
    if y0 >= y1 or x0 >= x1:
        return
    a = alpha[y0 - top:y1 - top, x0 - left:x1 - left, None] * opacity
    region = canvas[y0:y1, x0:x1]  # a view: blended in place
    region *= 1 - a
    region += pre[y0 - top:y1 - top, x0 - left:x1 - left] * opacity


def _bilinear(img: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """Sample ``img`` (h, w, C) at float coordinates (edges clamped): shape ys.shape + (C,)."""
    h, w = img.shape[:2]
    ys = np.clip(ys, 0, h - 1)
    xs = np.clip(xs, 0, w - 1)
    y0 = np.floor(ys).astype(np.intp)
    x0 = np.floor(xs).astype(np.intp)
    y1 = np.minimum(y0 + 1, h - 1)
    x1 = np.minimum(x0 + 1, w - 1)
    wy = (ys - y0)[..., None].astype(np.float32)
    wx = (xs - x0)[..., None].astype(np.float32)
    top = img[y0, x0] * (1 - wx) + img[y0, x1] * wx
    bottom = img[y1, x0] * (1 - wx) + img[y1, x1] * wx
    return top * (1 - wy) + bottom * wy


def sprite_px(diameter: float) -> int:
    # 1.5x the on-screen size: enough detail for the largest (grow) views.
    return max(16, math.ceil(1.5 * diameter))


def _unit_grid(n: int) -> tuple[np.ndarray, np.ndarray]:
    """(y, x) coordinates in [-1, 1] of the centres of an n x n grid."""
    c = (np.arange(n) + 0.5) / n * 2 - 1
    return np.meshgrid(c, c, indexing="ij")


def _shape_alpha(shape: str, n: int) -> np.ndarray:
    """Anti-aliased (n, n) float32 alpha of a shape: 4x4 supersampled, block-averaged."""
    y, x = _unit_grid(4 * n)
    r, theta = np.hypot(x, y), np.arctan2(y, x)
    ax, ay = np.abs(x), np.abs(y)
    inside = {
        "disc": r <= 0.95,
        "square": np.maximum(ax, ay) <= 0.72,
        "triangle": (y <= 0.6) & (ax <= 0.85 * (y + 0.9) / 1.5),
        "star": r <= 0.5 + 0.4 * np.cos(5 * theta),
        "cross": ((ax <= 0.3) & (ay <= 0.9)) | ((ay <= 0.3) & (ax <= 0.9)),
        "ring": (r >= 0.45) & (r <= 0.95),
        "diamond": ax + ay <= 0.95,
        "hexagon": (ay <= 0.82) & (ax * 0.866 + ay * 0.5 <= 0.82),
    }[shape]
    return inside.reshape(n, 4, n, 4).mean(axis=(1, 3)).astype(np.float32)


def _colours(rng: np.random.Generator, k: int) -> np.ndarray:
    return rng.uniform(20, 235, (k, 3)).astype(np.float32)


def _mix(c0: np.ndarray, c1: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Per-pixel blend of two RGB colours by ``t`` (..., ) in [0, 1]: (..., 3) float32."""
    t = t[..., None].astype(np.float32)
    return c0 * (1 - t) + c1 * t


def _grating(rng: np.random.Generator, y: np.ndarray, x: np.ndarray,
             period: float) -> np.ndarray:
    theta = rng.uniform(0, math.pi)
    return 0.5 + 0.5 * np.sin(2 * math.pi * (x * math.cos(theta) + y * math.sin(theta)) / period
                              + rng.uniform(0, 2 * math.pi))


def _value_noise(rng: np.random.Generator, h: int, w: int, cell: float) -> np.ndarray:
    """(h, w) smooth noise in [0, 1]: a random grid of ``cell`` px, bilinearly upsampled."""
    grid = rng.random((math.ceil(h / cell) + 2, math.ceil(w / cell) + 2, 1))
    ys, xs = np.meshgrid(np.arange(h) / cell, np.arange(w) / cell, indexing="ij")
    return _bilinear(grid, ys, xs)[..., 0]


def background_texture(rng: np.random.Generator, h: int, w: int, unit: float) -> np.ndarray:
    """(h, w, 3) float32 texture: coarse blotches, fine grain and a grating in two colours."""
    c0, c1 = _colours(rng, 2)
    coarse = _value_noise(rng, h, w, rng.uniform(12, 24) * unit)
    fine = _value_noise(rng, h, w, rng.uniform(3, 6) * unit)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    stripes = _grating(rng, y, x, rng.uniform(8, 20) * unit)
    return _mix(c0, c1, 0.55 * coarse + 0.25 * fine + 0.2 * stripes)


def actor_look(rng: np.random.Generator, shape: str, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The actor: striped shape with an off-centre dot, so that turning is visible."""
    y, x = _unit_grid(n)
    c0, c1, c2 = _colours(rng, 3)
    rgb = _mix(c0, c1, _grating(rng, y, x, rng.uniform(0.35, 0.6)))
    dot = np.hypot(x - 0.5, y - 0.1) <= 0.22
    rgb[dot] = c2
    return rgb, _shape_alpha(shape, n)


def distractor_look(rng: np.random.Generator, shape: str,
                    n: int) -> tuple[np.ndarray, np.ndarray]:
    """A distractor: blotchy or checkered two-colour texture, unlike the actor's stripes."""
    y, x = _unit_grid(n)
    c0, c1 = _colours(rng, 2)
    if rng.random() < 0.5:
        t = _value_noise(rng, n, n, n / rng.uniform(2, 4))
    else:
        cells = int(rng.integers(2, 5))
        t = ((np.floor((x + 1) * cells) + np.floor((y + 1) * cells)) % 2).astype(np.float32)
    return _mix(c0, c1, t), _shape_alpha(shape, n)
