"""Linear probes (tspipe.localize.probe): clip labels from coverage, and probe scores that
tell informative features from noise."""

from __future__ import annotations

import numpy as np
import pytest

from tspipe.localize.probe import coverage, run_probes, targets


def test_coverage_of_the_union_of_segments() -> None:
    t0 = np.array([0.0, 1.0, 2.0, 3.0, 9.0])
    t1 = t0 + 1.0
    # Two overlapping segments (1.5-3.2 and 2.5-4) count once.
    cover = coverage(t0, t1, [(2.5, 4.0), (1.5, 3.2), (5.0, 5.0)])
    assert cover == pytest.approx([0.0, 0.5, 1.0, 1.0, 0.0])
    labels = targets(cover)
    assert labels["action"].tolist() == [0, -1, 1, 1, 0]
    assert labels["boundary"].tolist() == [0, 1, 0, 0, 0]


def _videos(informative: bool, seed: int = 0, n_videos: int = 16):
    rng = np.random.default_rng(seed)
    feats, labels = {}, {}
    for v in range(n_videos):
        t0 = np.arange(40, dtype=np.float64)
        s = float(rng.uniform(5, 15))
        segs = [(s, s + float(rng.uniform(8, 20)))]
        lab = targets(coverage(t0, t0 + 1, segs))
        x = rng.normal(size=(40, 16))
        if informative:
            x[:, 0] += 3.0 * (lab["action"] == 1)
            x[:, 1] += 3.0 * lab["boundary"]
        feats[f"v{v}"], labels[f"v{v}"] = x, lab
    return feats, labels


def test_informative_features_score_high_and_noise_at_chance() -> None:
    good = run_probes(*_videos(True))
    noise = run_probes(*_videos(False))
    for task in ("action", "boundary"):
        assert good[task].balanced_accuracy > 0.9, good
        assert abs(noise[task].balanced_accuracy - 0.5) < 0.15, noise
        assert good[task].clips == noise[task].clips > 0
    assert 0 < good["boundary"].positives < good["boundary"].clips


def test_one_video_is_refused() -> None:
    feats, labels = _videos(True, n_videos=1)
    with pytest.raises(ValueError, match="2 videos"):
        run_probes(feats, labels)
