"""The model TSP fine-tunes, and the files it leaves.

The backbone is built by name (``num_classes=None``: it returns clip features) and, with
an ``init_checkpoint``, loaded strictly through extraction's own
:func:`~tspipe.models.loading.load_encoder` (any layout it reads; a tspipe file's input spec
wins over the encoder's default). TSP's heads (or TAC's one) go on top
(:class:`~tspipe.models.heads.TSPModel`). Crop and resize follow the rule the gvf and
extract stages use, so training and extraction see clips of the same geometry.

Two files are written with :func:`~tspipe.models.checkpoints.save_checkpoint` (tspipe
layout: arch, clip settings, normalization): the backbone alone (what ``load_encoder``
and so the extraction stage read) and the whole model with its heads
(:func:`export_model` writes both).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import nn

from tspipe.config import ClipConfig, PretrainConfig
from tspipe.extract.preprocess import Preprocess, default_resize
from tspipe.models.checkpoints import load_into, save_checkpoint
from tspipe.models.heads import TSPModel
from tspipe.models.loading import load_encoder
from tspipe.models.registry import build_encoder
from tspipe.models.spec import InputSpec

log = logging.getLogger(__name__)


class BuiltModel(NamedTuple):
    """The model, its input spec, the preprocessing it trains with and the sha256 of the
    weights it started from (None: random initialisation)."""

    model: TSPModel
    spec: InputSpec
    prep: Preprocess
    init_sha256: str | None


def build_model(cfg: PretrainConfig, clip: ClipConfig, num_classes: int, *,
                init_checkpoint: Path | None = None) -> BuiltModel:
    """Backbone (from ``init_checkpoint``, else random with ``cfg.seed``) plus heads
    (seeded; ``cfg.head_init``: N(0, 0.01) as the reference, or nn.Linear's default).
    ``init_checkpoint`` defaults to ``cfg.init_checkpoint``."""
    torch.manual_seed(cfg.seed)
    path = init_checkpoint or (Path(cfg.init_checkpoint) if cfg.init_checkpoint else None)
    if path is not None:
        loaded = load_encoder(cfg.encoder, path)
        backbone, spec, sha = loaded.model, loaded.spec, loaded.checkpoint_sha256
    else:
        backbone = build_encoder(cfg.encoder, num_classes=None)
        spec, sha = backbone.input_spec, None
        log.warning("pretrain: %s starts from RANDOM weights (no init_checkpoint); TSP "
                    "fine-tunes a Kinetics-pretrained encoder", cfg.encoder)
    model = TSPModel(backbone, num_classes, with_gvf=cfg.use_gvf, mode=cfg.mode)
    if cfg.head_init == "pytorch":  # nn.Linear's own init instead of the reference's
        for head in model.heads():
            nn.Linear.reset_parameters(head)
    resize = tuple(clip.resize) if clip.crop == spec.size else default_resize(spec.size)
    return BuiltModel(model, spec, Preprocess.for_spec(spec, "reference", resize), sha)


def set_train_mode(model: nn.Module, freeze_bn: bool) -> None:
    """``model.train()``; with ``freeze_bn`` its BatchNorm layers stay in eval mode (they
    normalize with, and keep, their running statistics)."""
    model.train()
    if freeze_bn:
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.eval()


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside DDP, if wrapped."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def clip_metadata(clip: ClipConfig, prep: Preprocess) -> dict[str, Any]:
    """What a checkpoint records of the clips it was trained on."""
    return {"frames": clip.frames, "fps": float(clip.fps), "stride": clip.stride,
            "size": prep.crop, "resize": list(prep.resize)}


def save_model(path: Path, model: nn.Module, *, arch: str, clip: ClipConfig,
               prep: Preprocess, backbone_only: bool, extra: dict[str, Any]) -> str:
    """Write the model (``backbone_only``: its ``features`` alone, as an encoder with no
    classifier) as a tspipe checkpoint; returns its sha256."""
    net = unwrap(model)
    target = net.features if backbone_only else net
    return save_checkpoint(path, target, arch=arch,
                           num_classes=None if backbone_only else int(net.num_classes),
                           clip=clip_metadata(clip, prep),
                           normalization=prep.spec.to_dict(),
                           extra={"mode": net.mode, "with_gvf": bool(net.with_gvf),
                                  "classes": int(net.num_classes), **extra})


def export_model(model: nn.Module, model_path: Path, encoder_path: Path, *, arch: str,
                 clip: ClipConfig, prep: Preprocess, extra: dict[str, Any],
                 weights: Path | None = None) -> None:
    """Write the model with its heads to ``model_path`` and its backbone to
    ``encoder_path`` (:func:`save_model`); ``weights``: a whole-model file of
    :func:`save_model` loaded into ``model`` first (an earlier epoch's)."""
    if weights is not None:
        load_into(unwrap(model), weights, part="all", strict=True)
    save_model(model_path, model, arch=arch, clip=clip, prep=prep, backbone_only=False,
               extra=extra)
    save_model(encoder_path, model, arch=arch, clip=clip, prep=prep, backbone_only=True,
               extra=extra)
