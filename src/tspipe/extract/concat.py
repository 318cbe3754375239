"""Feature files side by side: per-clip concatenation along the feature axis.

I3D's two-stream features (Carreira & Zisserman 2017), the input most temporal
localization methods read on THUMOS14 and ActivityNet, are the RGB stream's and the flow
stream's clip features concatenated per clip, RGB first (1024 + 1024 = 2048-d for I3D).
The streams must describe the same clips: every video cut into the same windows (equal
``t_start``, ``t_end`` and padding of every clip). A video whose streams disagree fails
with the reason; the others are written.

Written through the feature writers' part store, so a concatenation resumes video by
video and a killed one leaves every file readable, like an extraction.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from tspipe.extract.writers import H5FeatureWriter

# Per-clip dataset attributes that place the clips in the video (copied from the first
# source; the others must agree).
GRID_ATTRS = ("t_start", "t_end", "padded_frames")


@dataclass
class ConcatResult:
    written: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # already in the writer (resume)
    failed: dict[str, str] = field(default_factory=dict)  # video id -> reason
    clips: int = 0
    seconds: float = 0.0


def _grid_mismatch(first: h5py.Dataset, other: h5py.Dataset) -> str | None:
    """Why ``other``'s clips are not ``first``'s, or None when they are the same."""
    if other.shape[0] != first.shape[0]:
        return f"{other.shape[0]} clips, not {first.shape[0]}"
    for key in GRID_ATTRS:
        a, b = first.attrs.get(key), other.attrs.get(key)
        if a is None or b is None:
            return f"no {key} attribute"
        if not np.array_equal(np.asarray(a), np.asarray(b)):
            return f"clip {key} differ"
    return None


def concat_features(sources: Sequence[Path], writer: H5FeatureWriter,
                    ids: Sequence[str]) -> ConcatResult:
    """Write each video of ``ids`` to ``writer`` as the concatenation of its datasets in
    ``sources`` (in that order, along the feature axis, cast to the writer's dtype).

    A video already in the writer is skipped; one missing from a source, or whose clips
    differ between sources, is failed with the source file and the reason.
    """
    if len(sources) < 2:
        raise ValueError(f"concatenation needs at least two feature files, got {len(sources)}")
    result = ConcatResult()
    t0 = time.perf_counter()
    done = writer.done_ids()
    with ExitStack() as stack:
        files = [stack.enter_context(h5py.File(s, "r")) for s in sources]
        for vid in ids:
            if vid in done:
                result.skipped.append(vid)
                continue
            missing = [str(s) for s, f in zip(sources, files, strict=True) if vid not in f]
            if missing:
                result.failed[vid] = f"not in {', '.join(missing)}"
                continue
            dsets = [f[vid] for f in files]
            reasons = [f"{s}: {why}" for s, d in zip(sources[1:], dsets[1:], strict=True)
                       if (why := _grid_mismatch(dsets[0], d)) is not None]
            if reasons:
                result.failed[vid] = (f"streams do not describe the same clips as {sources[0]}"
                                      f" ({'; '.join(reasons)})")
                continue
            features = np.concatenate([d[()].astype(np.float32) for d in dsets], axis=1)
            grid = {key: np.asarray(dsets[0].attrs[key]) for key in GRID_ATTRS}

            def fill(f: h5py.File, vid: str = vid, features: np.ndarray = features,
                     grid: dict[str, np.ndarray] = grid) -> None:
                ds = f.create_dataset(vid, data=features.astype(writer.dtype),
                                      compression=writer.compression)
                ds.attrs.update(writer.store.attrs)
                ds.attrs.update(grid)

            writer.store.write(vid, fill)
            result.written.append(vid)
            result.clips += len(features)
    result.seconds = time.perf_counter() - t0
    return result
