"""Reading ground truth and results for the metrics: what is kept as written, what is an
error, and that errors name the video, the entry and the field."""

from __future__ import annotations

import gzip
import json
import logging
import math

import numpy as np
import pytest
from metrics_helpers import ground_truth, results

from tspipe.data.annotations import read_annotations
from tspipe.errors import AnnotationError, TspipeError
from tspipe.localize import (
    PredictionError,
    evaluate_detection,
    evaluate_proposals,
    load_ground_truth,
    load_predictions,
    read_blocked,
)

GOOD = {"segment": [0, 10], "score": 0.9, "label": "A"}


@pytest.mark.parametrize(("entry", "field", "message"), [
    ({"segment": [0, 1], "score": math.nan, "label": "A"}, "score", "not a finite number: nan"),
    ({"segment": [0, 1], "score": True, "label": "A"}, "score", "not a finite number: True"),
    ({"segment": [0, 1], "label": "A"}, "score", "missing"),
    ({"segment": [2, 1], "score": 0.5, "label": "A"}, "segment", "end 1 s < start 2 s"),
    ({"segment": [0, math.inf], "score": 0.5, "label": "A"}, "segment", "times must be finite"),
    ({"segment": [0, "1"], "score": 0.5, "label": "A"}, "segment", "times must be finite"),
    ({"segment": [0], "score": 0.5, "label": "A"}, "segment", "not a \\[t_start, t_end\\]"),
    ({"score": 0.5, "label": "A"}, "segment", "missing"),
    ({"segment": [0, 1], "score": 0.5}, "label", "missing"),
    ({"segment": [0, 1], "score": 0.5, "label": 3}, "label", "not a string: 3"),
    ({"segment": [0, 1], "score": 0.5, "label": "Z"}, "label", "unknown label 'Z'"),
])
def test_malformed_entry_names_video_entry_and_field(entry, field, message) -> None:
    gt = ground_truth({"a": [(0, 10, "A")], "b": [(0, 10, "A")]})
    pred = {"results": {"a": [GOOD], "b": [GOOD, entry]}}
    with pytest.raises(PredictionError, match=f"video 'b': entry 1: field '{field}': {message}"):
        evaluate_detection(gt, pred)


def test_entry_that_is_not_an_object() -> None:
    with pytest.raises(PredictionError, match="video 'a': entry 0: an object expected"):
        load_predictions({"results": {"a": ["oops"]}}, with_labels=False)
    with pytest.raises(PredictionError, match="video 'a': a list of entries expected"):
        load_predictions({"results": {"a": GOOD}}, with_labels=False)
    with pytest.raises(PredictionError, match="no top-level 'results'"):
        load_predictions({"version": "1.3"}, with_labels=False)


def test_proposals_need_no_label_and_zero_length_is_fine() -> None:
    pred = load_predictions({"results": {"a": [{"segment": [3, 3], "score": 1}]}},
                            with_labels=False)
    assert (pred.t_start.tolist(), pred.t_end.tolist(), pred.score.tolist()) == \
        ([3.0], [3.0], [1.0])
    assert pred.labels is None


def test_nan_written_by_json_dump_is_named(tmp_path) -> None:
    path = tmp_path / "results.json"
    path.write_text(json.dumps({"results": {"a": [GOOD, {**GOOD, "score": math.nan}]}}))
    assert "NaN" in path.read_text()  # not JSON, but what json.dump writes
    with pytest.raises(PredictionError, match="video 'a': entry 1: field 'score'"):
        load_predictions(path, with_labels=True)


def test_malformed_json_file(tmp_path) -> None:
    path = tmp_path / "results.json"
    path.write_text('{"results": {"a": [}')
    with pytest.raises(TspipeError, match="malformed JSON at line 1"):
        load_predictions(path, with_labels=True)


def test_gzipped_files_read_like_plain_ones(tmp_path) -> None:
    gt = ground_truth({"a": [(0, 10, "A"), (20, 30, "A")]})
    pred = results({"a": [(0, 10, 0.9, "A"), (40, 50, 0.8, "A"), (21, 30, 0.7, "A")]})
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    with gzip.open(tmp_path / "gt.json.gz", "wt") as fh:
        json.dump(gt, fh)
    with gzip.open(tmp_path / "pred.json.gz", "wt") as fh:
        json.dump(pred, fh)
    from_files = evaluate_detection(tmp_path / "gt.json.gz", tmp_path / "pred.json.gz")
    assert from_files.to_dict() == evaluate_detection(gt, pred).to_dict()
    assert evaluate_detection(tmp_path / "gt.json", pred).to_dict() == from_files.to_dict()


def test_numpy_scalars_are_numbers() -> None:
    pred = {"results": {"a": [{"segment": (np.float32(0), np.int64(10)),
                               "score": np.float64(0.5), "label": "A"}]}}
    r = evaluate_detection(ground_truth({"a": [(0, 10, "A")]}), pred)
    assert r.average_map == 1.0


