"""A video-level action classifier on the same features, for detection labels.

ActivityNet detection with BMN / G-TAD pairs class-agnostic proposals with video-level
class scores (the reference uses the CUHK classifier's; :func:`~tspipe.localize.
postprocess.load_class_scores` reads such a file). This one is trained on the feature
version itself, so that a version is judged with nothing from outside: each video's clip
features ``(T, C)`` are pooled to ``[mean, max]`` ``(2C,)``, standardized with the
training set's statistics, and a linear layer scores every class (sigmoid: a video may
hold several classes), trained with binary cross-entropy and Adam.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from tspipe.errors import StageError


def pooled(features: np.ndarray) -> np.ndarray:
    """``(T, C) -> (2C,)``: mean and max over time."""
    x = np.asarray(features, dtype=np.float32)
    return np.concatenate([x.mean(axis=0), x.max(axis=0)])


@dataclass
class VideoClassifier:
    classes: list[str]
    mean: np.ndarray
    std: np.ndarray
    linear: nn.Linear

    def scores(self, features: Mapping[str, np.ndarray]) -> dict[str, dict[str, float]]:
        """Video id -> {class: probability} for each video's ``(T, C)`` features."""
        if not features:
            return {}
        ids = sorted(features)
        x = np.stack([pooled(features[v]) for v in ids])
        with torch.inference_mode():
            p = torch.sigmoid(self.linear(torch.from_numpy((x - self.mean) / self.std)))
        return {v: dict(zip(self.classes, map(float, row), strict=True))
                for v, row in zip(ids, p.numpy(), strict=True)}


def train_classifier(features: Mapping[str, np.ndarray], labels: Mapping[str, Sequence[str]],
                     classes: Sequence[str], *, epochs: int = 200, lr: float = 1e-2,
                     weight_decay: float = 1e-4, seed: int = 0) -> VideoClassifier:
    """Fit on the videos present in both ``features`` and ``labels`` (full batch)."""
    ids = sorted(set(features) & set(labels))
    if not ids:
        raise StageError("video classifier: no training video has both features and labels")
    index = {c: i for i, c in enumerate(classes)}
    x = np.stack([pooled(features[v]) for v in ids])
    y = np.zeros((len(ids), len(classes)), dtype=np.float32)
    for row, vid in enumerate(ids):
        for label in labels[vid]:
            y[row, index[label]] = 1.0
    mean, std = x.mean(axis=0), x.std(axis=0) + 1e-6
    torch.manual_seed(seed)
    linear = nn.Linear(x.shape[1], len(classes))
    opt = torch.optim.Adam(linear.parameters(), lr=lr, weight_decay=weight_decay)
    xt, yt = torch.from_numpy((x - mean) / std), torch.from_numpy(y)
    loss_fn = nn.BCEWithLogitsLoss()
    for _ in range(epochs):
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(linear(xt), yt)
        loss.backward()
        opt.step()
    return VideoClassifier(list(classes), mean, std, linear.eval())
