"""SynthActions frames: a textured actor, distractors and a jittering camera, in numpy only.

A frame is composited on a canvas larger than the frame by the camera's jitter margin:
background texture, the distractors behind the actor, the actor, the distractors in front;
then it is cropped at the camera offset and scaled by a slow illumination gain. Each sprite
is resampled once per quantized (scale_x, scale_y, angle) and cached for the video, so a
frame costs a few slice-and-blend operations.

An action class is a motion pattern of the actor. TSP fine-tuning flips clips horizontally
at random, so no two classes may be horizontal mirrors of each other: the patterns move
vertically, oscillate symmetrically, change scale, or turn in a direction drawn per instance.
Between actions the actor idles with a per-video drift level, so the same idle speed can be
background in one video and well below the action speed in another: the video's context
helps to place a boundary.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

# Class names, in the fixed order the first K classes are taken from.
PATTERNS: tuple[str, ...] = (
    "rise", "fall", "spin", "shake", "bounce", "grow",
    "shrink", "pulse", "orbit", "zigzag", "flicker", "squash",
)
# One cycle of each pattern at speed 1 (s); a video scales all of them by its own speed.
_PERIOD_S = {
    "rise": 1.6, "fall": 1.6, "spin": 1.2, "shake": 0.45, "bounce": 0.8, "grow": 1.6,
    "shrink": 1.6, "pulse": 0.8, "orbit": 1.6, "zigzag": 1.6, "flicker": 0.4, "squash": 0.7,
}
_SHAPES = ("disc", "square", "triangle", "star", "cross", "ring", "diamond", "hexagon")
_ANGLE_BINS = 120  # 3 degree bins: finer than one spin step at 15 fps, coarse enough to cache
_SCALE_BINS = 32  # 1/32 scale steps: under a pixel at the actor's size
_REF_HEIGHT = 96.0  # sizes and speeds below were tuned at 128x96 and scale with the height
_MAX_JITTER = 3.0  # camera offset bound (px at the reference height); the canvas margin
_WRAP_EDGE = 0.12  # share of a cycle over which rise/fall/grow/shrink fade out and back in


class Span(NamedTuple):
    """An action instance in frames: ``start`` is its first frame, ``stop`` one past its last."""

    start: int
    stop: int


@dataclass(frozen=True)
class RenderSpec:
    """What one video shows: ``frames`` at ``fps``, ``width`` x ``height`` px, one pattern."""

    frames: int
    fps: int
    width: int
    height: int
    pattern: str
    spans: tuple[Span, ...]
    # How many distractors wander about: drawn in [lo, hi). The benchmark's (2, 5); the
    # base stage's corpus may ask for fewer (see tspipe.data.synth_corpus).
    distractors: tuple[int, int] = (2, 5)


@dataclass
class _Track:
    """Per-frame pose of one sprite; arrays of shape (T,). x, y: canvas px; angle: radians."""

    x: np.ndarray
    y: np.ndarray
    sx: np.ndarray
    sy: np.ndarray
    angle: np.ndarray
    opacity: np.ndarray


@dataclass(frozen=True)
class _Style:
    """Per-video pattern variation: speed multiplies frequencies, amp the amplitudes."""

    speed: float
    amp: float
    ease_s: float


class _Sprite:
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


@dataclass
class _Scene:
    background: np.ndarray  # (H + 2m, W + 2m, 3) float32
    layers: list[tuple[_Sprite, _Track]]  # back to front
    offset_x: np.ndarray  # (T,) int, crop origin on the canvas
    offset_y: np.ndarray
    gain: np.ndarray  # (T,) float32 illumination


def render_frames(spec: RenderSpec, rng: np.random.Generator) -> Iterator[np.ndarray]:
    """Yield the video's frames in order, each an RGB ``(H, W, 3) uint8`` array."""
    scene = _build_scene(spec, rng)
    h, w = spec.height, spec.width
    positions = [(np.rint(t.x).astype(np.intp), np.rint(t.y).astype(np.intp))
                 for _, t in scene.layers]
    for f in range(spec.frames):
        canvas = scene.background.copy()
        for (sprite, track), (xs, ys) in zip(scene.layers, positions, strict=True):
            pre, alpha = sprite.view(track.sx[f], track.sy[f], track.angle[f])
            _blit(canvas, pre, alpha, int(xs[f]), int(ys[f]), float(track.opacity[f]))
        oy, ox = scene.offset_y[f], scene.offset_x[f]
        crop = canvas[oy:oy + h, ox:ox + w] * scene.gain[f]
        yield np.clip(crop + 0.5, 0, 255).astype(np.uint8)  # +0.5 then truncate: rounding


