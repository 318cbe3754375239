"""Post-processing: soft-NMS presets on hand-computed cases, proposals from both map
conventions, seconds, classes, and a result file the evaluator reads."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from tspipe.localize import load_predictions, segment_tiou
from tspipe.localize.postprocess import (
    Detections,
    Proposals,
    bmn_soft_nms,
    bmn_threshold,
    boundary_candidates,
    combine_with_classes,
    gtad_soft_nms,
    load_class_scores,
    proposals_from_maps,
    results_json,
    soft_nms,
    to_seconds,
)

# A = [0, 0.4] 0.9, B = [0, 0.3] 0.8, C = [0.2, 0.6] 0.5 (normalized)
# tIoU(A, B) = 0.3 / 0.4 = 0.75; tIoU(A, C) = 0.2 / 0.6 = 1/3; tIoU(C, B) = 0.1 / 0.6 = 1/6
SEGMENTS = [[0.0, 0.4], [0.0, 0.3], [0.2, 0.6]]
SCORES = [0.9, 0.8, 0.5]


def test_bmn_soft_nms_hand_computed() -> None:
    # keep A (width 0.4: threshold 0.5 + 0.4 * 0.4 = 0.66). B: 0.75 > 0.66 decays to
    # 0.8 * exp(-0.75^2 / 0.4) = 0.8 * exp(-1.40625) = 0.196048; C: 1/3 <= 0.66 stays 0.5.
    # keep C (0.5 > 0.196; threshold 0.66 again): tIoU(C, B) = 1/6 stays. Then B.
    out = bmn_soft_nms(SEGMENTS, SCORES)
    np.testing.assert_array_equal(out.segments, [[0.0, 0.4], [0.2, 0.6], [0.0, 0.3]])
    np.testing.assert_allclose(out.scores, [0.9, 0.5, 0.8 * math.exp(-1.40625)])
    assert out.scores[2] == pytest.approx(0.196048, abs=1e-6)


def test_gtad_soft_nms_hand_computed() -> None:
    # keep A; every overlap decays by exp(-tIoU^2 / 0.8):
    # B: 0.8 * exp(-0.5625 / 0.8) = 0.8 * 0.495036 = 0.396029
    # C: 0.5 * exp(-(1/9) / 0.8) = 0.5 * 0.870325 = 0.435162  -> C is kept next,
    # B: 0.396029 * exp(-(1/36) / 0.8) = 0.396029 * 0.965874 = 0.382514
    out = gtad_soft_nms(SEGMENTS, SCORES)
    np.testing.assert_array_equal(out.segments, [[0.0, 0.4], [0.2, 0.6], [0.0, 0.3]])
    b = 0.8 * math.exp(-0.5625 / 0.8)
    c = 0.5 * math.exp(-(1 / 9) / 0.8)
    np.testing.assert_allclose(out.scores, [0.9, c, b * math.exp(-(1 / 36) / 0.8)])
    np.testing.assert_allclose(out.scores, [0.9, 0.435162, 0.382514], atol=1e-6)


def test_adaptive_threshold() -> None:
    assert bmn_threshold(0.0) == 0.5
    assert bmn_threshold(0.25) == pytest.approx(0.6)
    assert bmn_threshold(1.0) == pytest.approx(0.9)
    # tIoU([0, 1], [0, 0.8]) = 0.8 <= 0.9 (wide top): no decay
    wide = bmn_soft_nms([[0.0, 1.0], [0.0, 0.8]], [0.9, 0.5])
    np.testing.assert_allclose(wide.scores, [0.9, 0.5])
    # tIoU([0, 0.1], [0, 0.08]) = 0.8 > 0.5 + 0.4 * 0.1 = 0.54 (narrow top): decays
    narrow = bmn_soft_nms([[0.0, 0.1], [0.0, 0.08]], [0.9, 0.5])
    np.testing.assert_allclose(narrow.scores, [0.9, 0.5 * math.exp(-0.64 / 0.4)])


def test_soft_nms_top_k_threshold_none_and_ties() -> None:
    out = soft_nms(SEGMENTS, SCORES, alpha=0.8, top_k=2, threshold=None)
    np.testing.assert_allclose(out.scores, gtad_soft_nms(SEGMENTS, SCORES).scores[:2])
    # a fixed threshold of 0.7: only B (0.75) decays after A
    fixed = soft_nms(SEGMENTS, SCORES, alpha=0.4, top_k=10, threshold=0.7)
    np.testing.assert_allclose(fixed.scores, [0.9, 0.5, 0.8 * math.exp(-1.40625)])
    # equal scores, no overlap: the first one is kept first
    tie = soft_nms([[0.5, 0.6], [0.1, 0.2]], [0.3, 0.3], alpha=0.4, top_k=5)
    np.testing.assert_array_equal(tie.segments, [[0.5, 0.6], [0.1, 0.2]])
    empty = soft_nms(np.zeros((0, 2)), [], alpha=0.4, top_k=5)
    assert empty.segments.shape == (0, 2) and empty.scores.shape == (0,)


def _soft_nms_loop(segments, scores, *, alpha, top_k, threshold):
    """Soft-NMS written the obvious way: gather the remaining rows, decay, scatter back."""
    seg = np.asarray(segments, dtype=np.float64).reshape(-1, 2)
    score = np.array(scores, dtype=np.float64)
    remaining, kept, kept_scores = np.arange(len(seg)), [], []
    while remaining.size and len(kept) < top_k:
        pos = int(np.argmax(score[remaining]))
        best = int(remaining[pos])
        kept.append(best)
        kept_scores.append(float(score[best]))
        remaining = np.delete(remaining, pos)
        limit = threshold(seg[best, 1] - seg[best, 0]) if callable(threshold) else threshold
        tiou = segment_tiou(seg[best, 0], seg[best, 1], seg[remaining, 0], seg[remaining, 1])
        hit = tiou > limit
        score[remaining[hit]] *= np.exp(-np.square(tiou[hit]) / alpha)
    return seg[kept], np.array(kept_scores)


@pytest.mark.parametrize("convention", ["start_end", "duration_start"])
def test_soft_nms_equals_the_gather_scatter_loop_bit_for_bit(convention) -> None:
    rng = np.random.default_rng(3)
    cases = []
    for rounded in (False, True):  # rounded maps: many equal scores and segments
        maps = rng.random((2, 20, 20))
        maps = np.round(maps, 1) if rounded else maps
        cand = proposals_from_maps(rng.random(20), rng.random(20), maps[0], maps[1],
                                   convention=convention,
                                   scoring="bmn" if convention == "start_end" else "gtad")
        cases.append((cand.segments, cand.scores))
    cases += [([[0, 1], [0, 1], [0.5, 0.5], [0.5, 0.5]], [np.nan, 1.0, 2.0, np.nan]),
              ([[0, 1], [0, 2], [1, 3]], [-np.inf, 0.5, -np.inf]), ([[0, 1], [0, 2]], [0, 0])]
    for segments, scores in cases:
        for alpha, top_k, threshold in ((0.4, 100, bmn_threshold), (0.8, 100, 0.0),
                                        (0.8, 7, 0.3), (0.8, 1000, 0.0)):
            out = soft_nms(segments, scores, alpha=alpha, top_k=top_k, threshold=threshold)
            seg, sc = _soft_nms_loop(segments, scores, alpha=alpha, top_k=top_k,
                                     threshold=threshold)
            np.testing.assert_array_equal(out.segments, seg)
            np.testing.assert_array_equal(out.scores, sc)  # equal, NaN where NaN


def test_bmn_proposals_from_start_end_map() -> None:
    # T = 3: cells (i, j) with i <= j and j + 1 < 3: (0,0) [0,1/3], (0,1) [0,2/3],
    # (1,1) [1/3,2/3]; score = start[i] * end[j+1] * cls * reg
    start, end = [0.9, 0.2, 0.1], [0.1, 0.3, 0.8]
    cls = np.array([[0.5, 0.6, 0.7], [0.0, 0.4, 0.9], [0.0, 0.0, 1.0]])
    reg = np.array([[1.0, 0.5, 1.0], [0.0, 0.5, 1.0], [0.0, 0.0, 1.0]])
    out = proposals_from_maps(start, end, reg, cls, convention="start_end")
    # (0,1): 0.9 * 0.8 * 0.6 * 0.5 = 0.216; (0,0): 0.9 * 0.3 * 0.5 * 1 = 0.135;
    # (1,1): 0.2 * 0.8 * 0.4 * 0.5 = 0.032
    np.testing.assert_allclose(out.scores, [0.216, 0.135, 0.032])
    np.testing.assert_allclose(out.segments, [[0, 2 / 3], [0, 1 / 3], [1 / 3, 2 / 3]])
    # the same maps as (duration, start): map[d, s] = old[s, s + d]
    dur = np.zeros((3, 3))
    dur_cls = np.zeros((3, 3))
    for s in range(3):
        for d in range(3 - s):
            dur[d, s], dur_cls[d, s] = reg[s, s + d], cls[s, s + d]
    same = proposals_from_maps(start, end, dur, dur_cls, convention="duration_start")
    np.testing.assert_array_equal(same.segments, out.segments)
    np.testing.assert_array_equal(same.scores, out.scores)


def test_boundary_filter_and_gtad_scoring() -> None:
    # 0.5 * max = 0.4: start keeps 0 (0.8) and 2 (a peak 0.3 > 0.1, 0.2); end keeps 2
    assert boundary_candidates([0.8, 0.1, 0.3, 0.2]).tolist() == [True, False, True, False]
    start, end = [0.8, 0.1, 0.3, 0.2], [0.1, 0.1, 0.9, 0.1]
    ones = np.ones((4, 4))
    kept = proposals_from_maps(start, end, ones, ones, convention="start_end",
                               boundary_filter=True)
    np.testing.assert_allclose(kept.segments, [[0.0, 0.5]])  # start 0 -> end 2; 2 -> 2 is empty
    # G-TAD: cls * reg, proposals may end at T; (D=2, T=3) map
    reg = np.array([[0.5, 0.5, 0.5], [1.0, 0.2, 0.9]])
    cls = np.array([[0.2, 0.4, 0.6], [0.5, 0.5, 0.5]])
    out = proposals_from_maps(None, None, reg, cls, convention="duration_start",
                              scoring="gtad")
    # d=1: [0,2/3] 0.5, [1/3,1] 0.1 (s=2, d=1 ends past T: invalid); d=0: 0.1, 0.2, 0.3
    np.testing.assert_allclose(out.scores, [0.5, 0.3, 0.2, 0.1, 0.1])
    np.testing.assert_allclose(out.segments, [[0, 2 / 3], [2 / 3, 1], [1 / 3, 2 / 3],
                                              [0, 1 / 3], [1 / 3, 1]])
    with pytest.raises(ValueError, match="convention"):
        proposals_from_maps(start, end, ones, ones, convention="end_start")


def test_to_seconds_clips_first() -> None:
    np.testing.assert_allclose(to_seconds([[-0.1, 0.5], [0.9, 1.2]], 40.0),
                               [[0.0, 20.0], [36.0, 40.0]])


def test_combine_with_classes_hand_computed() -> None:
    props = Proposals(np.array([[0.0, 10.0], [5.0, 8.0], [1.0, 2.0]]), np.array([0.9, 0.5, 0.2]))
    classes = {"C": 0.1, "A": 0.6, "B": 0.3}
    # top-2: A (0.6), B (0.3). A: 0.54, 0.30, 0.12; B: 0.27, 0.15, 0.06
    # sorted: 0.54 A, 0.30 A, 0.27 B, 0.15 B, 0.12 A, 0.06 B; capped at 4
    out = combine_with_classes(props, classes, max_detections=4)
    np.testing.assert_allclose(out.scores, [0.54, 0.30, 0.27, 0.15])
    assert out.labels == ("A", "A", "B", "B")
    np.testing.assert_array_equal(out.segments, [[0, 10], [5, 8], [0, 10], [5, 8]])
    full = combine_with_classes(props, classes)
    assert len(full.scores) == 6 and full.labels[4:] == ("A", "B")
    one = combine_with_classes(props, classes, top_k_classes=1)
    assert one.labels == ("A",) * 3


def test_load_class_scores_both_layouts(tmp_path) -> None:
    cuhk = tmp_path / "cuhk.json"
    cuhk.write_text(json.dumps({"class": ["Run", "Swim"], "results": {
        "abc": [0.7, 0.2], "short": [0.1], "nan": [0.1, "x"]}}))
    scores = load_class_scores(cuhk)
    assert scores.classes == ("Run", "Swim")
    assert scores.scores == {"abc": {"Run": 0.7, "Swim": 0.2}}
    assert set(scores.bad) == {"short", "nan"}
    assert scores.for_video("v_abc") == {"Run": 0.7, "Swim": 0.2}
    plain = tmp_path / "plain.json"
    plain.write_text(json.dumps({"v_x": {"Swim": 0.4, "Run": 0.6}, "bad": [1, 2]}))
    scores = load_class_scores(plain)
    assert scores.for_video("x") == {"Swim": 0.4, "Run": 0.6}
    assert scores.classes == ("Swim", "Run") and list(scores.bad) == ["bad"]


def test_results_json_is_read_by_the_evaluator(tmp_path) -> None:
    props = Proposals(np.array([[0.0, 12.5], [3.0, 4.0]]), np.array([0.8, 0.25]))
    doc = results_json({"abc": props, "empty": Proposals(np.zeros((0, 2)), np.zeros(0))})
    path = tmp_path / "proposals.json"
    path.write_text(json.dumps(doc))
    pred = load_predictions(path, with_labels=False)
    assert pred.video_ids == ("abc", "empty")
    np.testing.assert_array_equal(pred.t_end, [12.5, 4.0])
    np.testing.assert_array_equal(pred.score, [0.8, 0.25])

    dets = combine_with_classes(props, {"Run": 0.5, "Swim": 0.25})
    assert isinstance(dets, Detections)
    doc = results_json({"abc": dets}, external_data={"used": True, "details": "CUHK"})
    pred = load_predictions(json.loads(json.dumps(doc)), with_labels=True)
    assert doc["version"] == "VERSION 1.3" and doc["external_data"]["used"] is True
    assert pred.labels == ("Run", "Swim")
    np.testing.assert_allclose(pred.score, [0.4, 0.2, 0.125, 0.0625])
    assert doc["results"]["abc"][0] == {"segment": [0.0, 12.5], "score": 0.4, "label": "Run"}