def test_blocked_list_file(tmp_path) -> None:
    (tmp_path / "blocked.json").write_text('["b", "c"]')
    assert read_blocked(tmp_path / "blocked.json") == {"b", "c"}
    (tmp_path / "bad.json").write_text('{"b": 1}')
    with pytest.raises(TspipeError, match="a JSON list of video ids"):
        read_blocked(tmp_path / "bad.json")


def test_predictions_object_is_filtered_by_blocked() -> None:
    pred = load_predictions(results({"a": [(0, 10, 0.9, "A")], "b": [(0, 10, 0.8, "A")]}),
                            with_labels=True)
    kept = load_predictions(pred, with_labels=True, blocked={"a"})
    assert kept.video_ids == ("b",)
    assert kept.score.tolist() == [0.8]
    assert kept.where(0) == ("b", 0)
    assert kept.blocked_videos == 1
    with pytest.raises(PredictionError, match="detections need labels"):
        load_predictions(load_predictions(results({}), with_labels=False), with_labels=True)


def test_activitynet_ground_truth_is_read_as_written() -> None:
    gt = ground_truth({"a": [(90, 110, "A"), (5, 5, "B")], "b": []},
                      training={"t": [(0, 1, "C")]})
    truth = load_ground_truth(gt, subset="validation")
    assert truth.video_ids == ("a",)  # b has no segment
    assert truth.classes == ("A", "B")
    assert truth.t_start.tolist() == [90.0, 5.0]
    assert truth.t_end.tolist() == [110.0, 5.0]  # past the 100 s end; zero length kept


def test_annotations_object_as_the_readers_left_it(tmp_path) -> None:
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(ground_truth({"a": [(90, 110, "A"), (5, 5, "A"), (0, 10, "A")]})))
    ann = read_annotations(path)  # clamps (90, 110) to the 100 s video, drops (5, 5)
    truth = load_ground_truth(ann, subset="validation")
    assert list(zip(truth.t_start.tolist(), truth.t_end.tolist(), strict=True)) == \
        [(90.0, 100.0), (0.0, 10.0)]
    assert len(load_ground_truth(path, subset="validation")) == 3  # the raw reader


def test_tsp_csv_ground_truth_warns_about_clamped_segments(tmp_path, caplog) -> None:
    path = tmp_path / "x_valid_tsp_groundtruth.csv"
    path.write_text(
        "video-name,t-start,t-end,action-label,video-duration,filename,fps,video-frames,"
        "temporal-region-label\n"
        "a,90,110,A,100,v_a.mp4,30,3000,Action\n"
        "a,0,10,B,100,v_a.mp4,30,3000,Action\n")
    with caplog.at_level(logging.WARNING, logger="tspipe.localize"):
        truth = load_ground_truth(path, subset="validation")
    assert truth.video_ids == ("a",)  # the CSV's video-name, no 'v_'
    assert truth.t_end.tolist() == [100.0, 10.0]
    assert "clamped or dropped 1 ground-truth segments" in caplog.text
    r = evaluate_detection(path, results({"a": [(90, 100, 0.9, "A"), (0, 10, 0.9, "B")]}))
    assert r.average_map == 1.0


@pytest.mark.parametrize(("doc", "message"), [
    ({"version": "1.3"}, "no top-level 'database'"),
    ({"database": {"a": []}}, "video 'a': not an object"),
    ({"database": {"a": {"subset": "validation"}}}, "video 'a': field 'annotations'"),
    ({"database": {"a": {"subset": "validation", "annotations": [{"segment": [2, 1],
                                                                  "label": "A"}]}}},
     "video 'a': field 'annotations\\[0\\].segment': end 1 s < start 2 s"),
    ({"database": {"a": {"subset": "validation", "annotations": [{"segment": [0, 1]}]}}},
     "field 'annotations\\[0\\].label': missing"),
])
def test_malformed_ground_truth(doc, message) -> None:
    with pytest.raises(AnnotationError, match=message):
        load_ground_truth(doc, subset="validation")


def test_empty_subset_is_an_error() -> None:
    from tspipe.localize import EvaluationError

    gt = ground_truth({"a": [(0, 10, "A")]})
    with pytest.raises(EvaluationError, match="no ground-truth segment in subset 'testing'"):
        evaluate_detection(gt, results({}), subset="testing")
    with pytest.raises(EvaluationError, match="after the blocked list"):
        evaluate_proposals(gt, results({}), blocked=["a"])


def test_ground_truth_object_keeps_only_classes_with_segments() -> None:
    from tspipe.localize import GroundTruth

    gt = GroundTruth(video_ids=("a", "b"), classes=("unused", "A"), video=np.array([0, 1]),
                     label=np.array([1, 1]), t_start=np.array([0.0, 0.0]),
                     t_end=np.array([10.0, 10.0]), subset="validation", source="by hand")
    kept = load_ground_truth(gt, blocked={"b"})
    assert (kept.classes, kept.video_ids, kept.label.tolist()) == (("A",), ("a",), [0])
    r = evaluate_detection(gt, results({"a": [(0, 10, 0.9, "A")]}))
    assert r.classes == ("A",)
    assert r.map_per_tiou[0] == 0.5  # b's segment missed