def render_video(spec: RenderSpec, rng: np.random.Generator) -> np.ndarray:
    """All frames at once: ``(T, H, W, 3) uint8`` (tests and small previews)."""
    return np.stack(list(render_frames(spec, rng)))


def _build_scene(spec: RenderSpec, rng: np.random.Generator) -> _Scene:
    h, w, t_len, fps = spec.height, spec.width, spec.frames, spec.fps
    unit = h / _REF_HEIGHT
    margin = math.ceil(_MAX_JITTER * unit) + 1
    # The actions draw from their own stream: the same video without its actions (spans=())
    # shows the identical scene, so an action's pixels can be isolated by difference.
    # (A drawn seed, not Generator.spawn: spawning mutates the caller's SeedSequence.)
    action_rng = np.random.default_rng(int(rng.integers(2**63)))
    shapes = [_SHAPES[i] for i in rng.permutation(len(_SHAPES))]
    background = _background(rng, h + 2 * margin, w + 2 * margin, unit)

    diameter = rng.uniform(0.2, 0.28) * h
    actor = _Sprite(*_actor_look(rng, shapes[0], _sprite_px(diameter)), diameter)
    track = _idle_track(rng, t_len, fps, x0=margin + rng.uniform(0.35, 0.65) * w,
                        y0=margin + rng.uniform(0.45, 0.55) * h, h=h)
    style = _Style(speed=action_rng.uniform(0.75, 1.35), amp=action_rng.uniform(0.8, 1.2),
                   ease_s=action_rng.uniform(0.2, 0.4))
    for span in spec.spans:
        _apply_pattern(track, spec.pattern, span, fps, h, style, action_rng)

    behind: list[tuple[_Sprite, _Track]] = []
    front: list[tuple[_Sprite, _Track]] = []
    for k in range(int(rng.integers(*spec.distractors))):
        d = rng.uniform(0.1, 0.18) * h
        sprite = _Sprite(*_distractor_look(rng, shapes[1 + k], _sprite_px(d)), d)
        walk = _wander_track(rng, t_len, fps, w, h, margin, speed=rng.uniform(4, 16) * unit)
        # Some distractors pass in front of the actor and occlude it.
        (front if rng.random() < 0.25 else behind).append((sprite, walk))

    jitter = rng.uniform(0.5, _MAX_JITTER) * unit
    offset_x = margin + np.rint(jitter * _smooth_noise(rng, t_len, fps, 1.5)).astype(np.intp)
    offset_y = margin + np.rint(jitter * _smooth_noise(rng, t_len, fps, 1.5)).astype(np.intp)
    gain = 1 + rng.uniform(0, 0.05) * _smooth_noise(rng, t_len, fps, 0.1)
    return _Scene(background, [*behind, (actor, track), *front], offset_x, offset_y,
                  gain.astype(np.float32))


def _idle_track(rng: np.random.Generator, t_len: int, fps: int, x0: float, y0: float,
                h: int) -> _Track:
    """The actor between actions: drift, wobble and breathing scaled by a per-video level."""
    level = math.exp(rng.uniform(math.log(0.25), 0.0))
    drift = level * 0.08 * h
    scale = 1 + level * 0.04 * _smooth_noise(rng, t_len, fps, 0.1)
    return _Track(
        x=x0 + drift * _smooth_noise(rng, t_len, fps, 0.2),
        y=y0 + drift * _smooth_noise(rng, t_len, fps, 0.2),
        sx=scale.copy(), sy=scale,
        angle=rng.uniform(0, 2 * math.pi)
        + level * math.radians(12) * _smooth_noise(rng, t_len, fps, 0.15),
        opacity=np.ones(t_len),
    )


