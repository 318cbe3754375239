"""What an encoder expects as input: one record shared by every family.

Extraction and training read it from the model (or from the checkpoint that carries it)
instead of trusting the user: clip length, crop size, how raw values are scaled and
normalized, and the number of channels (3 for RGB, 2 for optical flow).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor


@dataclass(frozen=True)
class InputSpec:
    """Clips are ``(N, channels, frames, size, size)``. Raw values (RGB pixels / 255, or
    flow in pixels) lie in ``value_range``; flow is first clipped to ``+-flow_clip``; then
    each channel is normalized as ``(x - mean) / std``.

    - Video ResNets (Kinetics/TSP): RGB in [0, 1], Kinetics mean/std.
    - I3D RGB: RGB in [0, 1], mean = std = 0.5, i.e. ``x / 127.5 - 1`` on [0, 255].
    - I3D flow: flow clipped to [-20, 20], mean 0, std 20, i.e. scaled to [-1, 1].
    """

    frames: int
    size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    value_range: tuple[float, float] = (0.0, 1.0)
    channels: int = 3
    flow_clip: float | None = None

    def normalize(self, clips: Tensor) -> Tensor:
        """``(N, C, T, H, W)`` raw values -> the encoder's input (float32)."""
        x = clips.to(torch.float32)
        if self.flow_clip is not None:
            x = x.clamp(-self.flow_clip, self.flow_clip)
        shape = (1, self.channels, 1, 1, 1)
        mean = torch.tensor(self.mean, dtype=x.dtype, device=x.device).view(shape)
        std = torch.tensor(self.std, dtype=x.dtype, device=x.device).view(shape)
        return (x - mean) / std

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> InputSpec:
        """Inverse of :meth:`to_dict` (lists, as JSON gives them back, become tuples)."""
        clip = data.get("flow_clip")
        return cls(frames=int(data["frames"]), size=int(data["size"]),
                   mean=tuple(float(v) for v in data["mean"]),
                   std=tuple(float(v) for v in data["std"]),
                   value_range=tuple(float(v) for v in data["value_range"]),  # type: ignore[arg-type]
                   channels=int(data.get("channels", 3)),
                   flow_clip=None if clip is None else float(clip))
