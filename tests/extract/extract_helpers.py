"""Small real test videos and an independent, plain-PyAV copy of the TSP reference's
extraction (the acceptance test's yardstick: it shares no code with tspipe.extract)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tspipe.data.video.encode import write_video


def scene_frames(n: int, *, height: int = 96, width: int = 128, seed: int = 0
                 ) -> Iterator[np.ndarray]:
    """``n`` frames of a smooth moving scene (gradients, a drifting blob, mild texture),
    different for every seed: content a codec keeps and a resize does not alias much."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:height, :width].astype(np.float32)
    texture = rng.normal(0, 12, (height, width, 3)).astype(np.float32)
    phase = rng.uniform(0, 2 * np.pi, 3)
    for i in range(n):
        cy = height / 2 + height / 4 * np.sin(0.11 * i + phase[0])
        cx = width / 2 + width / 3 * np.cos(0.07 * i + phase[1])
        blob = 150 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * (width / 8) ** 2))
        ramp = 60 + 50 * np.sin(xx / width * 3 + 0.05 * i + phase[2]) * np.cos(yy / height * 2)
        rgb = np.stack([ramp + blob, ramp * 0.8 + 0.5 * blob, 140 - 0.5 * ramp + 0.2 * blob], -1)
        yield np.clip(rgb + np.roll(texture, i, axis=1), 0, 255).astype(np.uint8)


def make_scene(path: Path, n: int, *, seed: int = 0, size: tuple[int, int] = (96, 128),
               fps: int = 30) -> Path:
    write_video(path, scene_frames(n, height=size[0], width=size[1], seed=seed), fps=fps)
    return path


def make_levels(path: Path, levels: list[tuple[int, int, int]], *, size: tuple[int, int] =
                (48, 64), fps: int = 30) -> Path:
    """One flat-colour frame per entry of ``levels`` (R, G, B)."""
    h, w = size
    write_video(path, (np.full((h, w, 3), c, np.uint8) for c in levels), fps=fps)
    return path


def tsp_reference_clips(path: Path, *, frames: int = 16, stride: int = 16, step: int = 2,
                        resize: tuple[int, int] = (128, 171), crop: int = 112,
                        mean: tuple[float, ...], std: tuple[float, ...]) -> list[torch.Tensor]:
    """The reference's clips of a 30 fps video, written out plainly: decode every frame
    with PyAV (``frame.to_rgb()``, as torchvision 0.5's read_video), take every ``step``-th,
    cut ``[s, s + frames)`` for ``s`` in ``range(0, n - frames + 1, stride)`` (a video
    shorter than a clip: its frames then the last one repeated), then ToFloatTensorInZeroOne,
    Resize (bilinear, align_corners=False), Normalize, CenterCrop."""
    with av.open(str(path)) as container:
        video = np.stack([f.to_rgb().to_ndarray() for f in container.decode(video=0)])
    picked = video[::step]
    starts = list(range(0, len(picked) - frames + 1, stride))
    if not starts:
        pad = np.repeat(picked[-1:], frames - len(picked), axis=0)
        picked, starts = np.concatenate([picked, pad]), [0]
    m = torch.tensor(mean).view(-1, 1, 1, 1)
    s_ = torch.tensor(std).view(-1, 1, 1, 1)
    clips = []
    for s in starts:
        clip = torch.from_numpy(picked[s:s + frames]).permute(3, 0, 1, 2).to(torch.float32) / 255
        clip = F.interpolate(clip, size=resize, mode="bilinear", align_corners=False)
        clip = (clip - m) / s_
        h, w = clip.shape[-2:]
        i, j = int(round((h - crop) / 2.0)), int(round((w - crop) / 2.0))  # noqa: RUF046
        clips.append(clip[..., i:i + crop, j:j + crop])
    return clips


class MeanColour(nn.Module):
    """A toy encoder: each clip's mean value per channel, ``(N, C)``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3, 4))


class CountingModel(nn.Module):
    """Wraps an encoder and counts the clips it has encoded."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.clips = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.clips += len(x)
        return self.inner(x)