def _apply_pattern(track: _Track, pattern: str, span: Span, fps: int, h: int, style: _Style,
                   rng: np.random.Generator) -> None:
    """Add one action instance to the actor's track, in place.

    Amplitudes ride on an ease-in/out envelope and the instance holds a whole number of
    cycles, so the pose is continuous at both ends (only spin leaves a new orientation).
    """
    n = span.stop - span.start
    length_s = n / fps
    tau = (np.arange(n) + 0.5) / fps
    env = _envelope(tau, length_s, style.ease_s)
    amp = style.amp * rng.uniform(0.85, 1.15)
    # At least 4 frames a cycle, or an oscillation aliases into something else.
    period = max(_PERIOD_S[pattern] * rng.uniform(0.9, 1.1) / style.speed, 4 / fps)
    cycles = max(1, round(length_s / period))
    phase = tau * cycles / length_s
    frac = phase % 1.0
    wave = np.sin(2 * math.pi * phase)
    sl = slice(span.start, span.stop)
    if pattern in ("rise", "fall"):
        # A conveyor: move one way, fade out, reappear at the start; no mirror-image return.
        sign = -1.0 if pattern == "rise" else 1.0
        track.y[sl] += sign * 0.28 * h * amp * env * frac
        track.opacity[sl] *= _wrap_fade(frac, env)
    elif pattern == "spin":
        direction = rng.choice([-1.0, 1.0])  # drawn per instance: a flip maps one onto the other
        turned = direction * (2 * math.pi / period) * np.cumsum(env) / fps
        track.angle[sl] += turned
        track.angle[span.stop:] += turned[-1]
    elif pattern == "shake":
        track.x[sl] += 0.07 * h * amp * env * wave
    elif pattern == "bounce":
        track.y[sl] -= 0.22 * h * amp * env * np.abs(np.sin(math.pi * phase))
    elif pattern in ("grow", "shrink"):
        factor = 1 + (0.8 * amp if pattern == "grow" else -0.5) * env * frac
        track.sx[sl] *= factor
        track.sy[sl] *= factor
        track.opacity[sl] *= _wrap_fade(frac, env)
    elif pattern == "pulse":
        factor = 1 + 0.3 * amp * env * wave
        track.sx[sl] *= factor
        track.sy[sl] *= factor
    elif pattern == "orbit":
        direction = rng.choice([-1.0, 1.0])
        radius = 0.18 * h * amp * env
        track.x[sl] += direction * radius * wave
        track.y[sl] -= radius * (1 - np.cos(2 * math.pi * phase))
    elif pattern == "zigzag":
        # x at one frequency, y at twice it: a mirror equals a half-cycle shift in time.
        track.x[sl] += 0.25 * h * amp * env * _triangle(phase)
        track.y[sl] += 0.1 * h * amp * env * _triangle(2 * phase)
    elif pattern == "flicker":
        track.opacity[sl] *= 1 - 0.85 * env * np.clip(0.5 + 1.5 * wave, 0, 1)
    elif pattern == "squash":
        track.sx[sl] *= 1 + 0.3 * amp * env * wave
        track.sy[sl] *= 1 - 0.3 * amp * env * wave
    else:
        raise ValueError(f"unknown SynthActions pattern {pattern!r}; known: {PATTERNS}")


