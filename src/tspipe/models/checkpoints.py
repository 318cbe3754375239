"""Read encoder checkpoints, load them into a model, write tspipe's own.

:func:`read_checkpoint` reads any layout of :mod:`tspipe.models.checkpoint_formats`
(torch files are never unpickled beyond tensors and plain containers) onto the CPU;
:func:`load_into` copies its tensors into a model after checking every name and shape;
:func:`save_checkpoint` writes the ``tspipe`` layout, which carries arch, clip settings and
normalization. Released TSP files end in an 8-hex sha256 prefix
(``...-epoch_5-0d2cf854.pth``), which is checked before anything is unpickled.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from tspipe.io import atomic_path, sha256_file
from tspipe.models.checkpoint_formats import (
    BACKBONE_PREFIXES,
    FORMAT,
    FORMAT_VERSION,
    CheckpointError,
    Layout,
    backbone_prefix,
    check_tensors,
    classify,
    listing,
    read_safetensors,
    split_heads,
    strip_ddp,
    torch_load_safely,
)

logger = logging.getLogger(__name__)

Part = Literal["backbone", "all"]

_SHA_IN_NAME = re.compile(r"-([0-9a-f]{8})\.(pth|pt)$")
_NBT = "num_batches_tracked"


@dataclass(frozen=True)
class LoadedCheckpoint:
    """A checkpoint read from disk; ``state_dict`` keeps the keys exactly as in the file.

    ``heads`` holds the head tensors (``fc1``/``fc2``, ``fc`` or ``logits``) keyed without the
    DDP prefix; :attr:`backbone` gives the other tensors with ``module.`` and
    ``features.``/``backbone.`` stripped, i.e. keys as an encoder names them.
    """

    path: Path
    sha256: str
    layout: Layout
    state_dict: Mapping[str, torch.Tensor]
    heads: Mapping[str, torch.Tensor]
    metadata: Mapping[str, Any]

    @property
    def backbone(self) -> dict[str, torch.Tensor]:
        prefix = backbone_prefix(self.state_dict)
        out: dict[str, torch.Tensor] = {}
        for key, tensor in self.state_dict.items():
            name = strip_ddp(key)
            if name in self.heads:
                continue
            out[name.removeprefix(prefix) if prefix else name] = tensor
        return out


@dataclass(frozen=True)
class LoadReport:
    """What :func:`load_into` did; keys are named as in the model (full dotted paths)."""

    path: Path
    layout: Layout
    part: Part
    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    # Checkpoint heads the model has no place for (e.g. `fc.*` into an encoder built with
    # num_classes=None, TSP's `fc1`/`fc2` into a bare backbone): skipped on purpose.
    dropped: list[str] = field(default_factory=list)
    # BatchNorm counters absent from old files (PyTorch < 0.4, e.g. I3D ports): harmless,
    # they only matter for momentum=None; the model keeps its own value.
    missing_num_batches_tracked: list[str] = field(default_factory=list)


def sha256_prefix_from_name(name: str | Path) -> str | None:
    """The 8-hex sha256 prefix a released file name ends with, e.g. ``...-0d2cf854.pth``."""
    match = _SHA_IN_NAME.search(Path(name).name)
    return match.group(1) if match else None


def read_checkpoint(path: str | Path) -> LoadedCheckpoint:
    """Read a checkpoint of any supported layout onto the CPU, refusing pickled code."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    digest = sha256_file(path)
    expected = sha256_prefix_from_name(path)
    if expected is not None and not digest.startswith(expected):
        raise CheckpointError(
            f"{path}: sha256 mismatch: the file name says it starts with {expected}, the "
            f"file's sha256 is {digest} (corrupt or truncated download, or renamed file)"
        )
    if path.suffix == ".safetensors":
        state_dict, metadata = read_safetensors(path)
        layout: Layout = "safetensors"
    else:
        layout, state_dict, metadata = classify(path, torch_load_safely(path))
    state_dict = check_tensors(path, state_dict)
    heads = split_heads(state_dict)
    logger.debug("read %s: layout %s, %d tensors, heads %s", path, layout, len(state_dict),
                 sorted(heads))
    return LoadedCheckpoint(path=path, sha256=digest, layout=layout, state_dict=state_dict,
                            heads=heads, metadata=metadata)


