"""Encoders (video ResNets, I3D), TSP/TAC heads and the encoder registry.

``build_encoder(name, num_classes=None, **overrides)`` is the entry point; the I3D
module is imported only when an I3D encoder is built.
"""

from tspipe.models.heads import REGION_LABELS, ActionHead, RegionHead, TSPModel, TSPOutput
from tspipe.models.registry import (
    ENCODERS,
    EncoderInfo,
    build_encoder,
    encoder_info,
    encoder_names,
)
from tspipe.models.spec import InputSpec
from tspipe.models.video_resnet import (
    KINETICS_112,
    KINETICS_MEAN,
    KINETICS_STD,
    TINY_64,
    BasicBlock,
    BasicStem,
    Conv2Plus1D,
    Conv3DNoTemporal,
    Conv3DSimple,
    R2Plus1dStem,
    VideoResNet,
    mc3_18,
    midplanes,
    r2plus1d_18,
    r2plus1d_34,
    r2plus1d_tiny,
    r3d_18,
    r3d_tiny,
)

__all__ = [
    "ENCODERS",
    "KINETICS_112",
    "KINETICS_MEAN",
    "KINETICS_STD",
    "REGION_LABELS",
    "TINY_64",
    "ActionHead",
    "BasicBlock",
    "BasicStem",
    "Conv2Plus1D",
    "Conv3DNoTemporal",
    "Conv3DSimple",
    "EncoderInfo",
    "InputSpec",
    "R2Plus1dStem",
    "RegionHead",
    "TSPModel",
    "TSPOutput",
    "VideoResNet",
    "build_encoder",
    "encoder_info",
    "encoder_names",
    "mc3_18",
    "midplanes",
    "r2plus1d_18",
    "r2plus1d_34",
    "r2plus1d_tiny",
    "r3d_18",
    "r3d_tiny",
]
