"""Linear probes of a feature version: what one clip's feature tells by itself.

Two tasks on the validation clips, each clip labelled by how much of its window the
ground-truth instances cover (their union):

- ``action``: inside an instance (covered whole) against background (not covered at all);
  clips partly covered are left out;
- ``boundary``: a clip that straddles an instance's start or end (partly covered) against
  every other clip.

A logistic regression (standardized features, L2, class-balanced loss, L-BFGS) is trained
on half of the videos (a seeded draw) and scored on the other half, then the halves swap;
the score is the balanced accuracy (the mean of the two classes' recalls: 0.5 is chance
whatever the class shares), averaged over the two folds. Videos, not clips, are split:
neighbouring clips of one video are near copies, and a probe must not be scored on them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

TASKS = ("action", "boundary")
_EPS = 1e-6


@dataclass(frozen=True)
class ProbeScore:
    balanced_accuracy: float
    clips: int  # clips the task labels (both folds)
    positives: int  # of them, the positive class (action / straddling)

    def to_dict(self) -> dict[str, float]:
        return {"balanced_accuracy": self.balanced_accuracy, "clips": float(self.clips),
                "positives": float(self.positives)}


def coverage(t_start: np.ndarray, t_end: np.ndarray,
             segments: Sequence[tuple[float, float]]) -> np.ndarray:
    """Share ``(n,)`` of each clip window ``[t_start, t_end]`` covered by the union of
    ``segments``."""
    merged: list[list[float]] = []
    for s, e in sorted((float(a), float(b)) for a, b in segments if b > a):
        if merged and s <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], e)
        else:
            merged.append([s, e])
    covered = np.zeros(len(t_start))
    for s, e in merged:
        covered += np.clip(np.minimum(t_end, e) - np.maximum(t_start, s), 0, None)
    return covered / np.maximum(t_end - t_start, _EPS)


def targets(cover: np.ndarray) -> dict[str, np.ndarray]:
    """Per task, each clip's label: 1, 0, or -1 (left out)."""
    inside, outside = cover >= 1 - _EPS, cover <= _EPS
    return {"action": np.where(inside, 1, np.where(outside, 0, -1)),
            "boundary": (~inside & ~outside).astype(np.int64)}


def run_probes(features: Mapping[str, np.ndarray], labels: Mapping[str, dict[str, np.ndarray]],
               *, seed: int = 0, l2: float = 1e-3) -> dict[str, ProbeScore]:
    """Score every task of :data:`TASKS` on ``features`` (video -> ``(n, D)``) and
    ``labels`` (video -> task -> ``(n,)`` from :func:`targets`), two folds by video."""
    videos = sorted(features)
    if len(videos) < 2:
        raise ValueError(f"linear probes need 2 videos or more, got {len(videos)}")
    # A seeded shuffle, not alternate ids: ids often follow a pattern (SynthActions' classes
    # cycle with the index), and folds must not split the classes apart.
    order = np.random.default_rng([seed, len(videos)]).permutation(len(videos))
    shuffled = [videos[i] for i in order]
    folds = [shuffled[0::2], shuffled[1::2]]
    out = {}
    for task in TASKS:
        scores, n, pos = [], 0, 0
        for k in (0, 1):
            x_tr, y_tr = _stack(features, labels, folds[k], task)
            x_te, y_te = _stack(features, labels, folds[1 - k], task)
            n, pos = n + len(y_te), pos + int(y_te.sum())
            if len(np.unique(y_tr)) < 2 or len(np.unique(y_te)) < 2:
                continue  # a fold without both classes says nothing
            scores.append(_balanced_accuracy(y_te, _fit_predict(x_tr, y_tr, x_te, seed, l2)))
        out[task] = ProbeScore(float(np.mean(scores)) if scores else float("nan"), n, pos)
    return out


def _stack(features: Mapping[str, np.ndarray], labels: Mapping[str, dict[str, np.ndarray]],
           videos: Sequence[str], task: str) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = [], []
    for v in videos:
        y = labels[v][task]
        keep = y >= 0
        xs.append(np.asarray(features[v], dtype=np.float64)[keep])
        ys.append(y[keep])
    return np.concatenate(xs), np.concatenate(ys)


def _fit_predict(x_tr: np.ndarray, y_tr: np.ndarray, x_te: np.ndarray, seed: int,
                 l2: float) -> np.ndarray:
    mean, std = x_tr.mean(axis=0), x_tr.std(axis=0) + 1e-6
    xt = torch.from_numpy((x_tr - mean) / std)
    yt = torch.from_numpy(y_tr.astype(np.float64))
    pos = float(yt.mean())
    weight = torch.where(yt > 0, 0.5 / pos, 0.5 / (1 - pos))  # class-balanced
    gen = torch.Generator().manual_seed(seed)
    w = (torch.randn(xt.shape[1], generator=gen, dtype=torch.float64) * 0.01).requires_grad_()
    b = torch.zeros((), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=200, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = (weight * torch.nn.functional.binary_cross_entropy_with_logits(
            xt @ w + b, yt, reduction="none")).mean() + l2 * (w * w).sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        logits = torch.from_numpy((x_te - mean) / std) @ w + b
    return (logits > 0).numpy().astype(np.int64)


def _balanced_accuracy(y: np.ndarray, pred: np.ndarray) -> float:
    return float(np.mean([np.mean(pred[y == c] == c) for c in (0, 1)]))
