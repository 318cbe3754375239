"""Detection mAP on hand-computed cases. Every video is 100 s long; ActivityNet thresholds
0.50, 0.55, ..., 0.95 unless said otherwise. AP = sum over true positives of
(recall step) x (best precision at or after it)."""

from __future__ import annotations

import pytest
from metrics_helpers import ground_truth, results

from tspipe.localize import (
    ACTIVITYNET_TIOU,
    THUMOS14_TIOU,
    PredictionError,
    evaluate_detection,
    segment_tiou,
)


def ap_row(result, label="A"):
    """AP of one class at every threshold."""
    c = result.classes.index(label)
    return [row[c] for row in result.ap_per_class]


def test_segment_tiou_values() -> None:
    assert segment_tiou(0.0, 10.0, 0.0, 10.0) == 1.0
    assert segment_tiou(0.0, 10.0, 5.0, 15.0) == 5 / 15  # 5 s shared, 15 s covered
    assert segment_tiou(0.0, 10.0, 20.0, 30.0) == 0.0  # apart: intersection clipped at 0
    assert segment_tiou(21.0, 30.0, 20.0, 30.0) == 0.9


def test_true_false_true_gives_five_sixths() -> None:
    gt = ground_truth({"a": [(0, 10, "A"), (20, 30, "A")]})
    pred = results({"a": [(0, 10, 0.9, "A"),     # tIoU 1: TP
                          (40, 50, 0.8, "A"),    # no overlap: FP
                          (21, 30, 0.7, "A")]})  # tIoU 0.9: TP up to "0.90", FP at 0.95
    r = evaluate_detection(gt, pred)
    # TP, FP, TP: precision 1, 1/2, 2/3 at recall 1/2, 1/2, 1 -> 1/2 * 1 + 1/2 * 2/3.
    assert r.map_per_tiou[:9] == pytest.approx([5 / 6] * 9, abs=1e-15)
    assert r.map_per_tiou[9] == 0.5  # TP, FP, FP
    assert r.average_map == pytest.approx((9 * 5 / 6 + 0.5) / 10, abs=1e-15)  # 0.8
    assert r.to_dict() == {"tiou_thresholds": list(ACTIVITYNET_TIOU),
                           "map_per_tiou": list(r.map_per_tiou), "average_map": r.average_map}


def test_duplicate_detection_is_a_false_positive() -> None:
    gt = ground_truth({"a": [(0, 10, "A"), (50, 60, "A")]})
    pred = results({"a": [(0, 10, 0.9, "A"), (0, 10, 0.8, "A"), (50, 60, 0.7, "A")]})
    # The copy finds its ground truth taken: TP, FP, TP -> 1/2 + 1/2 * 2/3 everywhere.
    assert evaluate_detection(gt, pred).map_per_tiou == pytest.approx([5 / 6] * 10, abs=1e-15)


@pytest.mark.parametrize(("entries", "expected"), [
    # Equal scores: the later entry ranks first (quirk 5). Here the TP is later: TP, FP.
    ([(50, 60, 0.5, "A"), (0, 10, 0.5, "A")], 1.0),
    # The FP is later: FP, TP -> precision 1/2 at recall 1.
    ([(0, 10, 0.5, "A"), (50, 60, 0.5, "A")], 0.5),
])
def test_score_ties_rank_the_later_entry_first(entries, expected) -> None:
    r = evaluate_detection(ground_truth({"a": [(0, 10, "A")]}), results({"a": entries}))
    assert r.map_per_tiou == pytest.approx([expected] * 10, abs=0)


def test_empty_prediction_list_and_video_without_annotations() -> None:
    gt = ground_truth({"a": [(0, 10, "A")], "b": []})
    pred = results({"a": [(0, 10, 0.9, "A")],
                    "b": [(0, 10, 0.95, "A")],  # b has no ground truth: a false positive
                    "c": []})
    r = evaluate_detection(gt, pred)
    assert r.map_per_tiou == pytest.approx([0.5] * 10, abs=0)  # FP, TP
    assert r.counts.ground_truth_videos == 1  # b has no segment: no ground-truth video
    assert (r.counts.outside_videos, r.counts.outside_predictions) == (1, 1)
    assert r.counts.predictions == 2


def test_ground_truth_video_without_predictions_costs_recall() -> None:
    gt = ground_truth({"a": [(0, 10, "A")], "b": [(0, 10, "A")]})
    r = evaluate_detection(gt, results({"a": [(0, 10, 0.9, "A")]}))
    assert r.map_per_tiou == pytest.approx([0.5] * 10, abs=0)  # recall 1/2 at precision 1
    assert r.counts.videos_without_predictions == 1


def test_predictions_past_the_video_end_are_not_clipped() -> None:
    gt = ground_truth({"a": [(90, 100, "A")]})  # the video is 100 s long
    r = evaluate_detection(gt, results({"a": [(90, 110, 0.9, "A")]}))
    # tIoU = 10 / 20 = 0.5 (clipped to 100 s it would be 1.0): a hit at 0.50 only.
    assert r.map_per_tiou == pytest.approx([1.0] + [0.0] * 9, abs=0)
    assert r.average_map == pytest.approx(0.1, abs=1e-15)


