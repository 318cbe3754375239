"""The checkpoint layouts tspipe reads, told apart and unpacked safely.

Every ``.pth``/``.pt`` file is read with ``torch.load(weights_only=True)``: tensors and plain
containers only, plus ``argparse.Namespace`` because TSP's training checkpoints pickle their
``args`` as one. Anything else a file asks to unpickle is refused, so a checkpoint from the
internet cannot run code. Layouts understood (see shared/reference/checkpoints.md):

- ``plain``: a flat ``{key: Tensor}`` state_dict (also under a ``state_dict`` key), e.g. I3D;
- ``torchvision``: a flat state_dict with a classifier ``fc.*`` (VideoResNet files);
- ``tsp`` / ``tac``: ``{'model', 'optimizer', 'lr_scheduler', 'epoch', 'args'}`` whose model
  has ``features.*`` backbone keys and heads ``fc1``/``fc2`` (TSP) or ``fc`` (TAC);
- ``tspipe``: what :func:`tspipe.models.checkpoints.save_checkpoint` writes (``FORMAT``,
  ``FORMAT_VERSION``); it carries arch, clip settings and normalization, so extraction
  reads them from the file instead of trusting the user;
- ``safetensors``: a ``.safetensors`` file (needs the optional ``safetensors`` package).

Any layout may carry DDP's ``module.`` prefix; the key helpers below strip it and tell the
backbone's tensors from the heads'.
"""

from __future__ import annotations

import argparse
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import torch

from tspipe.errors import TspipeError

FORMAT = "tspipe-checkpoint"
FORMAT_VERSION = 1

Layout = Literal["plain", "torchvision", "tsp", "tac", "tspipe", "safetensors"]

# Classifier heads of a flat file: VideoResNet's `fc`, the I3D port's `logits`.
_FLAT_HEADS = ("fc", "logits")
# A prefix in front of the backbone keys; whatever is not under it is a head.
BACKBONE_PREFIXES = ("features.", "backbone.")
_DDP_PREFIX = "module."
_MAX_NAMES = 10


class CheckpointError(TspipeError):
    """A checkpoint cannot be read, verified, or loaded into the given model."""


# -- reading ---------------------------------------------------------------------------------


def torch_load_safely(path: Path) -> Any:
    """``torch.load`` onto the CPU with ``weights_only=True`` (and ``argparse.Namespace``);
    a refused or unreadable file raises :class:`CheckpointError` saying why."""
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        detail = _unpickling_detail(exc)
        if "GLOBAL" in detail:
            raise CheckpointError(
                f"{path}: refusing to unpickle arbitrary objects (only tensors, plain "
                f"containers and argparse.Namespace are allowed): {detail}"
            ) from exc
        raise CheckpointError(
            f"{path}: cannot be read safely as a torch checkpoint (corrupt, or it needs "
            f"arbitrary unpickling, which is refused): {detail}"
        ) from exc
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        raise CheckpointError(
            f"{path}: cannot be read as a torch checkpoint: {type(exc).__name__}: {exc}"
        ) from exc


def _unpickling_detail(exc: pickle.UnpicklingError) -> str:
    """The part of torch's long message that says what was refused (e.g. the global)."""
    text = str(exc)
    if "WeightsUnpickler error:" in text:
        text = text.split("WeightsUnpickler error:", 1)[1]
    elif "Trying to load" in text:
        text = text[text.index("Trying to load"):]
    # Drop torch's advice on how to allow the object: tspipe does not offer that.
    for tail in ("Please use `torch.serialization", "Check the documentation"):
        text = text.split(tail)[0]
    return " ".join(text.split()) or type(exc).__name__


