"""Properties of the metrics on random small problems (hypothesis), and agreement with the
straightforward loops of benchmarks/metrics.py. Times lie on a coarse grid and scores take
five values, so that ties in tIoU and in score, duplicates and zero-length segments are
common."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from metrics_helpers import benchmark, ground_truth, results

from tspipe.localize import (
    ACTIVITYNET_TIOU,
    PredictionError,
    evaluate_detection,
    evaluate_proposals,
    load_ground_truth,
    load_predictions,
    segment_tiou,
)

TIME = st.integers(0, 24).map(lambda x: x / 2)
SCORE = st.sampled_from([0.1, 0.2, 0.3, 0.5, 0.9])
THRESHOLDS = st.one_of(
    st.just(ACTIVITYNET_TIOU),
    st.lists(st.sampled_from([0.0, 0.1, 0.25, 1 / 3, 0.5, 0.6, 2 / 3, 0.75, 0.9, 1.0]),
             min_size=1, max_size=4))
SETTINGS = settings(max_examples=150, deadline=None)


def interval(a: float, b: float) -> tuple[float, float]:
    return min(a, b), max(a, b)


@st.composite
def problems(draw, *, labels: bool = True):
    """(ground-truth document, result document): up to 4 videos, 3 classes, a video
    without ground truth among the predictions."""
    classes = ["A", "B", "C"][:draw(st.integers(1, 3))]
    videos = [f"v{i}" for i in range(draw(st.integers(1, 4)))]
    gt = {v: [(*interval(a, b), c) for a, b, c in draw(st.lists(
        st.tuples(TIME, TIME, st.sampled_from(classes)), max_size=5))] for v in videos}
    seen = sorted({c for rows in gt.values() for *_, c in rows})
    assume(seen)
    label = st.sampled_from(seen) if labels else st.none()
    pred = {v: [(*interval(a, b), s, c) for a, b, s, c in draw(st.lists(
        st.tuples(TIME, TIME, SCORE, label), max_size=8))] for v in [*videos, "elsewhere"]}
    return ground_truth(gt), results(pred)


@SETTINGS
@given(problems(), THRESHOLDS)
def test_detection_equals_the_straightforward_loops(problem, thresholds) -> None:
    gt_doc, pred_doc = problem
    result = evaluate_detection(gt_doc, pred_doc, tiou=thresholds)
    truth = load_ground_truth(gt_doc)
    preds = load_predictions(pred_doc, with_labels=True)
    video, label = benchmark().align(truth, preds)
    expected = benchmark().reference_detection(truth, video, label, preds.t_start, preds.t_end,
                                               preds.score, np.asarray(thresholds))
    np.testing.assert_allclose(result.ap_per_class, expected, rtol=0, atol=1e-12)
    ap = np.asarray(result.ap_per_class)
    assert np.all((ap >= 0) & (ap <= 1))
    assert 0 <= result.average_map <= 1
    assert all(0 <= m <= 1 for m in result.map_per_tiou)


@SETTINGS
@given(problems(labels=False), THRESHOLDS, st.sampled_from([1, 2, 3, 100]))
def test_proposals_equal_the_straightforward_loops(problem, thresholds, budget) -> None:
    gt_doc, pred_doc = problem
    truth = load_ground_truth(gt_doc)
    preds = load_predictions(pred_doc, with_labels=False)
    video, _ = benchmark().align(truth, preds)
    try:
        expected, per_video = benchmark().reference_proposals(
            truth, video, preds.t_start, preds.t_end, preds.score, np.asarray(thresholds),
            n_rows=len(preds), max_avg=budget)
    except ZeroDivisionError:  # the official code fails where nothing is kept; tspipe says so
        try:
            evaluate_proposals(gt_doc, pred_doc, tiou=thresholds, max_avg_proposals=budget)
        except PredictionError:
            return
        raise AssertionError("tspipe evaluated what the reference cannot") from None
    result = evaluate_proposals(gt_doc, pred_doc, tiou=thresholds, max_avg_proposals=budget)
    np.testing.assert_array_equal(result.recall, expected)
    np.testing.assert_array_equal(result.proposals_per_video, per_video)
    assert all(0 <= r <= 1 for r in result.avg_recall)
    assert 0 <= result.auc <= 1


@SETTINGS
@given(problems(), THRESHOLDS, st.randoms(use_true_random=False))
def test_perfect_predictions_give_one(problem, thresholds, rng) -> None:
    gt_doc, _ = problem
    pred = {v: [(*entry["segment"], rng.choice([0.1, 0.5, 0.9]), entry["label"])
                for entry in info["annotations"]] for v, info in gt_doc["database"].items()}
    result = evaluate_detection(gt_doc, results(pred), tiou=thresholds)
    assert result.map_per_tiou == (1.0,) * len(thresholds)
    assert result.average_map == 1.0


@SETTINGS
@given(problems(), THRESHOLDS)
def test_a_false_positive_below_every_true_positive_never_raises_ap(problem, thresholds) -> None:
    gt_doc, pred_doc = problem
    before = np.asarray(evaluate_detection(gt_doc, pred_doc, tiou=thresholds).ap_per_class)
    classes = sorted({e["label"] for v in gt_doc["database"].values() for e in v["annotations"]})
    for label in classes:  # in a video without ground truth: a false positive for sure
        pred_doc["results"].setdefault("nowhere", []).append(
            {"segment": [0, 1], "score": 0.01, "label": label})
        after = np.asarray(evaluate_detection(gt_doc, pred_doc, tiou=thresholds).ap_per_class)
        assert np.all(after <= before)


@SETTINGS
@given(st.lists(st.tuples(TIME, TIME, TIME, TIME), min_size=1, max_size=8), THRESHOLDS,
       st.randoms(use_true_random=False))
def test_shuffled_scores_never_beat_sorted_truth(pairs, thresholds, rng) -> None:
    # One ground truth and one prediction per video: the TP set at a threshold does not
    # depend on the order, only the ranking does. Scored by their tIoU, every TP ranks
    # above every FP: AP = recall, the best any ranking can do.
    gts = {f"v{i}": [(*interval(a, b), "A")] for i, (a, b, _, _) in enumerate(pairs)}
    segments = [interval(c, d) for _, _, c, d in pairs]
    tious = [float(np.nan_to_num(segment_tiou(*s, *gts[f"v{i}"][0][:2]), nan=1.0))
             for i, s in enumerate(segments)]
    shuffled = tious.copy()
    rng.shuffle(shuffled)
    best = evaluate_detection(ground_truth(gts), results(
        {f"v{i}": [(*s, t, "A")] for i, (s, t) in enumerate(zip(segments, tious, strict=True))}),
        tiou=thresholds)
    other = evaluate_detection(ground_truth(gts), results(
        {f"v{i}": [(*s, t, "A")] for i, (s, t) in enumerate(zip(segments, shuffled,
                                                                    strict=True))}),
        tiou=thresholds)
    assert all(o <= b for o, b in zip(other.map_per_tiou, best.map_per_tiou, strict=True))
    n = len(pairs)
    hits = [sum(1 for t in tious if not t < threshold) for threshold in thresholds]
    assert best.map_per_tiou == pytest.approx([h / n for h in hits], abs=1e-12)
