"""Feature files in the formats localization code reads.

- :func:`export_npy`: one ``<id>.npy`` per video, ``(T, C)`` float, as OpenTAD and
  ActionFormer load them (ActivityNet ids keep their ``v_`` prefix: pass
  ``id_prefix="v_"`` when the ids lack it), with ``features.json`` beside them: the clip
  rate, stride, clip length and the offset of a feature's centre (what those configs call
  ``feature_stride``/``num_frames``/``offset``);
- :func:`export_csv`: one ``<id>.csv`` per video, BMN style: a header of column names
  (``f0 ... f{C-1}``), one row per clip, float32 values written so they read back exactly;
- :func:`merge_h5`: shard files -> one TSP-style HDF5 file keyed by video id.

Every file is written atomically (:mod:`tspipe.io`).
"""

from __future__ import annotations

import io
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from tspipe.errors import StageError
from tspipe.extract.writers import fsync_path, plain_attrs
from tspipe.io import atomic_path, atomic_write_bytes, atomic_write_json, safe_id

log = logging.getLogger(__name__)

SIDECAR = "features.json"
# Nine significant digits write any float32 so that it parses back to the same float32.
_CSV_FORMAT = "%.9g"


def _prefixed(video_id: str, prefix: str) -> str:
    return safe_id(video_id if video_id.startswith(prefix) else prefix + video_id)


def _datasets(h5: Path) -> tuple[dict[str, Any], list[str]]:
    with h5py.File(h5, "r") as f:
        return plain_attrs(f.attrs), sorted(f.keys())


def export_npy(h5: str | Path, out_dir: str | Path, *, id_prefix: str = "") -> list[Path]:
    """One ``(T, C)`` ``.npy`` per video of ``h5`` plus ``features.json``; returns the
    ``.npy`` paths."""
    h5, out_dir = Path(h5), Path(out_dir)
    attrs, keys = _datasets(h5)
    written, videos = [], {}
    with h5py.File(h5, "r") as f:
        for key in keys:
            name = _prefixed(key, id_prefix)
            buffer = io.BytesIO()
            np.save(buffer, f[key][()], allow_pickle=False)
            written.append(atomic_write_bytes(out_dir / f"{name}.npy", buffer.getvalue()))
            t_start = f[key].attrs.get("t_start")
            videos[name] = {"num_clips": int(f[key].shape[0]),
                            "t_start_first": float(t_start[0]) if t_start is not None
                            and len(t_start) else 0.0}
    atomic_write_json(out_dir / SIDECAR, {**_timing(attrs), "attrs": attrs, "videos": videos})
    log.info("exported %d videos to %s as .npy", len(written), out_dir)
    return written


def _timing(attrs: dict[str, Any]) -> dict[str, Any]:
    """Feature ``i`` covers ``[i * stride, i * stride + frames)`` clip frames: its centre
    is at ``i * feature_stride_s + clip_offset_s`` seconds."""
    fps, stride, frames = attrs.get("fps"), attrs.get("stride"), attrs.get("frames")
    if not (fps and stride and frames):
        return {}
    return {"fps": fps, "stride": stride, "frames": frames,
            "feature_stride_s": stride / fps, "window_s": frames / fps,
            "clip_offset_s": frames / fps / 2}


def export_csv(h5: str | Path, out_dir: str | Path, *, id_prefix: str = "") -> list[Path]:
    """One BMN-style ``.csv`` per video (header ``f0,...``; a row per clip)."""
    h5, out_dir = Path(h5), Path(out_dir)
    _attrs, keys = _datasets(h5)
    written = []
    with h5py.File(h5, "r") as f:
        for key in keys:
            data = f[key][()]
            header = ",".join(f"f{i}" for i in range(data.shape[1]))
            buffer = io.StringIO()
            np.savetxt(buffer, data, fmt=_CSV_FORMAT, delimiter=",", header=header,
                       comments="")
            dest = out_dir / f"{_prefixed(key, id_prefix)}.csv"
            written.append(atomic_write_bytes(dest, buffer.getvalue().encode()))
    log.info("exported %d videos to %s as .csv", len(written), out_dir)
    return written


def read_csv_features(path: str | Path) -> np.ndarray:
    """A :func:`export_csv` file back as ``(T, C) float32``."""
    return np.loadtxt(path, delimiter=",", skiprows=1, dtype=np.float32, ndmin=2)


def merge_h5(parts: Sequence[str | Path], out: str | Path, *,
             compression: str | None = "gzip") -> Path:
    """Feature files (shards) -> one HDF5 file keyed by video id, written atomically.

    The shards must agree on their file attributes (one feature version); a video id in
    two shards is refused. Datasets keep their attributes; the data is recompressed with
    ``compression`` (TSP's merged files use gzip).
    """
    parts = [Path(p) for p in parts]
    if not parts:
        raise StageError(f"{out}: no feature files to merge")
    first_attrs, _ = _datasets(parts[0])
    seen: dict[str, Path] = {}
    for part in parts:
        attrs, keys = _datasets(part)
        if attrs != first_attrs:
            diff = sorted(k for k in set(attrs) | set(first_attrs)
                          if attrs.get(k) != first_attrs.get(k))
            raise StageError(f"{part}: attributes {diff} differ from {parts[0]}'s; only "
                             "features of one version merge into one file")
        for key in keys:
            if key in seen:
                raise StageError(f"video {key!r} is in both {seen[key]} and {part}")
            seen[key] = part
    with atomic_path(out) as tmp:
        with h5py.File(tmp, "w") as dst:
            dst.attrs.update(first_attrs)
            for part in parts:
                with h5py.File(part, "r") as src:
                    for key in src:
                        ds = dst.create_dataset(key, data=src[key][()],
                                                compression=compression)
                        ds.attrs.update(src[key].attrs)
        fsync_path(tmp)
    log.info("merged %d videos from %d files into %s", len(seen), len(parts), out)
    return Path(out)
