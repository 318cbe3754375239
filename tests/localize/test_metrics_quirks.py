"""The official evaluation's quirks that tspipe reproduces, one test each, numbered as in
the docstring of ``tspipe.localize.metrics``."""

from __future__ import annotations

import logging

import pytest
from metrics_helpers import ground_truth, results

from tspipe.localize import (
    ACTIVITYNET_TIOU,
    PredictionError,
    evaluate_detection,
    evaluate_proposals,
    segment_tiou,
)


# 1. Zero-length on zero-length: 0/0 = NaN.
def test_1_zero_length_detection_on_zero_length_ground_truth_is_a_hit() -> None:
    assert segment_tiou(5.0, 5.0, 5.0, 5.0) != segment_tiou(5.0, 5.0, 5.0, 5.0)  # NaN
    gt = ground_truth({"a": [(5, 5, "A")]})
    # NaN sorts first and is not < t: a hit at every threshold, wherever it lies.
    for where in [(5, 5), (7, 7)]:
        r = evaluate_detection(gt, results({"a": [(*where, 0.9, "A")]}))
        assert r.map_per_tiou == (1.0,) * 10
    # Not zero-length on both sides: tIoU 0 (intersection 0, union 2 or 10).
    assert evaluate_detection(gt, results({"a": [(4, 6, 0.9, "A")]})).average_map == 0.0
    gt = ground_truth({"a": [(0, 10, "A")]})
    assert evaluate_detection(gt, results({"a": [(5, 5, 0.9, "A")]})).average_map == 0.0


def test_1_nan_walk_takes_the_zero_length_ground_truth_first() -> None:
    gt = ground_truth({"a": [(5, 5, "A"), (20, 30, "A")]})
    pred = results({"a": [(5, 5, 0.9, "A"),     # NaN with (5, 5): takes it
                          (7, 7, 0.8, "A"),     # NaN with (5, 5), taken; 0 with (20, 30): FP
                          (20, 30, 0.7, "A")]})  # TP
    r = evaluate_detection(gt, pred)
    assert r.map_per_tiou == pytest.approx([1 / 2 + 1 / 2 * 2 / 3] * 10, abs=1e-15)


def test_1_zero_length_proposal_is_not_recalled() -> None:
    # In proposals the test is tIoU >= t, false for NaN.
    r = evaluate_proposals(ground_truth({"a": [(5, 5, "A")]}),
                           results({"a": [(5, 5, 0.9, None)]}))
    assert r.avg_recall == (0.0,) * 100


# 2. Thresholds are np.linspace floats, and tIoU == threshold is a hit.
def test_2_linspace_threshold_090_is_0_8999999999999999() -> None:
    assert ACTIVITYNET_TIOU[8] == 0.8999999999999999
    tiou = segment_tiou(0.1, 1.9, 0.0, 2.0)  # 1.7999999999999998 / 2
    assert tiou == 0.8999999999999999
    gt = ground_truth({"a": [(0, 2, "A")]})
    pred = results({"a": [(0.1, 1.9, 0.9, "A")]})
    r = evaluate_detection(gt, pred)
    assert r.map_per_tiou[7:] == (1.0, 1.0, 0.0)  # a hit at "0.90"
    assert evaluate_detection(gt, pred, tiou=[0.9]).map_per_tiou == (0.0,)  # not at 0.9
    r = evaluate_proposals(gt, results({"a": [(0.1, 1.9, 0.9, None)]}))
    assert [row[0] for row in r.recall] == [1.0] * 9 + [0.0]


# 3. Segments are evaluated as written.
def test_3_proposals_are_not_clipped_either() -> None:
    gt = ground_truth({"a": [(0, 10, "A")]})
    r = evaluate_proposals(gt, results({"a": [(-5, 10, 0.9, None)]}))  # tIoU 10/15
    assert [row[0] for row in r.recall] == [1.0] * 4 + [0.0] * 6  # hits up to 0.65


# 4. Predictions for videos without ground truth in the subset.
def test_4_outside_detections_are_false_positives(caplog) -> None:
    gt = ground_truth({"a": [(0, 10, "A")]}, training={"t": [(0, 10, "A")]})
    pred = results({"a": [(0, 10, 0.5, "A")], "t": [(0, 10, 0.9, "A")],
                    "unknown": [(0, 10, 0.8, "A")]})
    with caplog.at_level(logging.WARNING, logger="tspipe.localize"):
        r = evaluate_detection(gt, pred)
    assert r.map_per_tiou == pytest.approx([1 / 3] * 10, abs=1e-15)  # FP, FP, TP
    assert (r.counts.outside_videos, r.counts.outside_predictions) == (2, 2)
    assert "2 predictions in 2 videos without ground truth in subset 'validation'" in caplog.text


