"""Feature files that survive a kill: one small part file per complete video, merged at the end.

Layout while extracting into ``features.h5``::

    features.h5.parts/attrs.json      the file-level attributes this extraction writes
    features.h5.parts/<video_id>.h5   one complete video each
    features.h5.parts/.<id>.h5.tmp-*  a video being written (ignored; removed on error)

A video's part is written to a temp file, flushed, fsynced and renamed into place
(:func:`tspipe.io.atomic_path`): after a ``kill -9`` every part is complete and readable or
absent, never half written. ``done_ids`` are the ids in ``features.h5`` plus the parts, so
a rerun resumes. ``finalize`` merges the existing ``features.h5`` (if any) and the parts
into a new file, renamed onto ``features.h5`` in one step, and only then deletes the
parts; killed during the merge, the old file and the parts are still there, and killed
after the rename, a rerun finds the parts' ids already in the file and merges nothing
twice (a part whose id the file has is the same video, skipped). The rename is the journal.

Every dataset carries the file-level attributes too (clip ``fps``, ``stride``,
``frames``, ``encoder``, ``checkpoint_sha256``, ``feature_version``, ``preprocessing``)
plus its clips' ``t_start``/``t_end`` arrays (seconds), so a dataset copied elsewhere
still says what it is.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import h5py
import numpy as np

from tspipe.data.clip_sampler import ClipSampler, Window
from tspipe.errors import StageError
from tspipe.extract.preprocess import Preprocess
from tspipe.io import atomic_path, atomic_write_json, safe_id

log = logging.getLogger(__name__)

REQUIRED_ATTRS = ("fps", "stride", "frames", "encoder", "checkpoint_sha256", "feature_version",
                  "preprocessing")
ATTRS_FILE = "attrs.json"
PART_SUFFIX = ".h5"


def feature_attrs(*, encoder: str, checkpoint_sha256: str, feature_version: str,
                  sampler: ClipSampler, prep: Preprocess, **extra: str | int | float | bool
                  ) -> dict[str, Any]:
    """The file-level attributes of a feature file (what decides its numbers)."""
    return {"fps": float(sampler.fps), "fps_exact": str(sampler.fps),
            "stride": sampler.stride, "frames": sampler.frames, "encoder": encoder,
            "checkpoint_sha256": checkpoint_sha256, "feature_version": feature_version,
            "preprocessing": prep.mode, "resize": list(prep.resize), "crop": prep.crop,
            **extra}


def extraction_params(encoder: str, sampler: ClipSampler, prep: Preprocess,
                      **extra: Any) -> dict[str, Any]:
    """The params of a feature version id: encoder, clips, preprocessing, plus ``extra``
    (precision settings, dtype, pooling, ...)."""
    return {"encoder": encoder, "clip": {"frames": sampler.frames, "fps": str(sampler.fps),
                                         "stride": sampler.stride},
            "preprocess": prep.to_dict(), **extra}


def plain_attrs(attrs: Mapping[str, Any]) -> dict[str, Any]:
    """HDF5 attributes as plain JSON values (numpy scalars/arrays -> Python)."""
    out: dict[str, Any] = {}
    for key, value in attrs.items():
        if isinstance(value, np.ndarray):
            value = value.tolist()
        elif isinstance(value, np.generic):
            value = value.item()
        if isinstance(value, bytes):
            value = value.decode()
        out[key] = value
    return out


class PartStore:
    """Parts beside ``out`` (``<out>.parts/``) and their atomic merge into ``out``."""

    def __init__(self, out: str | Path, attrs: Mapping[str, Any]) -> None:
        self.out = Path(out)
        self.parts_dir = self.out.with_name(self.out.name + ".parts")
        self.attrs = json.loads(json.dumps(dict(attrs)))  # plain, as it reads back
        if self.out.exists():
            with self._open_out() as f:
                self._check_same(plain_attrs(f.attrs), self.out)
        attrs_file = self.parts_dir / ATTRS_FILE
        if attrs_file.exists():
            self._check_same(json.loads(attrs_file.read_text(encoding="utf-8")), attrs_file)
        else:
            atomic_write_json(attrs_file, self.attrs)

    def _open_out(self) -> h5py.File:
        try:
            return h5py.File(self.out, "r")
        except OSError as exc:
            raise StageError(f"{self.out}: not a readable HDF5 file, cut short or damaged "
                             f"({exc}); delete it to extract its videos again") from None

    def _check_same(self, found: Mapping[str, Any], where: Path) -> None:
        diff = sorted(k for k in set(found) | set(self.attrs) if found.get(k) != self.attrs.get(k))
        if diff:
            shown = ", ".join(f"{k}: {found.get(k)!r} there, {self.attrs.get(k)!r} now"
                              for k in diff[:4])
            raise StageError(f"{where}: written by another extraction ({shown}); features "
                             "of two settings never share a file: pick another output or "
                             "delete it")

    def part_ids(self) -> set[str]:
        return {p.name[:-len(PART_SUFFIX)] for p in self.parts_dir.glob(f"[!.]*{PART_SUFFIX}")}

    def done_ids(self) -> set[str]:
        done = self.part_ids()
        if self.out.exists():
            with self._open_out() as f:
                done |= set(f.keys())
        return done

    def write(self, video_id: str, fill: Callable[[h5py.File], None]) -> Path:
        """One part: ``fill`` writes the video's dataset into the open temp file."""
        dest = self.parts_dir / f"{safe_id(video_id)}{PART_SUFFIX}"
        with atomic_path(dest) as tmp:
            with h5py.File(tmp, "w") as f:
                f.attrs.update(self.attrs)
                fill(f)
            fsync_path(tmp)
        return dest

    def merge(self, *, skip_existing: bool = True) -> Path:
        """``out`` + parts -> a new ``out`` (atomic); then the parts go."""
        parts = sorted(self.parts_dir.glob(f"[!.]*{PART_SUFFIX}"))
        if parts or not self.out.exists():
            with atomic_path(self.out) as tmp:
                with h5py.File(tmp, "w") as dst:
                    dst.attrs.update(self.attrs)
                    sources = ([self.out] if self.out.exists() else []) + parts
                    for source in sources:
                        with h5py.File(source, "r") as src:
                            for key in src:
                                if key in dst and skip_existing:
                                    continue  # merged before a kill; same video
                                src.copy(src[key], dst, name=key)
                fsync_path(tmp)
            log.info("merged %d video parts into %s", len(parts), self.out)
        shutil.rmtree(self.parts_dir, ignore_errors=True)
        return self.out


