"""Frames -> encoder input: the TSP reference's validation transform, exactly, or a fast one.

Two modes, both generic over :class:`~tspipe.models.spec.InputSpec` (crop size, value range,
mean/std, channels), so the same code serves the video ResNets and I3D:

``reference`` reproduces TSP's extraction transform (PyTorch 1.4 / torchvision 0.5, the
``references/video_classification/transforms.py`` functions TSP copied), in its order:

1. ``ToFloatTensorInZeroOne``: ``(T, H, W, C) uint8 -> (C, T, H, W)``, ``float32 / 255``;
2. ``Resize((128, 171))``: ``torch.nn.functional.interpolate(vid, size, mode="bilinear",
   align_corners=False)`` on the 4-D ``(C, T, H, W)`` tensor, i.e. every frame plane on its
   own. **No antialiasing**: ``interpolate`` had no ``antialias`` argument in PyTorch 1.4,
   so a downscale samples 4 source pixels per output pixel (aliasing included), and we do
   the same (``antialias=False``, today's default);
3. ``Normalize``: ``(vid - mean) / std`` per channel, float32;
4. ``CenterCrop((112, 112))``: ``i = int(round((h - th) / 2.))``, same for ``j`` (Python 3
   rounds halves to even: 128x171 -> 112 crops rows 8..119 and columns 30..141).

Normalize and crop are elementwise / slicing, so cropping first gives bit-identical
numbers for less work; the resize is per frame plane, so resizing frames in chunks gives
the numbers of resizing a whole clip (the tests check both bit for bit). Frames are
decoded at the source size and the clip frames picked by index
(``ClipSampler.source_indices``: 30 -> 15 fps is every 2nd frame), as the reference
does; see :mod:`tspipe.extract.loader`.

``fast`` lets the decoder resize while it converts to RGB (swscale's area filter, one call
per kept frame, on frames already resampled to the clip rate), then only crops and
normalizes. Same geometry, other filter: ``tspipe.extract.compare.compare_modes`` measures
how far its features are from the reference's.

Where it runs: :meth:`Preprocess.__call__` is the host path (DataLoader workers, one clip's
new frames at a time, ``(C, T, crop, crop)``); :meth:`Preprocess.frames` is the same
arithmetic, op for op, on a ``(N, H, W, 3) uint8`` tensor wherever it lives (the model's
device, see :mod:`tspipe.extract.runner`), giving ``(N, crop, crop, C)`` frames for
:func:`gather_clips`. On the CPU the two are bit-identical at the same
``torch.get_num_threads()`` (the tests check it on decoded video); note that PyTorch's CPU
bilinear kernel itself rounds differently with one thread than with several (up to ~1e-6
here), and DataLoader workers run one. On CUDA the interpolation kernel may differ from
the CPU's in the last bits of float32 too.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from tspipe.data.video import Size
from tspipe.errors import ConfigError
from tspipe.models.spec import InputSpec

Mode = Literal["reference", "fast"]
MODES: tuple[Mode, ...] = ("reference", "fast")

# TSP's resize before a 112 crop; other crops scale it (I3D's 224 -> 256x342).
TSP_RESIZE: Size = (128, 171)
TSP_CROP = 112
# Float32 bytes per preprocessing chunk: small enough for malloc to reuse the memory
# instead of mapping fresh pages each time (measured: 16 frames of 640x360 in 11 ms in
# chunks of 1-4 frames, 43 ms in one piece).
CHUNK_BYTES = 8 << 20


def default_resize(crop: int) -> Size:
    """TSP's 128x171 resize scaled to ``crop`` (112 -> 128x171, 64 -> 73x98,
    224 -> 256x342): the same margin around the centre crop for every encoder."""
    return (math.floor(TSP_RESIZE[0] * crop / TSP_CROP + 0.5),
            math.floor(TSP_RESIZE[1] * crop / TSP_CROP + 0.5))


def center_crop_offsets(height: int, width: int, crop: int) -> tuple[int, int]:
    """Top-left corner of torchvision 0.5's centre crop: ``int(round((h - th) / 2.))``
    (Python 3's ``round`` returns an int and rounds halves to even)."""
    return round((height - crop) / 2.0), round((width - crop) / 2.0)


@dataclass(frozen=True)
class Preprocess:
    """How raw RGB frames become an encoder's input.

    ``resize`` ``(H, W)`` is the size before the centre crop of ``spec.size`` pixels.
    """

    mode: Mode
    spec: InputSpec
    resize: Size

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ConfigError(f"preprocessing mode {self.mode!r}: choose one of "
                              f"{', '.join(MODES)}")
        if self.spec.channels not in (3, 2):
            raise ConfigError(f"preprocessing makes RGB (3 channels) or optical-flow (2) "
                              f"clips, but the encoder expects {self.spec.channels}")
        if self.is_flow and self.spec.flow_clip is None:
            raise ConfigError("a 2-channel (optical flow) encoder must state its flow_clip")
        h, w = self.resize
        if min(h, w) < self.spec.size:
            raise ConfigError(f"resize {h}x{w} is smaller than the {self.spec.size}-pixel "
                              "centre crop")

    @classmethod
    def for_spec(cls, spec: InputSpec, mode: Mode = "reference",
                 resize: Size | None = None) -> Preprocess:
        """``resize`` defaults to :func:`default_resize` of the encoder's crop."""
        return cls(mode, spec, tuple(resize) if resize else default_resize(spec.size))

    @property
    def crop(self) -> int:
        return self.spec.size

    @property
    def is_flow(self) -> bool:
        """Optical-flow input (2 channels): :meth:`__call__` takes ``(T, H, W, 2)`` flow in
        pixels (``tspipe.data.flow``), resizes it like frames with the vectors scaled by
        the same factors, crops, then clips and scales it (``spec``). Both modes do the
        same: the flow was computed from decoded frames already."""
        return self.spec.channels == 2

    @property
    def decode_size(self) -> Size | None:
        """The size the decoder should deliver: the source size (None) for the reference,
        the resize for ``fast``."""
        return None if self.mode == "reference" else self.resize

    def __call__(self, frames: np.ndarray | Tensor | Sequence[np.ndarray]) -> Tensor:
        """``(T, H, W, 3) uint8`` frames (or a list of ``(H, W, 3)``) -> ``(C, T, crop,
        crop) float32`` encoder input.

        ``reference``: frames at any size, resized here. ``fast``: frames already at
        ``resize`` (the decoder did it). Frames go through in chunks of about
        ``CHUNK_BYTES`` of float32: the same numbers (every step is per frame), without
        allocating a full-size float clip (44 MB for 16 frames of 640x360, 4x slower).
        """
        step = _chunk_frames(frames, CHUNK_BYTES)
        return torch.cat([self._chunk(frames[i:i + step])
                          for i in range(0, len(frames), step)], dim=1)

    def _chunk(self, frames: np.ndarray | Tensor | Sequence[np.ndarray]) -> Tensor:
        x = torch.as_tensor(frames if isinstance(frames, np.ndarray | Tensor)
                            else np.stack(frames))
        x = self._cropped_flow(x) if self.is_flow else self._cropped(x)
        return self._normalized(x.permute(1, 0, 2, 3).contiguous())

    def frames(self, frames: Tensor, chunk_bytes: int = CHUNK_BYTES) -> Tensor:
        """``(N, H, W, 3) uint8`` frames on any device -> ``(N, crop, crop, C) float32``
        preprocessed frames on that device, channels last (a window's clip is
        :func:`gather_clips` of them). The ops of :meth:`__call__`, in ``chunk_bytes`` of
        full-size float32 at a time: every value is the same as there (bit for bit on the
        CPU), only the memory layout differs."""
        if self.is_flow:
            raise ConfigError("optical-flow clips are preprocessed on the host "
                              "(preprocess_on: host or auto)")
        step = _chunk_frames(frames, chunk_bytes)
        parts = []
        for i in range(0, len(frames), step):
            x = self._cropped(frames[i:i + step])  # (n, C, h, w), channels-last memory
            parts.append(self._normalized(x.permute(1, 0, 2, 3)).permute(1, 2, 3, 0))
        if not parts:
            return torch.empty(0, self.crop, self.crop, 3, device=frames.device)
        return torch.cat(parts).contiguous()

    def _cropped(self, x: Tensor) -> Tensor:
        """``(n, H, W, 3) uint8`` -> ``(n, 3, crop, crop)`` in [0, 1], resized, cropped."""
        if x.dtype != torch.uint8 or x.dim() != 4 or x.shape[-1] != 3:
            raise ValueError(f"expected (T, H, W, 3) uint8 frames, got {tuple(x.shape)} "
                             f"{x.dtype}")
        # ToFloatTensorInZeroOne, then Resize, on (T, 3, H, W) in channels-last memory (a
        # free view of the decoder's (T, H, W, 3)): bit-identical to interpolate on the
        # reference's permuted (C, T, H, W) tensor (the tests check it), and 3x faster
        # than on a contiguous (C, T, H, W) copy.
        x = x.permute(0, 3, 1, 2).to(torch.float32).div_(255)
        if self.mode == "reference":
            x = F.interpolate(x, size=self.resize, mode="bilinear", align_corners=False,
                              antialias=False)
        elif tuple(x.shape[-2:]) != tuple(self.resize):
            raise ValueError(f"fast mode expects frames decoded at {self.resize}, got "
                             f"{tuple(x.shape[-2:])}")
        i, j = center_crop_offsets(x.shape[-2], x.shape[-1], self.crop)
        return x[..., i:i + self.crop, j:j + self.crop]

    def _cropped_flow(self, x: Tensor) -> Tensor:
        """``(n, H, W, 2)`` flow in pixels -> ``(n, 2, crop, crop)`` in pixels of the
        resized frame: bilinear resize as for frames (``antialias=False``), x scaled by
        ``W'/W`` and y by ``H'/H``, then the centre crop."""
        if not x.is_floating_point() or x.dim() != 4 or x.shape[-1] != 2:
            raise ValueError(f"expected (T, H, W, 2) float flow, got {tuple(x.shape)} {x.dtype}")
        x = x.permute(0, 3, 1, 2).to(torch.float32)
        h, w = x.shape[-2:]
        if (h, w) != tuple(self.resize):
            x = F.interpolate(x, size=self.resize, mode="bilinear", align_corners=False,
                              antialias=False)
            scale = torch.tensor([self.resize[1] / w, self.resize[0] / h], dtype=x.dtype)
            x = x * scale.view(1, 2, 1, 1)
        i, j = center_crop_offsets(x.shape[-2], x.shape[-1], self.crop)
        return x[..., i:i + self.crop, j:j + self.crop]

    def _normalized(self, x: Tensor) -> Tensor:
        """``(C, n, h, w)`` in [0, 1] -> the encoder's value range, then Normalize
        (elementwise: the values do not depend on the memory layout)."""
        lo, hi = self.spec.value_range
        if not self.is_flow and (lo, hi) != (0.0, 1.0):
            x = lo + (hi - lo) * x
        return self.spec.normalize(x.unsqueeze(0))[0]

    def to_dict(self) -> dict[str, Any]:
        """What decides the numbers, for attributes and the feature version."""
        return {"mode": self.mode, "resize": list(self.resize), "crop": self.crop,
                "mean": list(self.spec.mean), "std": list(self.spec.std),
                "value_range": list(self.spec.value_range),
                **({"flow_clip": self.spec.flow_clip} if self.is_flow else {})}


def gather_clips(frames: Tensor, index: Tensor) -> Tensor:
    """``(N, h, w, C)`` preprocessed frames and ``(B, T)`` frame numbers -> ``(B, C, T, h,
    w)`` clips: a view of the gathered ``(B, T, h, w, C)``, i.e. ``channels_last_3d``
    memory (what the encoder wants on CUDA; call ``.contiguous()`` for the host path's
    layout)."""
    return frames[index].permute(0, 4, 1, 2, 3)


def _chunk_frames(frames: np.ndarray | Tensor | Sequence[np.ndarray], chunk_bytes: int
                  ) -> int:
    """Frames per chunk of about ``chunk_bytes`` of full-size float32 (at least 1)."""
    per_frame = 4 * 3 * int(np.prod(np.shape(frames[0])[:2])) if len(frames) else 1
    return max(1, chunk_bytes // per_frame)
