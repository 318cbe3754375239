"""Reading and validating snippet feature files: :func:`load_features` finds every video
a source holds in any layout tspipe (or the field) writes, reads the wanted ones and checks
them, and gives a :class:`~tspipe.localize.features.FeatureSet`.

Layouts :func:`load_features` reads (one ``(T, C)`` array per video, T snippets):

- an extraction version folder ``features/<version>/``: ``index.json`` (which shard holds
  which video, and which failed) and ``shard-*.h5``; without ``index.json`` every
  ``shard-*.h5`` is read;
- one HDF5 file: tspipe's (``features.h5``, a shard) or a TSP-style merged file, one 2-D
  dataset per video id;
- a folder of ``<id>.npy`` (with the optional ``features.json`` sidecar that
  :func:`tspipe.extract.export.export_npy` writes) or of BMN-style ``<id>.csv`` (a header
  row, one row per snippet).

Clip timing comes from a dataset's ``t_start``/``t_end`` attributes (tspipe HDF5), else
from ``fps``/``stride``/``frames`` (the dataset's or the file's attributes, or the sidecar):
snippet ``i`` spans ``[i * stride / fps, (i * stride + frames) / fps)``.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Container, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import h5py
import numpy as np

from tspipe.errors import ShapeError, TspipeError
from tspipe.extract.export import SIDECAR, read_csv_features
from tspipe.extract.writers import plain_attrs
from tspipe.localize.features import ClipTiming, FeatureSet, VideoFeatures

log = logging.getLogger(__name__)

ANET_PREFIX = "v_"
INDEX_FILE = "index.json"
SHARD_GLOB = "shard-*.h5"
H5_SUFFIXES = (".h5", ".hdf5", ".hdf")
_SHOWN_IDS = 5


class FeatureError(TspipeError):
    """A feature source cannot be read at all (absent, unknown layout, unreadable index)."""


class _Entry(NamedTuple):
    """Where a video's features live: ``file`` and its ``kind`` (h5, npy, csv)."""

    file: Path
    kind: str


@dataclass
class _Catalog:
    """Every video a source holds, before anything is read."""

    entries: dict[str, _Entry]
    failed: dict[str, str]  # key -> reason the extraction gave
    sidecar: dict[str, Any]
    feature_dim: int | None = None  # the width the source declares (an index's feature_dim)


def match_id(video_id: str, keys: Container[str]) -> str | None:
    """The key that serves ``video_id``: itself, else the same id with ActivityNet's ``v_``
    prefix added or removed (feature files often say ``v_abc`` for video ``abc``)."""
    if video_id in keys:
        return video_id
    other = (video_id[len(ANET_PREFIX):] if video_id.startswith(ANET_PREFIX)
             else ANET_PREFIX + video_id)
    return other if other in keys else None


def load_features(source: str | Path, video_ids: Iterable[str] | None = None, *,
                  whole: bool = False) -> FeatureSet:
    """Features of ``video_ids`` (all the source holds when None) from any layout above.

    Ids match exactly or up to ActivityNet's ``v_`` prefix, both ways: a file keyed
    ``v_abc`` serves video ``abc`` and one keyed ``abc`` serves ``v_abc``; the result is
    keyed by the id asked for. Ids the source lacks go to ``missing`` and a warning names
    the source and them. A dataset that is not 2-D, empty, not numeric, holds NaN/inf,
    or whose timing does not match its rows, and a video whose extraction failed, go to
    ``bad`` (id -> reason) with a warning; the other videos are read.

    ``whole=True`` (a feature version about to be trained and scored on) refuses instead:
    :class:`~tspipe.errors.ShapeError` for a video whose width is not the source's (its
    index's ``feature_dim``, else the width most of its videos have),
    :class:`FeatureError` for any missing or bad video: nothing is silently left out.
    """
    path = Path(source)
    catalog = _catalog(path)
    available = {**catalog.entries, **catalog.failed}
    result = FeatureSet(source=str(path))
    wanted: dict[str, str] = {}
    for video_id in dict.fromkeys(available if video_ids is None else video_ids):
        key = match_id(video_id, available)
        if key is None:
            result.missing.append(video_id)
        elif key in catalog.failed:
            result.bad[video_id] = f"extraction failed: {catalog.failed[key]}"
        else:
            wanted[video_id] = key
    read = _read_all(wanted, catalog)
    for video_id, key in wanted.items():
        outcome = read[key]
        if isinstance(outcome, str):
            result.bad[video_id] = outcome
        else:
            data, attrs = outcome
            result.videos[video_id] = VideoFeatures(video_id, key, data, _timing_of(
                attrs, data.shape[0]))
    if whole:
        _check_widths(result, catalog, path)
        if result.missing or result.bad:
            raise FeatureError(_not_whole(path, result))
    if result.missing:
        log.warning("%s: %d requested videos have no features: %s", path,
                    len(result.missing), _shown(result.missing))
    if result.bad:
        log.warning("%s: %d videos skipped: %s", path, len(result.bad),
                    _shown([f"{k} ({v})" for k, v in result.bad.items()]))
    return result


