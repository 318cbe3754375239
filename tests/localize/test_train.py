"""The shared training loop on tiny features whose action clips look different: the loss
falls, shapes hold, and the proposals pass the official-style evaluation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tspipe.data.annotations.model import Annotations, Segment, Video
from tspipe.localize import evaluate_proposals
from tspipe.localize.features import ClipTiming, FeatureSet, VideoFeatures
from tspipe.localize.postprocess import results_json
from tspipe.localize.train import Recipe, build_data, fit, make_model, predict

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def toy(n_videos: int = 12, clips: int = 24, dim: int = 16, seed: int = 0):
    """Clip i of a video covers [i, i + 1) s; action clips carry a +2 offset on half the
    channels. One action per video, 4-12 clips long."""
    rng = np.random.default_rng(seed)
    ann, feats = Annotations(classes=["act"]), FeatureSet(source="toy")
    for k in range(n_videos):
        vid = f"v{k:02d}"
        length = int(rng.integers(4, 13))
        start = int(rng.integers(0, clips - length))
        x = rng.normal(0, 0.3, (clips, dim)).astype(np.float32)
        x[start:start + length, : dim // 2] += 2.0
        t = np.arange(clips, dtype=np.float64)
        feats.videos[vid] = VideoFeatures(vid, vid, x, ClipTiming(t, t + 1.0))
        ann.videos[vid] = Video(vid, duration=float(clips),
                                subset="training" if k % 4 else "validation",
                                segments=[Segment(float(start), float(start + length), "act")])
    return ann, feats


@pytest.mark.parametrize("method", ["bmn", "gtad"])
def test_a_few_epochs_lower_the_loss_and_make_valid_proposals(method):
    ann, feats = toy()
    train = build_data(ann, feats, subset="training", scale=16)
    assert train.features.shape == (9, 16, 16)
    assert train.targets.iou_map.shape == (9, 16, 16) and train.durations.tolist() == [24.0] * 9
    model = make_model(method, feat_dim=16, scale=16)
    if method == "bmn":  # a small BMN keeps this fast; the layer sizes are arguments
        from tspipe.localize.bmn import BMN

        model = BMN(16, 16, hidden_1d=32, hidden_2d=16, hidden_3d=32, num_sample=4)
    else:
        from tspipe.localize.gtad import GTAD

        model = GTAD(16, temporal_scale=16, max_duration=16, channels=64, roi_points=4,
                     context_points=2)
    recipe = Recipe(epochs=15, batch_size=3, lr=5e-3, weight_decay=1e-4, step_size=12)
    history = fit(method, model, train, recipe, device=torch.device("cpu"), seed=0)
    assert len(history) == 15
    assert history[-1].total < 0.75 * history[0].total
    assert history[-1].tem < history[0].tem

    val = build_data(ann, feats, subset="validation", scale=16)
    props = predict(method, model, val, device=torch.device("cpu"), top_k=20)
    assert sorted(props) == val.video_ids
    for p in props.values():
        assert 0 < len(p.scores) <= 20 and np.all(np.diff(p.scores) <= 1e-12)
        assert np.all((p.segments >= 0) & (p.segments <= 24.0))
        assert np.all(p.segments[:, 1] > p.segments[:, 0])
    gt = {"version": "VERSION 1.3", "database": {
        v: {"subset": "validation", "duration": 24.0,
            "annotations": [{"segment": [s.t_start, s.t_end], "label": s.label}
                            for s in ann.videos[v].segments]}
        for v in val.video_ids}}
    result = evaluate_proposals(gt, results_json(props), max_avg_proposals=20)
    assert 0.0 < result.auc <= 1.0


def test_videos_without_features_are_reported_and_left_out(caplog):
    ann, feats = toy(n_videos=8)
    del feats.videos["v01"]
    with caplog.at_level("WARNING"):
        data = build_data(ann, feats, subset="training", scale=8)
    assert "v01" not in data.video_ids and len(data.video_ids) == 5
    assert "v01" in caplog.text and "left out" in caplog.text


def test_small_training_sets_get_enough_steps():
    bmn = Recipe(epochs=9, batch_size=16, lr=1e-3, weight_decay=1e-4, step_size=7)
    # 9 videos make one step an epoch: 100 steps need 100 epochs, the LR step stretched
    # by 100 / 9 (7 -> 78).
    small = bmn.at_least(100, videos=9)
    assert (small.epochs, small.step_size) == (100, 78)
    assert small.epochs * small.steps_per_epoch(9) >= 100
    # 40 videos: 3 steps an epoch, 34 epochs (102 steps).
    assert (bmn.at_least(100, videos=40).epochs, bmn.at_least(100, videos=40).step_size) \
        == (34, 26)
    # ActivityNet's 10,024 videos already make 5,643 steps: the recipe as it is.
    assert bmn.at_least(100, videos=10_024) is bmn
    assert bmn.at_least(0, videos=9) is bmn