def fsync_path(path: Path) -> None:
    """Flush a closed file's data to disk before it is renamed into place: a rename is
    journaled, the data not, so after a power loss an unsynced file could be renamed over
    the finished one and hold nothing."""
    with path.open("rb+") as fh:
        os.fsync(fh.fileno())


class PartsWriter:
    """What every writer on a :class:`PartStore` shares: resume and the final merge. Use as
    a context manager: a clean exit merges the parts (:meth:`finalize`); an exception
    leaves them for a rerun."""

    store: PartStore

    def done_ids(self) -> set[str]:
        return self.store.done_ids()

    def finalize(self) -> Path:
        return self.store.merge()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc_type is None:
            self.finalize()


class H5FeatureWriter(PartsWriter):
    """Clip features to HDF5: dataset ``<video_id>`` of shape ``(num_clips, D)``.

    ``attrs`` must name :data:`REQUIRED_ATTRS` (see :func:`feature_attrs`). ``dtype``:
    ``float32`` (default) or ``float16``.
    """

    def __init__(self, path: str | Path, attrs: Mapping[str, Any], *,
                 dtype: str = "float32", compression: str | None = "gzip") -> None:
        missing = [k for k in REQUIRED_ATTRS if k not in attrs]
        if missing:
            raise StageError(f"{path}: feature attributes {missing} are missing")
        if np.dtype(dtype) not in (np.float32, np.float16):
            raise StageError(f"{path}: dtype must be float32 or float16, not {dtype}")
        self.path = Path(path)
        self.dtype = np.dtype(dtype)
        self.compression = compression
        self.store = PartStore(self.path, {**attrs, "dtype": self.dtype.name})

    def write(self, video_id: str, features: np.ndarray, windows: Sequence[Window]) -> None:
        features = np.asarray(features)
        if features.ndim != 2 or len(features) != len(windows) or not len(windows):
            raise StageError(f"video {video_id!r}: features {features.shape} for "
                             f"{len(windows)} windows")

        def fill(f: h5py.File) -> None:
            ds = f.create_dataset(video_id, data=features.astype(self.dtype),
                                  compression=self.compression)
            ds.attrs.update(self.store.attrs)
            ds.attrs["t_start"] = np.array([w.t_start for w in windows], dtype=np.float64)
            ds.attrs["t_end"] = np.array([w.t_end for w in windows], dtype=np.float64)
            ds.attrs["padded_frames"] = np.array([w.padded_frames for w in windows],
                                                 dtype=np.int32)

        self.store.write(video_id, fill)


class MemoryWriter:
    """Keeps features in memory (tests, mode comparison, small jobs)."""

    def __init__(self) -> None:
        self.features: dict[str, np.ndarray] = {}
        self.windows: dict[str, list[Window]] = {}

    def done_ids(self) -> set[str]:
        return set(self.features)

    def write(self, video_id: str, features: np.ndarray, windows: Sequence[Window]) -> None:
        self.features[video_id] = np.array(features)
        self.windows[video_id] = list(windows)


def read_features(path: str | Path) -> dict[str, np.ndarray]:
    """Every dataset of a feature file: video id -> ``(num_clips, D)``."""
    with h5py.File(path, "r") as f:
        return {key: f[key][()] for key in f}


def read_attrs(path: str | Path, video_id: str | None = None) -> dict[str, Any]:
    """The file's attributes, or one dataset's."""
    with h5py.File(path, "r") as f:
        return plain_attrs((f if video_id is None else f[video_id]).attrs)