def read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The tensors of a ``.safetensors`` file and its header metadata."""
    try:
        import safetensors
        import safetensors.torch
    except ImportError as exc:
        raise CheckpointError(
            f"{path}: reading .safetensors files needs the 'safetensors' package "
            "(pip install safetensors)"
        ) from exc
    try:
        with safetensors.safe_open(str(path), framework="pt", device="cpu") as fh:
            header = dict(fh.metadata() or {})
        tensors = safetensors.torch.load_file(str(path), device="cpu")
    except safetensors.SafetensorError as exc:
        raise CheckpointError(f"{path}: cannot be read as a safetensors file: {exc}") from exc
    return tensors, {"safetensors_metadata": header}


def classify(path: Path, obj: Any) -> tuple[Layout, Any, dict[str, Any]]:
    """The layout, the (unchecked) state_dict and the metadata of a loaded object."""
    if not isinstance(obj, dict):
        raise CheckpointError(
            f"{path}: holds a {type(obj).__name__}, not a dict of tensors (a state_dict)"
        )
    if obj.get("format") == FORMAT:
        return "tspipe", obj.get("state_dict"), _tspipe_metadata(path, obj)
    if obj and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()):
        names = [strip_ddp(k) for k in obj]
        classifier = "fc.weight" in names and not backbone_prefix(obj)
        return ("torchvision" if classifier else "plain"), obj, {}
    if isinstance(obj.get("model"), dict):
        model = obj["model"]
        names = {strip_ddp(k) for k in model if isinstance(k, str)}
        layout: Layout = "tac" if "fc.weight" in names and "fc1.weight" not in names else "tsp"
        return layout, model, _training_metadata(obj, skip="model")
    if isinstance(obj.get("state_dict"), dict):
        return "plain", obj["state_dict"], _training_metadata(obj, skip="state_dict")
    raise CheckpointError(
        f"{path}: no state_dict found (top-level keys: {listing(sorted(map(str, obj)))}); "
        "expected a dict of tensors, a TSP checkpoint {'model', 'args', ...} or a tspipe "
        "checkpoint"
    )


def check_tensors(path: Path, state_dict: Any) -> dict[str, torch.Tensor]:
    """A non-empty dict of tensors by name, whose names stay unique once ``module.`` goes."""
    if not isinstance(state_dict, dict) or not state_dict:
        raise CheckpointError(f"{path}: the state_dict is empty or not a dict of tensors")
    bad = [f"{k!r} ({type(v).__name__})" for k, v in state_dict.items()
           if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"{path}: state_dict entries that are not tensors keyed by "
                              f"name: {listing(bad)}")
    if len({strip_ddp(k) for k in state_dict}) != len(state_dict):
        raise CheckpointError(f"{path}: some keys appear both with and without the DDP "
                              "'module.' prefix")
    return state_dict


def _tspipe_metadata(path: Path, obj: dict[str, Any]) -> dict[str, Any]:
    version = obj.get("version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CheckpointError(f"{path}: tspipe checkpoint version {version!r} is not "
                              f"supported (this tspipe reads up to {FORMAT_VERSION})")
    for key in ("arch", "clip", "normalization"):
        if key not in obj:
            raise CheckpointError(f"{path}: tspipe checkpoint lacks field {key!r}")
    return {k: v for k, v in obj.items() if k not in ("format", "state_dict")}


def _training_metadata(obj: dict[str, Any], *, skip: str) -> dict[str, Any]:
    """Epoch, args as a plain dict and the arch TSP's args name; optimizer state is left out."""
    meta: dict[str, Any] = {}
    if isinstance(obj.get("epoch"), int):
        meta["epoch"] = obj["epoch"]
    args = obj.get("args")
    if isinstance(args, argparse.Namespace):
        args = vars(args)
    if isinstance(args, dict):
        meta["args"] = dict(args)
        if isinstance(args.get("backbone"), str):
            meta["arch"] = args["backbone"]
    meta["other_keys"] = sorted(str(k) for k in obj if k not in (skip, "epoch", "args"))
    return meta


# -- key mapping ----------------------------------------------------------------------------


def strip_ddp(key: str) -> str:
    """``key`` without DDP's ``module.`` prefix (any number of them)."""
    while key.startswith(_DDP_PREFIX):
        key = key[len(_DDP_PREFIX):]
    return key


def backbone_prefix(state_dict: Mapping[str, Any]) -> str:
    """The prefix of the backbone keys (``features.``, ``backbone.``), or ``""``."""
    names = [strip_ddp(k) for k in state_dict]
    for prefix in BACKBONE_PREFIXES:
        if any(n.startswith(prefix) for n in names):
            return prefix
    return ""


def split_heads(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The head tensors, keyed without the DDP prefix: what is not under the backbone
    prefix, or in a flat file the classifier (``fc``, ``logits``)."""
    prefix = backbone_prefix(state_dict)
    heads: dict[str, torch.Tensor] = {}
    for key, tensor in state_dict.items():
        name = strip_ddp(key)
        is_head = (not name.startswith(prefix)) if prefix else name.split(".")[0] in _FLAT_HEADS
        if is_head:
            heads[name] = tensor
    return heads


# -- messages ------------------------------------------------------------------------------


def listing(names: list[str]) -> str:
    """The first names, and how many more, for an error message."""
    shown = ", ".join(names[:_MAX_NAMES])
    more = len(names) - _MAX_NAMES
    return f"{shown}, ... ({more} more)" if more > 0 else shown
