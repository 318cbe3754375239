"""Copying a video's stored features from an earlier version with the same recipe.

A new video set (videos added, or a different subset) makes a new version of the gvf and
extract stages' outputs; for a video whose downloaded file is unchanged, an earlier
version made with the same recipe (weights, clip and preprocessing params, code) holds
exactly the numbers this run would compute, so they are copied instead (why by copy, not
by reference: :mod:`tspipe.stages.extract`). Each version's ``index.json`` says which
videos it holds, in which shard, for which file (sha256), and its recipe.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import h5py

from tspipe.extract.shards import count_non_finite
from tspipe.extract.writers import PartsWriter
from tspipe.stages.encoder_runs import EncoderRun

log = logging.getLogger(__name__)


def video_sha(run: EncoderRun) -> dict[str, str | None]:
    """Video id -> the downloaded file's sha256."""
    return {v.video_id: v.sha256 for v in run.videos}


def reuse_stored(run: EncoderRun, writer: PartsWriter, ids: list[str], root: Path, *,
                 dataset_attrs: bool = True) -> dict[str, str]:
    """Copy into ``writer`` the datasets of ``ids`` that an earlier version under ``root``
    (``<root>/<version>/index.json``) with this run's recipe holds for the same
    downloaded file; returns video id -> the version copied from. ``dataset_attrs``: give
    each copied dataset this run's file attributes (clip features do; a GVF dataset has
    none, as in TSP's released files)."""
    todo = set(ids) - writer.done_ids()
    if not todo:
        return {}
    sha = video_sha(run)
    reused: dict[str, str] = {}
    for index_file in sorted(root.glob("*/index.json")):
        if index_file.parent == run.out_dir or not todo:
            continue
        try:
            index = json.loads(index_file.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            log.warning("%s: %s: unreadable (%s); nothing is copied from that version",
                        run.stage, index_file, exc)
            continue
        if index.get("recipe") != run.recipe():
            continue
        for vid in sorted(todo):
            entry = index["videos"].get(vid)
            if not entry or entry["status"] != "ok" or entry.get("sha256") != sha[vid] \
                    or sha[vid] is None:
                continue
            source = index_file.parent / entry["shard"]
            if (why := _unusable(source, vid)) is not None:
                log.warning("%s: %s: video %r not copied, it is computed instead: %s",
                            run.stage, source, vid, why)
                continue

            def fill(f: h5py.File, source: Path = source, vid: str = vid) -> None:
                with h5py.File(source, "r") as src:
                    src.copy(src[vid], f, name=vid)
                    if dataset_attrs:
                        f[vid].attrs.update(writer.store.attrs)  # this version's

            writer.store.write(vid, fill)
            reused[vid] = index["feature_version"]
            todo.discard(vid)
    return reused


def _unusable(source: Path, video_id: str) -> str | None:
    """Why an earlier version's features of ``video_id`` in ``source`` must not be copied
    (unreadable, or NaN/inf: versions made before those were refused), or None."""
    try:
        with h5py.File(source, "r") as f:
            bad = count_non_finite(f[video_id][()])
    except (OSError, KeyError) as exc:
        return f"cannot read it ({exc})"
    return f"{bad} values are NaN or inf" if bad else None