def test_4_outside_proposals_count_in_the_budget() -> None:
    gt = ground_truth({"a": [(0, 10, "A")], "b": [(50, 60, "A")]})
    videos = {
        # Ten proposals each; the second best is the ground truth, the rest miss.
        "a": [(20, 30, 0.9, None), (0, 10, 0.8, None)]
        + [(30 + k, 35 + k, 0.1, None) for k in range(8)],
        "b": [(70, 80, 0.9, None), (50, 60, 0.8, None)]
        + [(80 + k, 85 + k, 0.1, None) for k in range(8)],
    }
    # Budget 2 per video. Alone: P = 20, ratio = 2 * 2 / 20 = 0.2, each keeps 2, T = 4,
    # f_j = j / 100: j = 100 uses both -> recall 1 at AR@100.
    alone = evaluate_proposals(gt, results(videos), max_avg_proposals=2)
    assert alone.ar_at[100] == 1.0
    assert alone.avg_recall[98] == 0.0  # j = 99: floor(2 * 0.99) = 1 proposal
    # Five rows for a video without ground truth: P = 25, ratio = 0.16, each keeps
    # floor(1.6) = 1 (the miss): nothing is ever recalled.
    videos["elsewhere"] = [(0, 10, 0.5, None)] * 5
    crowded = evaluate_proposals(gt, results(videos), max_avg_proposals=2)
    assert crowded.avg_recall == (0.0,) * 100


# 5. Ties: a stable sort, reversed (classic numpy's order for small arrays).
def test_5_equal_tiou_tries_the_later_ground_truth_first() -> None:
    gt = ground_truth({"a": [(0, 10, "A"), (5, 15, "A")]})  # G1, G2
    pred = results({"a": [(2.5, 12.5, 0.9, "A"),   # 7.5 / 12.5 = 0.6 with both: takes G2
                          (0, 10, 0.8, "A")]})     # G1: 1.0 -> TP
    r = evaluate_detection(gt, pred)
    # t <= 0.60: TP, TP -> 1 (had p1 taken G1, p2 would find G2 at 1/3: TP, FP -> 1/2).
    # t >= 0.65: p1 misses, p2 takes G1: FP, TP -> precision 1/2 at recall 1/2 -> 1/4.
    assert r.map_per_tiou == pytest.approx([1.0] * 3 + [0.25] * 7, abs=0)


@pytest.mark.parametrize(("first", "ar1"), [((50, 60), 1.0), ((0, 10), 0.0)])
def test_5_equal_proposal_scores_rank_the_later_first(first, ar1) -> None:
    gt = ground_truth({"a": [(0, 10, "A")]})
    other = (50, 60) if first == (0, 10) else (0, 10)
    r = evaluate_proposals(gt, results({"a": [(*first, 0.5, None), (*other, 0.5, None)]}))
    # P = 2: both kept, f_1 = 1/2: the first point uses 1 proposal, the later entry.
    assert r.ar_at[1] == ar1
    assert r.ar_at[5] == 1.0


# 6. Classes come from the kept ground truth; others are errors.
def test_6_label_without_ground_truth_in_the_subset_is_an_error() -> None:
    gt = ground_truth({"a": [(0, 10, "A")]}, training={"t": [(0, 10, "B")]})
    # Even for a video outside the subset: the official reader looks every label up.
    with pytest.raises(PredictionError, match="video 't': entry 0: field 'label'"):
        evaluate_detection(gt, results({"t": [(0, 10, 0.9, "B")]}))


# 7. Floors of float products, in the official order.
def test_7_point_29_of_100_uses_28_proposals() -> None:
    gt = ground_truth({"a": [(0, 10, "A")]})
    # 100 proposals; only the 29th best hits.
    rows = [(20 + k * 0.5, 21 + k * 0.5, 1 - k / 100, None) for k in range(100)]
    rows[28] = (0, 10, 1 - 28 / 100, None)
    r = evaluate_proposals(gt, results({"a": rows}))
    # f_29 = 0.29 and 100 * 0.29 = 28.999999999999996 -> 28 proposals at point 29.
    assert 100 * 0.29 < 29
    assert r.avg_recall[27] == 0.0
    assert r.avg_recall[28] == 0.0  # exact arithmetic would give 1.0 here
    assert r.avg_recall[29] == 1.0


# 8. Video ids as given; the blocked list.
def test_8_v_prefixed_ids_are_other_videos(caplog) -> None:
    gt = ground_truth({"JDg--pjY5gg": [(0, 10, "A")]})
    with caplog.at_level(logging.WARNING, logger="tspipe.localize"):
        r = evaluate_detection(gt, results({"v_JDg--pjY5gg": [(0, 10, 0.9, "A")]}))
    assert r.average_map == 0.0
    assert "match a ground-truth video without a 'v_' prefix" in caplog.text


def test_8_blocked_videos_leave_ground_truth_and_predictions() -> None:
    gt = ground_truth({"a": [(0, 10, "A")], "b": [(0, 10, "A")]})
    pred = results({"a": [(0, 10, 0.9, "A")], "b": [(50, 60, 0.95, "A")]})
    assert evaluate_detection(gt, pred).average_map == 0.25  # FP, TP; recall 1/2
    r = evaluate_detection(gt, pred, blocked=["b"])
    assert r.average_map == 1.0
    assert (r.counts.ground_truth_videos, r.counts.blocked_videos) == (1, 1)
    # A blocked video's entries are not even checked.
    pred["results"]["b"] = [{"segment": [1, 0], "score": "bad"}]
    assert evaluate_detection(gt, pred, blocked=["b"]).average_map == 1.0
    r = evaluate_proposals(gt, results({"a": [(0, 10, 0.9, None)], "b": [(0, 10, 0.9, None)]}),
                           blocked=["b"])
    assert r.avg_recall == (1.0,) * 100