def _wander_track(rng: np.random.Generator, t_len: int, fps: int, w: int, h: int,
                  margin: int, speed: float) -> _Track:
    """A distractor's random walk: integrated Ornstein-Uhlenbeck velocity, folded into frame."""
    rho = math.exp(-1.0 / (fps * rng.uniform(0.5, 2.0)))  # velocity memory of 0.5-2 s
    kicks = rng.standard_normal((t_len, 3)) * math.sqrt(1 - rho * rho)
    vel = np.empty((t_len, 3))
    vel[0] = rng.standard_normal(3)
    for f in range(1, t_len):  # T steps of a 3-vector: cheap next to compositing
        vel[f] = rho * vel[f - 1] + kicks[f]
    steps = vel * np.array([speed, speed, math.radians(rng.uniform(20, 90))]) / fps
    x = _fold(rng.uniform(0, w) + np.cumsum(steps[:, 0]), 0, w) + margin
    y = _fold(rng.uniform(0, h) + np.cumsum(steps[:, 1]), 0, h) + margin
    ones = np.ones(t_len)
    return _Track(x=x, y=y, sx=ones, sy=ones,
                  angle=rng.uniform(0, 2 * math.pi) + np.cumsum(steps[:, 2]), opacity=ones)


def _smooth_noise(rng: np.random.Generator, t_len: int, fps: int, max_hz: float) -> np.ndarray:
    """(T,) smooth random signal within [-1, 1]: four sinusoids up to ``max_hz``."""
    t = np.arange(t_len) / fps
    freq = rng.uniform(0.2, 1.0, 4) * max_hz
    phase = rng.uniform(0, 2 * math.pi, 4)
    weight = rng.uniform(0.5, 1.0, 4)
    waves = weight[:, None] * np.sin(2 * math.pi * freq[:, None] * t + phase[:, None])
    return waves.sum(axis=0) / weight.sum()


def _envelope(tau: np.ndarray, length_s: float, ease_s: float) -> np.ndarray:
    """0 -> 1 -> 0 over an action, smoothstep ramps of ``ease_s`` seconds at both ends."""
    ramp = min(ease_s, length_s / 2)
    rise = np.clip(tau / ramp, 0, 1)
    fall = np.clip((length_s - tau) / ramp, 0, 1)
    return _smoothstep(rise) * _smoothstep(fall)


def _smoothstep(x: np.ndarray) -> np.ndarray:
    return x * x * (3 - 2 * x)


def _wrap_fade(frac: np.ndarray, env: np.ndarray) -> np.ndarray:
    edge = np.clip(np.minimum(frac, 1 - frac) / _WRAP_EDGE, 0, 1)
    return 1 - env * (1 - edge)


def _triangle(phase: np.ndarray) -> np.ndarray:
    """Triangle wave of period 1 in [-1, 1], 0 at phase 0."""
    return (2 / math.pi) * np.arcsin(np.sin(2 * math.pi * phase))


def _fold(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Reflect ``x`` into [lo, hi] as a ball bouncing off the walls."""
    span = hi - lo
    y = np.mod(x - lo, 2 * span)
    return lo + np.where(y > span, 2 * span - y, y)


def _blit(canvas: np.ndarray, pre: np.ndarray, alpha: np.ndarray, cx: int, cy: int,
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


def _sprite_px(diameter: float) -> int:
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


def _background(rng: np.random.Generator, h: int, w: int, unit: float) -> np.ndarray:
    """(h, w, 3) float32 texture: coarse blotches, fine grain and a grating in two colours."""
    c0, c1 = _colours(rng, 2)
    coarse = _value_noise(rng, h, w, rng.uniform(12, 24) * unit)
    fine = _value_noise(rng, h, w, rng.uniform(3, 6) * unit)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    stripes = _grating(rng, y, x, rng.uniform(8, 20) * unit)
    return _mix(c0, c1, 0.55 * coarse + 0.25 * fine + 0.2 * stripes)


def _actor_look(rng: np.random.Generator, shape: str, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The actor: striped shape with an off-centre dot, so that turning is visible."""
    y, x = _unit_grid(n)
    c0, c1, c2 = _colours(rng, 3)
    rgb = _mix(c0, c1, _grating(rng, y, x, rng.uniform(0.35, 0.6)))
    dot = np.hypot(x - 0.5, y - 0.1) <= 0.22
    rgb[dot] = c2
    return rgb, _shape_alpha(shape, n)


def _distractor_look(rng: np.random.Generator, shape: str,
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