def _check_widths(result: FeatureSet, catalog: _Catalog, path: Path) -> None:
    """ShapeError naming the first video whose width is not the source's (its index's
    ``feature_dim``, else the width most of its videos have)."""
    widths = {v: f.features.shape[1] for v, f in result.videos.items()}
    if not widths:
        return
    if catalog.feature_dim:
        expected = catalog.feature_dim
        said = f"its {INDEX_FILE} says feature_dim {expected}"
    else:  # the most common width; a tie goes to the first video's
        counts = Counter(widths.values())
        expected = max(counts, key=counts.__getitem__)
        said = f"{counts[expected]} of its {len(widths)} videos are {expected} wide"
    odd = {v: w for v, w in widths.items() if w != expected}
    if not odd:
        return
    first = next(iter(odd))
    raise ShapeError(
        f"{catalog.entries[result.videos[first].key].file}: video {first!r}: features "
        f"{odd[first]} wide, expected {expected} ({path}: {said}); {len(odd)} of "
        f"{len(widths)} videos have another width "
        f"({_shown([f'{v}: {w}' for v, w in odd.items()])}). Features of another encoder, "
        "or a damaged version: extract it again (delete the folder and run the extract "
        "stage), or point at features of one width")


def _not_whole(path: Path, result: FeatureSet) -> str:
    parts = []
    if result.bad:
        parts.append(f"{len(result.bad)} cannot be used "
                     f"({_shown([f'{k}: {v}' for k, v in result.bad.items()])})")
    if result.missing:
        parts.append(f"{len(result.missing)} are not in it ({_shown(result.missing)})")
    return (f"{path}: not a whole feature version: of the videos asked for, "
            f"{'; '.join(parts)}. Nothing is left out silently: run the extract stage "
            "again (it repairs unreadable shards and retries failed videos), or point at "
            "a whole version")


def _shown(items: Sequence[str]) -> str:
    more = len(items) - _SHOWN_IDS
    return ", ".join(items[:_SHOWN_IDS]) + (f", ... (+{more} more)" if more > 0 else "")


def _catalog(path: Path) -> _Catalog:
    if not path.exists():
        raise FeatureError(f"{path}: no such feature file or folder")
    if path.is_file():
        if path.suffix.lower() not in H5_SUFFIXES:
            raise FeatureError(f"{path}: a single feature file must be HDF5 "
                               f"({', '.join(H5_SUFFIXES)})")
        return _Catalog(_h5_entries([path]), {}, {})
    if (path / INDEX_FILE).is_file():
        return _index_catalog(path / INDEX_FILE)
    shards = sorted(path.glob(SHARD_GLOB))
    if shards:
        return _Catalog(_h5_entries(shards), {}, {})
    npy, csv = sorted(path.glob("*.npy")), sorted(path.glob("*.csv"))
    if npy and csv:
        raise FeatureError(f"{path}: holds both .npy and .csv features; point at one format")
    files = npy or csv
    if not files:
        raise FeatureError(f"{path}: no features found (looked for {INDEX_FILE}, "
                           f"{SHARD_GLOB}, *.npy, *.csv)")
    sidecar = _read_json(path / SIDECAR) if (path / SIDECAR).is_file() else {}
    return _Catalog({f.stem: _Entry(f, f.suffix[1:]) for f in files}, {}, sidecar)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FeatureError(f"{path}: cannot read: {exc}") from exc
    if not isinstance(doc, dict):
        raise FeatureError(f"{path}: a JSON object expected")
    return doc


def _h5_entries(files: Sequence[Path]) -> dict[str, _Entry]:
    entries: dict[str, _Entry] = {}
    for file in files:
        try:
            with h5py.File(file, "r") as f:
                keys = list(f.keys())
        except OSError as exc:
            raise FeatureError(f"{file}: not a readable HDF5 file: {exc}") from exc
        for key in keys:
            entries.setdefault(key, _Entry(file, "h5"))  # a key twice: the first shard's
    return entries


