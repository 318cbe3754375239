"""The video-level classifier: pooling, and that it learns separable classes."""

from __future__ import annotations

import numpy as np
import pytest

from tspipe.errors import StageError
from tspipe.localize.classifier import pooled, train_classifier


def test_pooled_is_mean_then_max():
    x = np.array([[1.0, -2.0], [3.0, 0.0]], dtype=np.float32)
    assert pooled(x).tolist() == [2.0, -1.0, 3.0, 0.0]


def test_learns_which_channels_mark_each_class():
    rng = np.random.default_rng(0)
    classes = ["jump", "spin", "wave"]

    def video(label_idx: int) -> np.ndarray:
        x = rng.normal(0, 1, (20, 9)).astype(np.float32)
        x[5:12, 3 * label_idx:3 * label_idx + 3] += 3.0  # the action's channels light up
        return x

    train = {f"t{i}": video(i % 3) for i in range(30)}
    labels = {f"t{i}": [classes[i % 3]] for i in range(30)}
    clf = train_classifier(train, labels, classes, seed=0)
    test = {f"e{i}": video(i % 3) for i in range(12)}
    scores = clf.scores(test)
    top = [max(scores[f"e{i}"], key=scores[f"e{i}"].get) for i in range(12)]
    assert top == [classes[i % 3] for i in range(12)]
    assert all(0.0 < p < 1.0 for s in scores.values() for p in s.values())


def test_no_overlap_between_features_and_labels_is_an_error():
    with pytest.raises(StageError, match="no training video"):
        train_classifier({"a": np.zeros((3, 2))}, {"b": ["x"]}, ["x"])
