"""The metrics on the real ActivityNet v1.3 validation ground truth (TSP's CSV, 4,926
videos): perfect results, and agreement with the straightforward loops on results built
as the benchmark builds them."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from metrics_helpers import benchmark

from tspipe.data.annotations import Annotations, read_annotations
from tspipe.localize import (
    GroundTruth,
    evaluate_detection,
    evaluate_proposals,
    load_ground_truth,
    load_predictions,
)

CSV = "activitynet_v1-3_valid_tsp_groundtruth.csv"


@pytest.fixture(scope="module")
def tsp_dir(shared_data: Path) -> Path:
    path = shared_data / "annotations" / "tsp"
    if not (path / CSV).is_file():
        pytest.fail(f"no {CSV} in {path}; set TSPIPE_SHARED_DATA")
    return path


@pytest.fixture(scope="module")
def anet_val_annotations(tsp_dir: Path) -> Annotations:
    """Shared: tests must not modify it."""
    return read_annotations(tsp_dir / CSV,
                            label_map=tsp_dir / "activitynet_v1-3_action_label_mapping.json")


@pytest.fixture(scope="module")
def anet_val(anet_val_annotations: Annotations) -> GroundTruth:
    return load_ground_truth(anet_val_annotations, subset="validation")


def perfect(gt: GroundTruth, *, labels: bool) -> dict:
    out: dict = {"version": "VERSION 1.3", "external_data": {}, "results": {}}
    for v, c, s, e in zip(gt.video.tolist(), gt.label.tolist(), gt.t_start.tolist(),
                          gt.t_end.tolist(), strict=True):
        entry = {"segment": [s, e], "score": 1.0, **({"label": gt.classes[c]} if labels else {})}
        out["results"].setdefault(gt.video_ids[v], []).append(entry)
    return out


def test_real_ground_truth_as_read(anet_val: GroundTruth) -> None:
    # 4,926 videos; the reader drops the 3 zero-length segments, which leaves 2 videos empty.
    assert (len(anet_val.video_ids), len(anet_val), len(anet_val.classes)) == (4924, 7651, 200)
    assert "JDg--pjY5gg" in anet_val.video_ids  # ids without 'v_', as in ActivityNet's JSON


def test_csv_path_warns_about_what_the_reader_changed(tsp_dir: Path, caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="tspipe.localize"):
        load_ground_truth(tsp_dir / CSV, subset="validation")
    # 567 segments past their video's end, 3 of zero length.
    assert "clamped or dropped 570 ground-truth segments" in caplog.text


def test_perfect_results_on_activitynet_validation(anet_val: GroundTruth) -> None:
    detection = evaluate_detection(anet_val, perfect(anet_val, labels=True))
    assert detection.map_per_tiou == (1.0,) * 10
    proposals = evaluate_proposals(anet_val, perfect(anet_val, labels=False))
    assert proposals.ar_at[100] == 1.0
    assert np.all(np.diff(proposals.avg_recall) >= 0)
    # 7,651 proposals for 4,924 videos: x_1 = 0.64, most videos use no proposal at j = 1.
    assert proposals.ar_at[1] < 0.5


def test_benchmark_results_agree_with_the_loops(anet_val_annotations: Annotations) -> None:
    bench = benchmark()
    first = dict(list(anet_val_annotations.videos.items())[:150])
    gt = load_ground_truth(replace(anet_val_annotations, videos=first), subset="validation")
    doc = bench.make_predictions(gt, 100)
    thresholds = np.linspace(0.5, 0.95, 10)

    detections = load_predictions(doc, with_labels=True)
    video, label = bench.align(gt, detections)
    ours = evaluate_detection(gt, detections)
    expected = bench.reference_detection(gt, video, label, detections.t_start,
                                         detections.t_end, detections.score, thresholds)
    np.testing.assert_allclose(ours.ap_per_class, expected, rtol=0, atol=1e-12)
    assert 0.05 < ours.average_map < 0.95  # neither trivial nor empty

    proposals = load_predictions(doc, with_labels=False)
    recall, per_video = bench.reference_proposals(gt, video, proposals.t_start,
                                                  proposals.t_end, proposals.score, thresholds,
                                                  n_rows=len(proposals))
    ours_p = evaluate_proposals(gt, proposals)
    np.testing.assert_array_equal(ours_p.recall, recall)
    np.testing.assert_array_equal(ours_p.proposals_per_video, per_video)
