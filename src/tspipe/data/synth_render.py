"""SynthActions frames: a textured actor, distractors and a jittering camera, in numpy only.

A frame is composited on a canvas larger than the frame by the camera's jitter margin:
background texture, the distractors behind the actor, the actor, the distractors in front;
then it is cropped at the camera offset and scaled by a slow illumination gain. What the
sprites and the background look like is ``tspipe.data.synth_sprites``; this module moves them.

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

from tspipe.data.synth_sprites import (
    SHAPES,
    Sprite,
    actor_look,
    background_texture,
    blit,
    distractor_look,
    sprite_px,
)

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
_REF_HEIGHT = 96.0  # sizes and speeds below were tuned at 128x96 and scale with the height
_MAX_JITTER = 3.0  # camera offset bound (px at the reference height); the canvas margin
_WRAP_EDGE = 0.12  # share of a cycle over which rise/fall/grow/shrink fade out and back in
_PAN = 10.0  # hard: camera pan amplitude (px at the reference height), on top of the jitter
_PAN_HZ = 0.08  # hard: the pans' highest frequency
_HARD_EASE_S = (0.3, 0.6)  # hard: an action's ramp in and out, seconds (normal: 0.2-0.4)


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
    # "hard": background that moves like the actions (see _hard_extras), slow ramps in and
    # out of each action; ``patterns`` are the ones the mimics draw from (the dataset's).
    difficulty: str = "normal"
    patterns: tuple[str, ...] = ()


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


@dataclass
class _Scene:
    background: np.ndarray  # (H + 2m, W + 2m, 3) float32
    layers: list[tuple[Sprite, _Track]]  # back to front
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
            blit(canvas, pre, alpha, int(xs[f]), int(ys[f]), float(track.opacity[f]))
        oy, ox = scene.offset_y[f], scene.offset_x[f]
        crop = canvas[oy:oy + h, ox:ox + w] * scene.gain[f]
        yield np.clip(crop + 0.5, 0, 255).astype(np.uint8)  # +0.5 then truncate: rounding


def render_video(spec: RenderSpec, rng: np.random.Generator) -> np.ndarray:
    """All frames at once: ``(T, H, W, 3) uint8`` (tests and small previews)."""
    return np.stack(list(render_frames(spec, rng)))


def _build_scene(spec: RenderSpec, rng: np.random.Generator) -> _Scene:
    h, w, t_len, fps = spec.height, spec.width, spec.frames, spec.fps
    unit = h / _REF_HEIGHT
    hard = spec.difficulty == "hard"
    pan = _PAN * unit if hard else 0.0
    margin = math.ceil(_MAX_JITTER * unit + pan) + 1
    # The actions draw from their own stream: the same video without its actions (spans=())
    # shows the identical scene, so an action's pixels can be isolated by difference.
    # (A drawn seed, not Generator.spawn: spawning mutates the caller's SeedSequence.)
    action_rng = np.random.default_rng(int(rng.integers(2**63)))
    shapes = [SHAPES[i] for i in rng.permutation(len(SHAPES))]
    background = background_texture(rng, h + 2 * margin, w + 2 * margin, unit)

    diameter = rng.uniform(0.2, 0.28) * h
    actor = Sprite(*actor_look(rng, shapes[0], sprite_px(diameter)), diameter)
    track = _idle_track(rng, t_len, fps, x0=margin + rng.uniform(0.35, 0.65) * w,
                        y0=margin + rng.uniform(0.45, 0.55) * h, h=h)
    style = _Style(speed=action_rng.uniform(0.75, 1.35), amp=action_rng.uniform(0.8, 1.2),
                   ease_s=action_rng.uniform(*(_HARD_EASE_S if hard else (0.2, 0.4))))
    for span in spec.spans:
        _apply_pattern(track, spec.pattern, span, fps, h, style, action_rng)

    behind: list[tuple[Sprite, _Track]] = []
    front: list[tuple[Sprite, _Track]] = []
    for k in range(int(rng.integers(*spec.distractors))):
        d = rng.uniform(0.1, 0.18) * h
        sprite = Sprite(*distractor_look(rng, shapes[1 + k], sprite_px(d)), d)
        walk = _wander_track(rng, t_len, fps, w, h, margin, speed=rng.uniform(4, 16) * unit)
        # Some distractors pass in front of the actor and occlude it.
        (front if rng.random() < 0.25 else behind).append((sprite, walk))

    jitter = rng.uniform(0.5, _MAX_JITTER) * unit
    offset_x = margin + np.rint(jitter * _smooth_noise(rng, t_len, fps, 1.5)).astype(np.intp)
    offset_y = margin + np.rint(jitter * _smooth_noise(rng, t_len, fps, 1.5)).astype(np.intp)
    gain = 1 + rng.uniform(0, 0.05) * _smooth_noise(rng, t_len, fps, 0.1)
    if hard:  # drawn after everything the normal videos draw: those keep their bytes
        offset_x += np.rint(pan * _smooth_noise(rng, t_len, fps, _PAN_HZ)).astype(np.intp)
        offset_y += np.rint(pan * _smooth_noise(rng, t_len, fps, _PAN_HZ)).astype(np.intp)
        behind += _hard_extras(rng, spec, shapes, margin, [t for _, t in [*behind, *front]])
    return _Scene(background, [*behind, (actor, track), *front], offset_x, offset_y,
                  gain.astype(np.float32))


def _hard_extras(rng: np.random.Generator, spec: RenderSpec, shapes: list[str], margin: int,
                 distractors: list[_Track]) -> list[tuple[Sprite, _Track]]:
    """SynthActions hard: the distractors come and go (fading in and out), and one or two
    mimics, distractor-looking sprites, perform the dataset's action patterns (the video's
    own among them) in bursts while the actor idles, at their own places, sizes and speeds. Motion
    alone no longer tells action from background: the actor doing it does."""
    h, w, t_len, fps = spec.height, spec.width, spec.frames, spec.fps
    unit = h / _REF_HEIGHT
    for track in distractors:
        track.opacity = _presence(rng, t_len, fps)
    patterns = spec.patterns or PATTERNS[:4]
    mimics = []
    for k in range(int(rng.integers(1, 3))):
        d = rng.uniform(0.1, 0.18) * h
        sprite = Sprite(*distractor_look(rng, shapes[5 + k], sprite_px(d)), d)
        walk = _wander_track(rng, t_len, fps, w, h, margin, speed=rng.uniform(2, 6) * unit)
        walk.sx, walk.sy = walk.sx.copy(), walk.sy.copy()  # patterns scale them apart
        walk.opacity = np.ones(t_len)
        # Smaller than the actor's: amplitudes go with the frame height they are given.
        style = _Style(speed=rng.uniform(0.6, 1.5), amp=rng.uniform(0.6, 1.3),
                       ease_s=rng.uniform(*_HARD_EASE_S))
        scale = rng.uniform(0.5, 0.8)
        # Bursts in the background between the actor's actions (where motion would
        # otherwise give the action away), taking turns with the other mimics.
        for lo, hi in _gaps(spec.spans, t_len):
            cursor = lo + int(rng.uniform(0, 1.5) * fps)
            while True:
                length = int(rng.uniform(0.5, 4.0) * fps)
                if cursor + length > hi:
                    break
                _apply_pattern(walk, str(rng.choice(patterns)), Span(cursor, cursor + length),
                               fps, round(h * scale), style, rng)
                cursor += length + int(rng.uniform(0.5, 3.0) * fps)
        mimics.append((sprite, walk))
    return mimics


def _gaps(spans: tuple[Span, ...], t_len: int) -> list[tuple[int, int]]:
    """The frame ranges between (and around) the spans."""
    out, cursor = [], 0
    for span in sorted(spans):
        if span.start > cursor:
            out.append((cursor, span.start))
        cursor = max(cursor, span.stop)
    if cursor < t_len:
        out.append((cursor, t_len))
    return out


def _presence(rng: np.random.Generator, t_len: int, fps: int) -> np.ndarray:
    """(T,) opacity of a sprite that enters and leaves: visible 2-8 s, gone 1-4 s, in
    turn, with 0.4 s fades."""
    on = np.zeros(t_len)
    cursor, visible = 0, bool(rng.random() < 0.7)
    while cursor < t_len:
        length = int(rng.uniform(*((2, 8) if visible else (1, 4))) * fps)
        on[cursor:cursor + length] = float(visible)
        cursor, visible = cursor + length, not visible
    ramp = max(1, int(0.4 * fps))
    kernel = np.ones(ramp) / ramp
    return np.convolve(np.pad(on, (ramp // 2, ramp - 1 - ramp // 2), mode="edge"), kernel,
                       mode="valid")


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
