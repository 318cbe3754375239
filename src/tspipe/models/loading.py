"""The one way to get an encoder from a file: :func:`load_encoder`.

Extraction, the GVF stage and TSP fine-tuning all start here. A tspipe checkpoint names
its arch and carries its normalization (the input spec extraction then uses); an official
file (torchvision, TSP's release, safetensors) is read by layout. Random weights only when
asked, seeded, and loudly logged: features from them mean nothing for localization.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from tspipe.errors import ConfigError
from tspipe.io import sha256_json
from tspipe.models.checkpoints import load_into, read_checkpoint
from tspipe.models.registry import build_encoder
from tspipe.models.spec import InputSpec

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoadedEncoder:
    model: nn.Module
    spec: InputSpec
    checkpoint_sha256: str
    random_init_seed: int | None = None



def load_encoder(encoder: str, checkpoint: str | Path | None, *,
                 allow_random_init: bool = False, seed: int = 0) -> LoadedEncoder:
    """The encoder with the checkpoint's weights (its input spec when it carries one), or,
    only when allowed, seeded random weights."""
    if checkpoint is None:
        if not allow_random_init:
            raise ConfigError(f"encoder {encoder}: no --checkpoint given; features from random "
                              "weights are meaningless for localization (pass "
                              "--allow-random-init to make them anyway, e.g. for a smoke test)")
        torch.manual_seed(seed)
        model = build_encoder(encoder, num_classes=None)
        log.warning("encoder %s: RANDOM WEIGHTS (seed %d), NOT A PRETRAINED MODEL: these "
                    "features are for testing only", encoder, seed)
        sha = sha256_json({"random_init": encoder, "seed": seed, "torch": torch.__version__})
        return LoadedEncoder(model, model.input_spec, sha, seed)
    ckpt = read_checkpoint(checkpoint)
    arch = ckpt.metadata.get("arch")
    if ckpt.layout == "tspipe" and arch != encoder:
        raise ConfigError(f"{checkpoint}: a {arch} checkpoint, not {encoder}")
    model = build_encoder(encoder, num_classes=None)
    load_into(model, ckpt, strict=True)
    spec = model.input_spec
    norm = ckpt.metadata.get("normalization")
    if ckpt.layout == "tspipe" and isinstance(norm, dict) and "mean" in norm:
        spec = InputSpec.from_dict(norm)  # the file's own convention, not the default
    return LoadedEncoder(model, spec, ckpt.sha256)