def _index_catalog(index_file: Path) -> _Catalog:
    doc = _read_json(index_file)
    videos = doc.get("videos")
    if not isinstance(videos, dict):
        raise FeatureError(f"{index_file}: field 'videos': an object expected")
    dim = doc.get("feature_dim")
    entries, failed = {}, {}
    for video_id, info in videos.items():
        if isinstance(info, dict) and info.get("status") == "ok" and info.get("shard"):
            entries[video_id] = _Entry(index_file.parent / str(info["shard"]), "h5")
        else:
            reason = info.get("reason") if isinstance(info, dict) else None
            failed[video_id] = str(reason or "no shard in the index")
    return _Catalog(entries, failed, {},
                    feature_dim=dim if isinstance(dim, int) and dim > 0 else None)


_Read = tuple[np.ndarray, dict[str, Any]] | str  # (features, attributes) or why not


def _read_all(wanted: Mapping[str, str], catalog: _Catalog) -> dict[str, _Read]:
    """Each wanted key read once; HDF5 files opened once for all their keys."""
    out: dict[str, _Read] = {}
    by_h5: dict[Path, list[str]] = {}
    for key in dict.fromkeys(wanted.values()):
        entry = catalog.entries[key]
        if entry.kind == "h5":
            by_h5.setdefault(entry.file, []).append(key)
            continue
        try:
            data = (np.load(entry.file, allow_pickle=False) if entry.kind == "npy"
                    else read_csv_features(entry.file))
        except (OSError, ValueError) as exc:
            out[key] = f"{entry.file}: cannot read: {exc}"
            continue
        out[key] = _checked(data, _sidecar_attrs(catalog.sidecar, key), entry.file)
    for file, keys in by_h5.items():
        out.update(_read_h5(file, keys))
    return out


def _sidecar_attrs(sidecar: Mapping[str, Any], key: str) -> dict[str, Any]:
    attrs = {k: sidecar[k] for k in ("fps", "stride", "frames") if k in sidecar}
    video = (sidecar.get("videos") or {}).get(key) or {}
    if "t_start_first" in video:
        attrs["t_start_first"] = video["t_start_first"]
    return attrs


def _read_h5(file: Path, keys: Sequence[str]) -> dict[str, _Read]:
    out: dict[str, _Read] = {}
    try:
        with h5py.File(file, "r") as f:
            file_attrs = plain_attrs(f.attrs)
            for key in keys:
                obj = f.get(key)
                if not isinstance(obj, h5py.Dataset):
                    out[key] = f"{file}: not a dataset"
                    continue
                out[key] = _checked(obj[()], {**file_attrs, **plain_attrs(obj.attrs)}, file)
    except OSError as exc:
        return {key: f"{file}: cannot read: {exc}" for key in keys}
    return out


def _checked(data: Any, attrs: dict[str, Any], file: Path) -> _Read:
    """``(T, C)`` float32 and its attributes, or what is wrong with it."""
    data = np.asarray(data)
    if data.ndim != 2:
        return f"{file}: shape {data.shape}, a 2-D (T, C) array expected"
    if data.shape[0] == 0 or data.shape[1] == 0:
        return f"{file}: shape {data.shape} holds no features"
    if not (np.issubdtype(data.dtype, np.floating) or np.issubdtype(data.dtype, np.integer)):
        return f"{file}: dtype {data.dtype} is not numeric"
    data = data.astype(np.float32, copy=False)
    finite = np.isfinite(data)
    if not finite.all():
        rows = np.flatnonzero(~finite.all(axis=1))
        return (f"{file}: {int((~finite).sum())} NaN/inf values in {len(rows)} snippets "
                f"(first: snippet {int(rows[0])})")
    for name in ("t_start", "t_end"):
        if name in attrs and np.size(attrs[name]) != data.shape[0]:
            return (f"{file}: attribute {name!r} has {np.size(attrs[name])} values for "
                    f"{data.shape[0]} snippets")
    return data, attrs


def _timing_of(attrs: Mapping[str, Any], num_clips: int) -> ClipTiming | None:
    fps, stride, frames = attrs.get("fps"), attrs.get("stride"), attrs.get("frames")
    settings = {"fps": float(fps) if fps else None, "stride": int(stride) if stride else None,
                "frames": int(frames) if frames else None}
    if "t_start" in attrs and "t_end" in attrs:
        return ClipTiming(np.asarray(attrs["t_start"], dtype=np.float64).reshape(-1),
                          np.asarray(attrs["t_end"], dtype=np.float64).reshape(-1), **settings)
    if fps and stride and frames:
        t_start = float(attrs.get("t_start_first", 0.0)) + np.arange(num_clips) * stride / fps
        return ClipTiming(t_start, t_start + frames / fps, **settings)
    return None