def load_into(model: nn.Module, ckpt: LoadedCheckpoint | str | Path, *, strict: bool = True,
              part: Part = "backbone") -> LoadReport:
    """Copy a checkpoint's tensors into ``model`` after checking every name and shape.

    ``part="backbone"``: the backbone tensors (``module.``, ``features.``, ``backbone.``
    stripped) go into the model, or into ``model.features`` when the model has one (a
    TSP model); heads the model has a tensor for are loaded too (a torchvision file's ``fc``
    into an encoder with ``num_classes``), the others are reported as ``dropped``.
    ``part="all"``: keys map 1:1 (only ``module.`` stripped), e.g. a TSP file into a TSP model.

    Shape mismatches always raise; with ``strict`` missing or unexpected keys raise too.
    Nothing is copied unless every check passes. Missing ``num_batches_tracked`` buffers
    are tolerated and reported separately.
    """
    if not isinstance(ckpt, LoadedCheckpoint):
        ckpt = read_checkpoint(ckpt)
    if part not in ("backbone", "all"):
        raise CheckpointError(f"{ckpt.path}: part must be 'backbone' or 'all', not {part!r}")
    target, where = model, ""
    if part == "backbone":
        features = getattr(model, "features", None)
        if isinstance(features, nn.Module):
            target, where = features, "features."
        source, heads = ckpt.backbone, dict(ckpt.heads)
    else:
        source = {strip_ddp(k): v for k, v in ckpt.state_dict.items()}
        heads = {}

    expected = target.state_dict()
    dropped = sorted(k for k in heads if k not in expected)
    mapped = dict(source)
    mapped.update({k: v for k, v in heads.items() if k in expected})
    missing_nbt = sorted(k for k in expected if k not in mapped and k.split(".")[-1] == _NBT)
    missing = sorted(k for k in expected if k not in mapped and k.split(".")[-1] != _NBT)
    unexpected = sorted(k for k in mapped if k not in expected)
    model_name = type(model).__name__

    mismatched = [
        f"{where}{k}: checkpoint {_shape(mapped[k])} vs model {_shape(expected[k])}"
        for k in mapped if k in expected and mapped[k].shape != expected[k].shape
    ]
    if mismatched:
        raise CheckpointError(
            f"{ckpt.path}: {len(mismatched)} tensor shape(s) differ from {model_name} (is it "
            f"built for another architecture?): {listing(mismatched)}"
        )
    if strict and (missing or unexpected):
        raise CheckpointError(_strict_message(ckpt, model_name, where, part, missing,
                                              unexpected))

    target.load_state_dict({k: v for k, v in mapped.items() if k in expected}, strict=False)
    report = LoadReport(
        path=ckpt.path, layout=ckpt.layout, part=part,
        loaded=sorted(where + k for k in mapped if k in expected),
        missing=[where + k for k in missing], unexpected=[where + k for k in unexpected],
        dropped=dropped, missing_num_batches_tracked=[where + k for k in missing_nbt],
    )
    logger.info(
        "loaded %d tensors from %s (%s, part=%s) into %s; missing %d, unexpected %d, "
        "dropped %s, missing num_batches_tracked %d", len(report.loaded), ckpt.path,
        ckpt.layout, part, model_name, len(missing), len(unexpected), dropped or "none",
        len(missing_nbt),
    )
    return report


def save_checkpoint(path: str | Path, model: nn.Module, *, arch: str, num_classes: int | None,
                    clip: dict[str, Any], normalization: dict[str, Any],
                    extra: dict[str, Any] | None = None) -> str:
    """Write a tspipe checkpoint atomically and return its sha256.

    It holds only tensors and plain Python values, so :func:`read_checkpoint` reads it
    with ``weights_only=True``; a non-plain value (a ``Fraction``, a ``Path``) is refused
    here, naming the field, rather than producing a file that cannot be read back.
    """
    path = Path(path)
    if isinstance(model, nn.DataParallel | nn.parallel.DistributedDataParallel):
        model = model.module
    payload: dict[str, Any] = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "arch": arch,
        "num_classes": num_classes,
        "clip": clip,
        "normalization": normalization,
        "extra": extra or {},
        "torch_version": str(torch.__version__),
    }
    for name, value in payload.items():
        _check_plain(path, name, value)
    payload["state_dict"] = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        # A file object, not a path: torch names the zip's root folder after a path's stem,
        # and the random temp name would make two saves of the same model differ in bytes.
        with tmp.open("wb") as fh:
            torch.save(payload, fh)
        digest = sha256_file(tmp)
    logger.info("wrote checkpoint %s (%s, sha256 %s)", path, arch, digest[:12])
    return digest


# -- messages and checks ---------------------------------------------------------------------


def _shape(tensor: torch.Tensor) -> str:
    return str(tuple(tensor.shape))


def _strict_message(ckpt: LoadedCheckpoint, model_name: str, where: str, part: str,
                    missing: list[str], unexpected: list[str]) -> str:
    parts = [f"{ckpt.path} ({ckpt.layout}, part={part}) does not match {model_name}"]
    if missing:
        parts.append(f"{len(missing)} missing key(s): "
                     f"{listing([where + k for k in missing])}")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected key(s): "
                     f"{listing([where + k for k in unexpected])}")
    if part == "all" and any(k.startswith(BACKBONE_PREFIXES) for k in unexpected):
        parts.append("the file holds a prefixed backbone: did you mean part='backbone'?")
    parts.append("pass strict=False to load what matches and get these in the report")
    return "; ".join(parts)


_PLAIN_SCALARS = (str, int, float, bool, type(None))


def _check_plain(path: Path, name: str, value: Any) -> None:
    """Refuse values that weights_only loading could not read back (named by field path)."""
    if isinstance(value, _PLAIN_SCALARS):
        return
    if isinstance(value, list | tuple):
        for i, item in enumerate(value):
            _check_plain(path, f"{name}[{i}]", item)
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise CheckpointError(f"{path}: field {name}: key {key!r} is not a string")
            _check_plain(path, f"{name}.{key}", item)
        return
    raise CheckpointError(
        f"{path}: field {name} is a {type(value).__name__}, not a plain value (str, int, "
        "float, bool, None, list, dict); convert it before saving"
    )