def test_highest_tiou_free_ground_truth_is_taken_first() -> None:
    gt = ground_truth({"a": [(0, 10, "A"), (2, 12, "A")]})  # G1, G2
    pred = results({"a": [
        (2, 11, 0.9, "A"),   # G1: 8/11 = 0.727, G2: 9/10 = 0.9 -> takes G2 up to "0.90"
        (2, 12, 0.8, "A"),   # G2: 1.0 (taken), G1: 8/12 = 0.667 -> G1 while t <= 0.65
    ]})
    r = evaluate_detection(gt, pred)
    # t <= 0.65: TP, TP -> 1. 0.70..0.90: TP, FP -> 1/2. 0.95: p1 misses G2, p2 takes it:
    # FP, TP -> precision 1/2 at recall 1/2 -> 1/4.
    assert r.map_per_tiou == pytest.approx([1] * 4 + [0.5] * 5 + [0.25], abs=0)
    assert r.average_map == pytest.approx(0.675, abs=1e-15)


def test_each_ground_truth_is_matched_once_per_threshold() -> None:
    gt = ground_truth({"a": [(0, 10, "A")]})
    pred = results({"a": [(0, 6, 0.9, "A"),   # tIoU 0.6
                          (0, 9, 0.8, "A")]})  # tIoU 0.9
    r = evaluate_detection(gt, pred)
    # t <= 0.60: p1 takes it, p2 is a duplicate: TP, FP -> 1. 0.65..0.90: p1 misses, so the
    # ground truth is free for p2 at those thresholds: FP, TP -> 1/2. 0.95: FP, FP -> 0.
    assert r.map_per_tiou == pytest.approx([1] * 3 + [0.5] * 6 + [0.0], abs=0)


def test_map_averages_every_class_with_ground_truth() -> None:
    gt = ground_truth({"a": [(0, 10, "A"), (20, 30, "B")]})
    r = evaluate_detection(gt, results({"a": [(0, 10, 0.9, "A")]}))
    assert r.classes == ("A", "B")  # first-seen order
    assert ap_row(r, "A") == [1.0] * 10
    assert ap_row(r, "B") == [0.0] * 10  # no predictions: AP 0, still in the mean
    assert r.map_per_tiou == pytest.approx([0.5] * 10, abs=0)


def test_classes_of_other_subsets_do_not_count() -> None:
    gt = ground_truth({"a": [(0, 10, "A")]}, training={"t": [(0, 10, "B")]})
    r = evaluate_detection(gt, results({"a": [(0, 10, 0.9, "A")]}))
    assert r.classes == ("A",)
    assert r.average_map == 1.0
    r = evaluate_detection(gt, results({"t": [(0, 10, 0.9, "B")]}), subset="training")
    assert r.classes == ("B",)
    assert r.average_map == 1.0


def test_no_predictions_at_all() -> None:
    r = evaluate_detection(ground_truth({"a": [(0, 10, "A")]}), results({}))
    assert r.map_per_tiou == (0.0,) * 10
    assert r.counts.predictions == 0


def test_thumos14_thresholds_and_any_list() -> None:
    gt = ground_truth({"a": [(0, 10, "A")]})
    pred = results({"a": [(0, 6, 0.9, "A")]})  # tIoU 0.6
    r = evaluate_detection(gt, pred, tiou=THUMOS14_TIOU)
    assert r.tiou_thresholds == (0.3, 0.4, 0.5, 0.6, 0.7)
    assert r.map_per_tiou == (1.0, 1.0, 1.0, 1.0, 0.0)  # 0.6 >= 0.6 is a hit
    r = evaluate_detection(gt, pred, tiou=[0.1, 0.65])
    assert r.map_per_tiou == (1.0, 0.0)
    assert r.metrics() == {"average_map": 0.5, "map_at_0.10": 1.0, "map_at_0.65": 0.0}


def test_unknown_label_names_video_and_entry() -> None:
    gt = ground_truth({"a": [(0, 10, "A")]}, training={"t": [(0, 10, "B")]})
    pred = results({"a": [(0, 10, 0.9, "A"), (0, 10, 0.8, "B")]})  # B: training only
    with pytest.raises(PredictionError, match=r"video 'a': entry 1: field 'label': unknown "
                       r"label 'B'"):
        evaluate_detection(gt, pred)


@pytest.mark.parametrize("tiou", [[], [1.5], [-0.1], [[0.5]]])
def test_bad_thresholds(tiou) -> None:
    from tspipe.localize import EvaluationError

    with pytest.raises(EvaluationError, match="tIoU"):
        evaluate_detection(ground_truth({"a": [(0, 10, "A")]}), results({}), tiou=tiou)
