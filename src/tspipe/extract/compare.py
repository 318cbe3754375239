"""How far ``fast`` preprocessing lands from the reference: same videos, same model, both modes."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from torch import nn

from tspipe.data.clip_sampler import ClipSampler
from tspipe.errors import StageError
from tspipe.extract.loader import VideoInput, video_clips
from tspipe.extract.preprocess import Preprocess
from tspipe.extract.runner import extract_features
from tspipe.extract.writers import MemoryWriter
from tspipe.models.spec import InputSpec


@dataclass(frozen=True)
class ModeComparison:
    """``fast`` against ``reference`` over ``clips`` clips.

    Features: per-clip cosine similarity (mean and worst), the largest absolute difference
    of any value, ``feature_scale`` (mean |reference value|) to put it in proportion, and
    ``centered_cosine_mean``, the cosine after subtracting the mean reference feature: clip
    features after ReLU and pooling are all positive, so even unrelated clips have a raw
    cosine near 1 (0.99 for a random tiny encoder); ``baseline_cosine_mean`` is that raw
    cosine between *different* reference clips, the floor the first number should beat.
    Inputs (model-free): largest and mean absolute difference of the normalized clip values.
    """

    clips: int
    cosine_mean: float
    cosine_min: float
    max_abs_diff: float
    feature_scale: float
    centered_cosine_mean: float
    baseline_cosine_mean: float
    input_max_abs_diff: float
    input_mean_abs_diff: float

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity of each row of ``a`` with the same row of ``b`` (float64)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return (a * b).sum(axis=1) / np.maximum(norms, 1e-12)


def compare_modes(videos: Sequence[VideoInput], model: nn.Module, spec: InputSpec,
                  sampler: ClipSampler, **options: Any) -> ModeComparison:
    """Extract ``videos`` in both modes (``options`` go to ``extract_features``) and
    compare clip by clip."""
    runs = {}
    for mode in ("reference", "fast"):
        writer = MemoryWriter()
        extract_features(videos, model, spec, sampler, writer=writer, mode=mode, **options)
        runs[mode] = writer.features
    ref, fast = runs["reference"], runs["fast"]
    if ref.keys() != fast.keys():
        raise StageError(f"the modes extracted different videos: {sorted(ref.keys() ^ fast)}")
    if not ref:
        raise StageError("no video was extracted in either mode")
    if any(ref[v].shape != fast[v].shape for v in ref):
        raise StageError("the modes cut different windows: " + ", ".join(
            f"{v} {ref[v].shape} vs {fast[v].shape}" for v in ref
            if ref[v].shape != fast[v].shape))
    a = np.concatenate([ref[v] for v in sorted(ref)])
    b = np.concatenate([fast[v] for v in sorted(ref)])
    cos = cosine_rows(a, b)
    mu = a.mean(axis=0)
    others = cosine_rows(a, np.roll(a, 1, axis=0))[1:] if len(a) > 1 else np.ones(1)
    done = [v for v in videos if v.video_id in ref]
    in_max, in_mean = _input_diff(done, spec, sampler, options.get("resize"))
    return ModeComparison(clips=len(a), cosine_mean=float(cos.mean()),
                          cosine_min=float(cos.min()),
                          max_abs_diff=float(np.abs(a - b).max()),
                          feature_scale=float(np.abs(a).mean()),
                          centered_cosine_mean=float(cosine_rows(a - mu, b - mu).mean()),
                          baseline_cosine_mean=float(others.mean()),
                          input_max_abs_diff=in_max, input_mean_abs_diff=in_mean)


def _input_diff(videos: Sequence[VideoInput], spec: InputSpec, sampler: ClipSampler,
                resize: tuple[int, int] | None) -> tuple[float, float]:
    """Max and mean |fast - reference| of the normalized clips, over all videos."""
    peak, total, count = 0.0, 0.0, 0
    for video in videos:
        pairs = zip(*(video_clips(video, sampler, Preprocess.for_spec(spec, mode, resize))
                      for mode in ("reference", "fast")), strict=True)
        for ref, fast in pairs:
            diff = (ref.clip - fast.clip).abs()
            peak = max(peak, float(diff.max()))
            total += float(diff.sum())
            count += diff.numel()
    return peak, total / max(count, 1)
