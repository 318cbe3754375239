"""The encoder door: import a checkpoint file as a known encoder, list what is known.

``tspipe encoder import FILE`` reads the file safely (``weights_only``, sha256 prefix of
released names), works out or checks its architecture by loading it strictly into that
encoder, records it in the catalog (sha256, arch, origin, file URI) and registers it as an
MLflow model version pointing at the file (no copy). Extraction and pretraining then name
encoders by catalog entry (sha256 prefix) or by path.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from tspipe.config import Params
from tspipe.doors.recording import open_catalog
from tspipe.errors import TspipeError
from tspipe.models.checkpoints import LoadedCheckpoint, load_into, read_checkpoint, save_checkpoint
from tspipe.models.inflate import inflate_inception_v1
from tspipe.models.registry import build_encoder, encoder_names
from tspipe.paths import RunPaths
from tspipe.tracking import TAG_KIND, make_tracker

log = logging.getLogger(__name__)

REGISTERED_MODEL_PREFIX = "tspipe-encoder-"


@dataclass(frozen=True)
class ImportedEncoder:
    sha256: str
    arch: str
    layout: str
    uri: str
    origin: str
    loaded: int
    dropped: list[str]
    mlflow_run_id: str | None
    model_version: str | None


def _shapes(arch: str) -> dict[str, tuple[int, ...]]:
    """Backbone key -> shape of ``arch`` without a classifier, built without memory."""
    with torch.device("meta"):
        model = build_encoder(arch, num_classes=None)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()
            if not k.endswith("num_batches_tracked")}


def infer_arch(ckpt: LoadedCheckpoint) -> str:
    """The one registered encoder whose backbone keys and shapes the file holds exactly."""
    found = {k: tuple(v.shape) for k, v in ckpt.backbone.items()
             if not k.endswith("num_batches_tracked")}
    matches = [name for name in encoder_names() if _shapes(name) == found]
    if len(matches) != 1:
        raise TspipeError(
            f"{ckpt.path}: cannot tell the architecture from its {len(found)} backbone keys "
            f"({'several match: ' + ', '.join(matches) if matches else 'none matches'}); "
            f"pass --arch (one of {', '.join(encoder_names())})")
    return matches[0]


INFLATED_SOURCE_ARCH = "inception_v1_2d"  # catalog arch of a 2D GoogLeNet file inflated


def inflate_encoder(source: str | Path, dest: str | Path, *, stream: str = "rgb") -> Path:
    """I3D's initialisation from 2D ImageNet weights: a torchvision GoogLeNet state_dict
    (``source``, read with ``weights_only``) inflated by
    :func:`tspipe.models.inflate.inflate_inception_v1` and written to ``dest`` as a tspipe
    checkpoint of ``i3d`` (``stream="rgb"``) or ``i3d_flow`` (``"flow"``). The flow
    stream's first convolution takes 2 channels: its RGB kernel is averaged over the 3
    colour channels and copied to both flow channels (TSN's cross-modality
    initialisation, the usual way to start a flow network from RGB weights)."""
    if stream not in ("rgb", "flow"):
        raise TspipeError(f"--stream {stream!r}: choose rgb or flow")
    ckpt = read_checkpoint(source)
    state = inflate_inception_v1(ckpt.state_dict)
    arch = "i3d" if stream == "rgb" else "i3d_flow"
    if stream == "flow":
        key = "Conv3d_1a_7x7.conv3d.weight"
        rgb = state[key]
        state[key] = rgb.mean(dim=1, keepdim=True).repeat(1, 2, 1, 1, 1)
    model = build_encoder(arch, num_classes=None)
    model.load_state_dict(state, strict=False)  # num_batches_tracked may be absent
    missing = [k for k in model.state_dict() if k not in state
               and not k.endswith("num_batches_tracked")]
    if missing:
        raise TspipeError(f"{source}: inflation left {len(missing)} {arch} tensors unset, "
                          f"e.g. {missing[:3]}")
    spec = model.input_spec
    save_checkpoint(dest, model, arch=arch, num_classes=None,
                    clip={"frames": spec.frames, "size": spec.size},
                    normalization=spec.to_dict(),
                    extra={"inflated_from": ckpt.sha256, "inflated_stream": stream})
    return Path(dest)


def import_encoder(path: str | Path, params: Params, paths: RunPaths, *,
                   arch: str | None = None, origin: str = "official",
                   inflate_from: str | Path | None = None, stream: str = "rgb"
                   ) -> ImportedEncoder:
    """Validate ``path`` as encoder ``arch`` (inferred when None) and record it. With
    ``inflate_from`` (a 2D GoogLeNet file) ``path`` is first written by
    :func:`inflate_encoder`, and the catalog records the 2D file as its parent."""
    parent = None
    if inflate_from is not None:
        source = read_checkpoint(inflate_from)
        inflate_encoder(source.path, path, stream=stream)
        parent = source
        arch = arch or ("i3d" if stream == "rgb" else "i3d_flow")
    path = Path(path).resolve()
    ckpt = read_checkpoint(path)  # sha256 prefix of released names checked here
    arch = arch or ckpt.metadata.get("arch") or infer_arch(ckpt)
    if arch not in encoder_names():
        raise TspipeError(f"{path}: unknown architecture {arch!r}; known: "
                          f"{', '.join(encoder_names())}")
    report = load_into(build_encoder(arch, num_classes=None), ckpt, strict=True)
    uri = paths.to_uri(path)  # relative inside the run directory: the folder can move
    run_id = version = None
    tracker = make_tracker(params, paths)
    if tracker is not None:
        with tracker.run(f"encoder-import-{arch}",
                         params={"arch": arch, "layout": ckpt.layout, "path": str(path)},
                         tags={**tracker.base_tags(params), TAG_KIND: "encoder-import",
                               "tspipe.checkpoint_sha256": ckpt.sha256}) as run:
            run_id = run.run_id
            version = _register_model_version(tracker.client, arch, path.as_uri(), run_id,
                                              ckpt)
    with open_catalog(params, paths) as cat:
        if parent is not None:
            cat.register_checkpoint(parent.sha256, arch=INFLATED_SOURCE_ARCH,
                                    origin="official", uri=paths.to_uri(parent.path),
                                    params={"layout": parent.layout,
                                            "file": parent.path.name})
        cat.register_checkpoint(ckpt.sha256, arch=arch, origin=origin, uri=uri,
                                mlflow_run_id=run_id, params=_params(ckpt, report.dropped),
                                parent_sha256=None if parent is None else parent.sha256)
    log.info("encoder %s (%s, %s layout) imported from %s", ckpt.sha256[:12], arch,
             ckpt.layout, path)
    return ImportedEncoder(sha256=ckpt.sha256, arch=arch, layout=ckpt.layout, uri=uri,
                           origin=origin, loaded=len(report.loaded), dropped=report.dropped,
                           mlflow_run_id=run_id, model_version=version)


def _params(ckpt: LoadedCheckpoint, dropped: list[str]) -> dict[str, Any]:
    meta = {k: v for k, v in ckpt.metadata.items() if isinstance(v, str | int | float | bool)}
    return {"layout": ckpt.layout, "file": ckpt.path.name, "dropped": dropped, **meta}


def _register_model_version(client: Any, arch: str, uri: str, run_id: str,
                            ckpt: LoadedCheckpoint) -> str:
    """An MLflow model version per file, pointing at it: the registry lists every encoder
    file by architecture without copying hundreds of MB into the artifact store."""
    name = REGISTERED_MODEL_PREFIX + arch  # arch is a registry name: safe in a filter
    if not client.search_registered_models(filter_string=f"name = '{name}'"):
        client.create_registered_model(name, description=f"tspipe encoder {arch}")
    for mv in client.search_model_versions(f"name = '{name}'"):
        if mv.tags.get("sha256") == ckpt.sha256:
            return str(mv.version)
    mv = client.create_model_version(name, source=uri, run_id=run_id,
                                     tags={"sha256": ckpt.sha256, "layout": ckpt.layout})
    return str(mv.version)


@dataclass(frozen=True)
class ResolvedEncoder:
    """What extraction or pretraining starts from: the file and its catalog identity."""

    arch: str
    path: Path
    sha256: str
    origin: str


def resolve_encoder(spec: str | None, arch: str, params: Params, paths: RunPaths, *,
                    allow_random_init: bool = False, seed: int = 0) -> ResolvedEncoder:
    """``spec``: a checkpoint path, or a catalog sha256 prefix (>= 6 hex digits). None means
    no weights: refused unless ``allow_random_init``, in which case a seeded random
    initialisation is saved as a tspipe checkpoint and recorded with origin ``scratch``,
    so that features made from it can never pass for pretrained ones."""
    if spec is None:
        if not allow_random_init:
            raise TspipeError(
                f"encoder {arch}: no checkpoint given; features from random weights are "
                "meaningless for localization. Give a checkpoint path or catalog entry, or "
                "pass --allow-random-init to record a random initialisation as such")
        return _random_init(arch, params, paths, seed)
    path = paths.resolve(spec)
    if path.exists():
        imported = import_encoder(path, params, paths, arch=arch, origin="official")
        return ResolvedEncoder(imported.arch, path, imported.sha256, imported.origin)
    with open_catalog(params, paths) as cat:
        rows = [r for r in cat.checkpoints() if len(spec) >= 6 and r.sha256.startswith(spec)]
    if len(rows) != 1 or rows[0].uri is None:
        raise TspipeError(f"encoder {spec!r}: neither a file nor one catalog checkpoint "
                          f"({len(rows)} match); see `tspipe encoder list`")
    row = rows[0]
    if row.arch != arch:
        raise TspipeError(f"encoder {spec!r} is a {row.arch}, not {arch}")
    try:
        path = paths.resolve_uri(row.uri)
    except ValueError:
        raise TspipeError(f"encoder {spec!r}: its catalog uri {row.uri} is not a local "
                          "file") from None
    return ResolvedEncoder(row.arch, path, row.sha256, row.origin)


def _random_init(arch: str, params: Params, paths: RunPaths, seed: int) -> ResolvedEncoder:
    torch.manual_seed(seed)
    model = build_encoder(arch, num_classes=None)
    spec = model.input_spec.to_dict()
    path = paths.model_dir(f"random-{arch}-seed{seed}") / "checkpoint.pt"
    sha = save_checkpoint(path, model, arch=arch, num_classes=None,
                          clip={"frames": spec["frames"], "size": spec["size"]},
                          normalization=spec, extra={"random_init_seed": seed})
    with open_catalog(params, paths) as cat:
        cat.register_checkpoint(sha, arch=arch, origin="scratch", uri=paths.to_uri(path),
                                params={"random_init_seed": seed})
    log.warning("encoder %s: RANDOM initialisation (seed %d) recorded as %s", arch, seed,
                sha[:12])
    return ResolvedEncoder(arch, path, sha, "scratch")
