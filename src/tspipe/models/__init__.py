"""Encoders (video ResNets, I3D), TSP/TAC heads and the encoder registry.

``build_encoder(name, num_classes=None, **overrides)`` is the entry point; the I3D
module is imported only when an I3D encoder is built.

Modules:

- ``registry``: encoders by name (``ENCODERS``, ``build_encoder``, ``encoder_info``)
- ``video_resnet``: the video ResNet family (R3D, MC3, R(2+1)D), torchvision's key names
- ``i3d``: InceptionI3d, RGB and optical-flow streams, the PyTorch port's key names
- ``heads``: TSP's action and temporal-region heads, the TSP/TAC model around a backbone
- ``spec``: ``InputSpec``, what an encoder expects as input (clip, crop, normalization)
- ``inflate``: 2D -> 3D kernel inflation (I3D's bootstrapping)
- ``checkpoint_formats``: the checkpoint layouts read (torchvision, TSP/TAC, tspipe, ...)
  and safe unpickling
- ``checkpoints``: ``read_checkpoint``, ``load_into`` a model, ``save_checkpoint``
- ``loading``: ``load_encoder``, the one way to get an encoder from a file
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
