"""Encoders by name: ``build_encoder("r2plus1d_34", num_classes=None)``.

The I3D members are imported on first use, so listing or building a video ResNet never
loads ``tspipe.models.i3d``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any, NamedTuple

from torch import nn

from tspipe.errors import ConfigError
from tspipe.models.video_resnet import (
    TINY_WIDTHS,
    mc3_18,
    r2plus1d_18,
    r2plus1d_34,
    r2plus1d_tiny,
    r3d_18,
    r3d_tiny,
)

Builder = Callable[..., nn.Module]


class EncoderInfo(NamedTuple):
    """``builder(num_classes=None, **overrides)``, the clip feature size of the default
    build, the family (``"video_resnet"`` or ``"i3d"``) and the input: ``"rgb"`` frames
    or ``"flow"`` (optical flow from the flow stage)."""

    builder: Builder
    feature_dim: int
    family: str
    stream: str = "rgb"


def _lazy_i3d(name: str) -> Builder:
    def build(num_classes: int | None = None, **overrides: Any) -> nn.Module:
        module = importlib.import_module("tspipe.models.i3d")
        return getattr(module, name)(num_classes, **overrides)

    build.__name__ = build.__qualname__ = name
    build.__doc__ = f"tspipe.models.i3d.{name}, imported on first use."
    return build


ENCODERS: dict[str, EncoderInfo] = {
    "r2plus1d_34": EncoderInfo(r2plus1d_34, 512, "video_resnet"),
    "r2plus1d_18": EncoderInfo(r2plus1d_18, 512, "video_resnet"),
    "r3d_18": EncoderInfo(r3d_18, 512, "video_resnet"),
    "mc3_18": EncoderInfo(mc3_18, 512, "video_resnet"),
    "r2plus1d_tiny": EncoderInfo(r2plus1d_tiny, TINY_WIDTHS[-1], "video_resnet"),
    "r3d_tiny": EncoderInfo(r3d_tiny, TINY_WIDTHS[-1], "video_resnet"),
    "i3d": EncoderInfo(_lazy_i3d("i3d"), 1024, "i3d"),
    "i3d_flow": EncoderInfo(_lazy_i3d("i3d_flow"), 1024, "i3d", "flow"),
    "i3d_tiny": EncoderInfo(_lazy_i3d("i3d_tiny"), 128, "i3d"),
    "i3d_flow_tiny": EncoderInfo(_lazy_i3d("i3d_flow_tiny"), 128, "i3d", "flow"),
}


def encoder_names() -> list[str]:
    """The known encoder names, in registry order."""
    return list(ENCODERS)


def encoder_info(name: str) -> EncoderInfo:
    """The registry entry of ``name``; an unknown name raises :class:`ConfigError` listing
    the known ones."""
    try:
        return ENCODERS[name]
    except KeyError:
        raise ConfigError(f"unknown encoder {name!r}; known encoders: "
                          f"{', '.join(ENCODERS)}") from None


def build_encoder(name: str, num_classes: int | None = None, **overrides: Any) -> nn.Module:
    """Build encoder ``name`` with a ``num_classes``-way classifier (``None``: none, the
    model returns its clip features). ``overrides`` go to the builder (``bn_eps``,
    ``widths``, ``layers``, ``input_spec`` for the video ResNets; ``width_divisor``,
    ``input_size``, ``frames`` for I3D). Every model carries ``feature_dim`` and
    ``input_spec``."""
    info = encoder_info(name)
    try:
        return info.builder(num_classes, **overrides)
    except TypeError as exc:
        if not overrides:
            raise
        # An override the builder does not take (I3D's builders pass them straight on).
        raise ConfigError(f"encoder {name!r}: bad override(s) {sorted(overrides)}: "
                          f"{exc}") from exc
