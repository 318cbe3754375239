"""Proposal AR@AN on hand-computed cases. V ground-truth videos, P proposal rows in the
file, ratio = 100 V / P, a video keeps floor(n ratio) of its n proposals (T kept in all);
curve point j uses floor(n_v f_j) per video with f_j = (j / 100) (100 V / T); x_j = f_j T / V."""

from __future__ import annotations

import pytest
from metrics_helpers import ground_truth, results

from tspipe.localize import PredictionError, evaluate_proposals


def test_two_videos_by_hand() -> None:
    gt = ground_truth({"a": [(0, 10, "A")], "b": [(0, 10, "A"), (50, 60, "A")]})
    pred = results({
        "a": [(0, 10, 0.9, None), (0, 5, 0.8, None)],    # tIoU 1.0, 0.5
        "b": [(48, 60, 0.9, None),                       # with (50, 60): 10/12 = 0.833
              (0, 9, 0.3, None)],                        # with (0, 10): 0.9
        "c": [(0, 10, 1.0, None)],                       # no ground truth: not evaluated
    })
    r = evaluate_proposals(gt, pred)
    # P = 5, ratio = 40: both videos keep 2, T = 4, f_j = j / 2, x_j = j.
    # j = 1: one proposal per video. a: recalled at all 10 thresholds; b's (50, 60) at the
    # 7 thresholds <= 0.80 -> (10 + 7) / 30. j >= 2: b's (0, 10) too, at the 9 thresholds
    # <= "0.90" (0.8999999999999999 <= 0.9) -> (10 + 7 + 9) / 30.
    assert r.avg_recall[0] == pytest.approx(17 / 30, abs=1e-15)
    assert r.avg_recall[1:] == pytest.approx([26 / 30] * 99, abs=1e-15)
    assert r.ar_at == pytest.approx({1: 17 / 30, 5: 26 / 30, 10: 26 / 30, 100: 26 / 30},
                                    abs=1e-15)
    assert r.proposals_per_video == pytest.approx(list(range(1, 101)), abs=1e-12)
    # Trapezoids over x = 1..100: (17/30 + 26/30) / 2 + 98 * 26/30 = 85.65, over x = 100.
    assert r.auc == pytest.approx(0.8565, abs=1e-12)
    assert set(r.to_dict()) == {"ar_at", "auc", "avg_recall", "proposals_per_video"}
    assert r.to_dict()["ar_at"] == {"1": r.avg_recall[0], "5": r.avg_recall[4],
                                    "10": r.avg_recall[9], "100": r.avg_recall[99]}
    assert r.counts.outside_videos == 1


def test_video_without_proposals_is_missed() -> None:
    gt = ground_truth({"a": [(0, 10, "A")], "b": [(0, 10, "A")]})
    r = evaluate_proposals(gt, results({"a": [(0, 10, 0.9, None)]}))
    # P = 1, ratio = 200, a keeps 1, T = 1, f_j = 2j, x_j = j; b: a column of zeros.
    assert r.avg_recall == (0.5,) * 100
    assert r.proposals_per_video == pytest.approx(list(range(1, 101)), abs=1e-12)
    # The curve starts at x = 1: area 0.5 * 99 over x = 100.
    assert r.auc == pytest.approx(0.495, abs=1e-12)
    assert r.counts.videos_without_predictions == 1


def test_tiou_equal_to_threshold_is_recalled() -> None:
    gt = ground_truth({"a": [(0, 10, "A")]})
    r = evaluate_proposals(gt, results({"a": [(0, 5, 0.9, None)]}))  # tIoU 0.5
    assert r.recall[0] == (1.0,) * 100  # at 0.50
    assert all(row == (0.0,) * 100 for row in r.recall[1:])
    assert r.avg_recall == pytest.approx([0.1] * 100, abs=1e-15)


def test_no_one_to_one_matching() -> None:
    # One proposal covers two identical ground truths: both recalled.
    gt = ground_truth({"a": [(0, 10, "A"), (0, 10, "A")]})
    r = evaluate_proposals(gt, results({"a": [(0, 10, 0.9, None)]}))
    assert r.avg_recall == (1.0,) * 100


def test_labels_are_ignored() -> None:
    gt = ground_truth({"a": [(0, 10, "A")]})
    r = evaluate_proposals(gt, results({"a": [(0, 10, 0.9, "anything")]}))
    assert r.ar_at[100] == 1.0


def test_no_proposals_is_an_error() -> None:
    with pytest.raises(PredictionError, match="no proposals"):
        evaluate_proposals(ground_truth({"a": [(0, 10, "A")]}), results({"a": []}))
    # Proposals only for other videos: none kept for a ground-truth video.
    with pytest.raises(PredictionError, match="no proposal of a ground-truth video"):
        evaluate_proposals(ground_truth({"a": [(0, 10, "A")]}),
                           results({"x": [(0, 10, 0.9, None)]}))


def test_metrics_names() -> None:
    r = evaluate_proposals(ground_truth({"a": [(0, 10, "A")]}),
                           results({"a": [(0, 10, 0.9, None)]}))
    assert r.metrics() == {"ar_at_1": 1.0, "ar_at_5": 1.0, "ar_at_10": 1.0, "ar_at_100": 1.0,
                           "auc": pytest.approx(0.99, abs=1e-12)}
