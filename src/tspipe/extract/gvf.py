"""The global video feature (GVF): one vector per video, pooled over its clip features.

TSP conditions its temporal-region head on it: the max over time of the clip features of
the Kinetics-pretrained encoder (mean pooling is offered for comparison). Same loader,
preprocessing and model code as clip extraction; only the writer pools.

The file format is the one of TSP's released ``thumos14_r2plus1d_34-max_gvf.h5``
(inspected with h5py): one dataset per video id at the root, shape ``(D,)``, float32,
chunked as one chunk ``(D,)``, gzip level 9, no shuffle, no attributes on the datasets
and none on the file. TSP's training code reads ``h5[video_id]`` (a float32 ``(D,)``
array); :func:`read_gvf` reads both that file and ours. Ours adds file attributes (how it
was made: encoder, checkpoint, pooling, clip settings), which readers of the released
file never look at.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import h5py
import numpy as np
from torch import nn

from tspipe.data.clip_sampler import ClipSampler, Window
from tspipe.errors import StageError
from tspipe.extract.loader import VideoInput
from tspipe.extract.runner import ExtractResult, extract_features
from tspipe.extract.shards import count_non_finite
from tspipe.extract.writers import PartStore, PartsWriter, fsync_path
from tspipe.io import atomic_path
from tspipe.models.spec import InputSpec
from tspipe.reporting import Reporter

Pooling = Literal["max", "mean"]
GZIP_LEVEL = 9  # the released file's


def pool_features(features: np.ndarray, pooling: Pooling = "max") -> np.ndarray:
    """``(num_clips, D) -> (D,)`` float32: the max (TSP) or mean over time."""
    features = np.asarray(features, dtype=np.float32)
    if features.ndim != 2 or not len(features):
        raise StageError(f"pooling needs (num_clips >= 1, D) features, got {features.shape}")
    if pooling == "max":
        return features.max(axis=0)
    if pooling == "mean":
        return features.mean(axis=0, dtype=np.float64).astype(np.float32)
    raise StageError(f"unknown GVF pooling {pooling!r}: choose max or mean")


class GVFWriter(PartsWriter):
    """Pools each complete video and writes it in the released GVF format (atomic parts
    merged at :meth:`finalize`, as :class:`~tspipe.extract.writers.H5FeatureWriter`)."""

    def __init__(self, path: str | Path, *, pooling: Pooling = "max",
                 attrs: Mapping[str, Any] | None = None) -> None:
        if pooling not in ("max", "mean"):
            raise StageError(f"unknown GVF pooling {pooling!r}: choose max or mean")
        self.path, self.pooling = Path(path), pooling
        self.store = PartStore(self.path, {**(attrs or {}), "gvf_pooling": pooling})

    def write(self, video_id: str, features: np.ndarray, windows: Sequence[Window]) -> None:
        vector = pool_features(features, self.pooling)
        self.store.write(video_id, lambda f: write_gvf_dataset(f, video_id, vector))


def write_gvf_dataset(f: h5py.File | h5py.Group, video_id: str, vector: np.ndarray) -> None:
    """One video's vector as the released file stores it."""
    vector = np.asarray(vector, dtype=np.float32)
    if vector.ndim != 1:
        raise StageError(f"video {video_id!r}: a GVF is one (D,) vector, got {vector.shape}")
    f.create_dataset(video_id, data=vector, chunks=vector.shape, compression="gzip",
                     compression_opts=GZIP_LEVEL, shuffle=False)


def read_gvf(path: str | Path) -> dict[str, np.ndarray]:
    """Video id -> ``(D,) float32`` of a GVF file (TSP's released ones or ours)."""
    out: dict[str, np.ndarray] = {}
    with h5py.File(path, "r") as f:
        for key, item in f.items():
            if not isinstance(item, h5py.Dataset) or item.ndim != 1:
                raise StageError(f"{path}: {key!r} is not a (D,) dataset, so this is not a "
                                 "GVF file")
            out[key] = item[()].astype(np.float32, copy=False)
    dims = {v.shape for v in out.values()}
    if len(dims) > 1:
        raise StageError(f"{path}: vectors of several sizes {sorted(dims)}")
    return out


def extract_gvf(videos: Sequence[VideoInput], model: nn.Module, spec: InputSpec,
                sampler: ClipSampler, out: str | Path, *, pooling: Pooling = "max",
                attrs: Mapping[str, Any] | None = None, reporter: Reporter | None = None,
                **options: Any) -> ExtractResult:
    """GVFs of ``videos`` into ``out`` (resumable). ``options`` go to
    :func:`~tspipe.extract.runner.extract_features` (mode, batch_size, workers, device,
    amp, ...)."""
    with GVFWriter(out, pooling=pooling, attrs=attrs) as writer:
        return extract_features(videos, model, spec, sampler, writer=writer,
                                reporter=reporter, **options)


def merge_gvf(shards: Sequence[str | Path], out: str | Path, *,
              attrs: Mapping[str, Any] | None = None) -> Path:
    """GVF shard files -> one GVF file in the released format, written atomically; a
    video id in two shards, or a vector holding NaN or inf (shards written before the
    runner refused those), is refused."""
    vectors: dict[str, np.ndarray] = {}
    for shard in shards:
        for key, vector in read_gvf(shard).items():
            if key in vectors:
                raise StageError(f"{shard}: video {key!r} is in another GVF shard too")
            if bad := count_non_finite(vector):
                raise StageError(f"{shard}: video {key!r}: {bad} of the {vector.size} GVF "
                                 "values are NaN or inf; delete the shard and its report "
                                 "(.json beside it) to extract it again")
            vectors[key] = vector
    with atomic_path(out) as tmp:
        with h5py.File(tmp, "w") as f:
            f.attrs.update(dict(attrs or {}))
            for key in sorted(vectors):
                write_gvf_dataset(f, key, vectors[key])
        fsync_path(tmp)
    return Path(out)
