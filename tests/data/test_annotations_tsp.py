"""TSP's CSVs: the real files read to the reference counts, and write back unchanged."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path

import pytest

from tspipe.data.annotations import (
    Segment,
    read_annotations,
    read_label_map,
    read_tsp_groundtruth,
    read_tsp_metadata,
    summary,
    write_tsp_groundtruth,
    write_tsp_metadata,
)
from tspipe.data.annotations.validate import infer_subset

# (dataset, split, subset, rows, videos, Action rows, No action rows, classes) from
# shared/reference/tsp.md; then what the reader found wrong in the real files: Action rows
# dropped (end <= start, or start >= duration) and clamped (end > duration), and the same
# for No action rows.
GROUND_TRUTH = [
    ("activitynet_v1-3", "train", "training", 31366, 10024, 15410, 15956, 200, 9, 1164, 0, 0),
    ("activitynet_v1-3", "valid", "validation", 15401, 4926, 7654, 7747, 200, 3, 567, 0, 1),
    ("thumos14", "valid", "validation", 5185, 200, 3007, 2178, 20, 4, 0, 1, 2),
    ("thumos14", "test", "testing", 5931, 212, 3358, 2573, 20, 26, 0, 23, 3),
]


@pytest.mark.parametrize(
    ("dataset", "split", "subset", "rows", "videos", "action", "no_action", "classes",
     "dropped", "clamped", "dropped_bg", "clamped_bg"), GROUND_TRUTH,
    ids=[f"{g[0]}-{g[1]}" for g in GROUND_TRUTH])
def test_real_groundtruth_counts(read_gt, tsp_dir, dataset, split, subset, rows, videos, action,
                                 no_action, classes, dropped, clamped, dropped_bg, clamped_bg):
    path = tsp_dir / f"{dataset}_{split}_tsp_groundtruth.csv"
    assert len(path.read_text().splitlines()) - 1 == rows
    ann = read_gt(dataset, split)
    report = summary(ann)
    assert report["videos"] == videos
    assert report["classes"] == classes
    assert report["per_subset"] == {subset: {"videos": videos, "segments": report["segments"],
                                             "background": report["background"]}}
    # Every row is accounted for: kept, or dropped with an issue.
    assert report["segments"] + report["dropped"]["segments"] == action
    assert report["background"] + report["dropped"]["background"] == no_action
    assert report["dropped"] == {"videos": 0, "segments": dropped, "background": dropped_bg}
    assert report["clamped"] == {"segments": clamped, "background": clamped_bg}
    assert report["errors"] == dropped + dropped_bg
    assert report["warnings"] == clamped + clamped_bg
    for video in ann.videos.values():
        assert video.duration is not None
        assert all(0 <= s.t_start < s.t_end <= video.duration for s in video.segments)
        assert all(0 <= s < e <= video.duration for s, e in video.background)


def test_real_groundtruth_contents(read_gt):
    ann = read_gt("activitynet_v1-3", "valid")
    first = ann.videos["JDg--pjY5gg"]  # the file's first row
    assert first.segments[0] == Segment(61.420442338881465, 64.56014561469672, "Beer pong")
    assert (first.duration, first.filename, first.fps, first.num_frames) == (
        126.13333333333334, "v_JDg--pjY5gg.mp4", 30.0, 3784)
    assert ann.classes[10] == "Beer pong"  # label map order, not first-seen order
    # 142.281 .. 142.281 in a 142.267 s video: the zero-length segment is its only Action
    # row, and its background row ends past the video too.
    issues = [i for i in ann.issues if i.video_id == "e6J_ygZ779A"]
    assert [(i.severity, i.action) for i in issues] == [
        ("error", "dropped_segment"), ("warning", "clamped")]
    assert "end 142.281 s <= start 142.281 s" in str(issues[0])
    assert str(issues[1]).startswith(f"{ann.source}: video 'e6J_ygZ779A': background t-start")
    assert ann.videos["e6J_ygZ779A"].segments == []
    assert ann.videos["e6J_ygZ779A"].background == [(0.0, 142.26666666666668)]
    # THUMOS test video 270: annotations run to 713.7 s in a 176.1 s video.
    thumos = read_gt("thumos14", "test")
    issues = [i for i in thumos.issues if i.video_id == "video_test_0000270"]
    assert [i.field.startswith("background") for i in issues if i.action == "clamped"] == [True]
    assert sum(i.action == "dropped_segment" for i in issues) == 22 + 21
    assert len(thumos.videos["video_test_0000270"].segments) == 29 - 22
    assert max(s.t_end for s in thumos.videos["video_test_0000270"].segments) <= 176.14


@pytest.mark.parametrize(("name", "count"), [
    ("activitynet_v1-3_train", 10024), ("activitynet_v1-3_valid", 4926),
    ("activitynet_v1-3_test", 5044), ("thumos14_valid", 200), ("thumos14_test", 213)])
def test_real_metadata_counts(tsp_dir, tmp_path, name, count):
    meta = read_tsp_metadata(tsp_dir / f"{name}_metadata.csv")
    assert len(meta.videos) == count
    assert meta.issues == []
    assert all(v.fps == 30.0 and v.duration > 0 and v.num_frames > 0 for v in meta.videos.values())
    out = write_tsp_metadata(meta, tmp_path / f"{name}_metadata.csv")
    assert read_tsp_metadata(out).without_report() == meta.without_report()


def test_real_metadata_contents(tsp_dir):
    meta = read_tsp_metadata(tsp_dir / "activitynet_v1-3_valid_metadata.csv")
    video = meta.videos["v_JDg--pjY5gg"]  # keyed by file stem
    assert (video.filename, video.duration, video.fps, video.num_frames) == (
        "v_JDg--pjY5gg.mp4", 126.133333333333, 30.0, 3784)


def test_metadata_agrees_with_groundtruth(tsp_dir, label_maps):
    # Metadata durations have 15 significant digits, the ground truth 17: no warning.
    ann = read_tsp_groundtruth(tsp_dir / "thumos14_test_tsp_groundtruth.csv",
                               label_map=label_maps["thumos14"],
                               metadata_csv=tsp_dir / "thumos14_test_metadata.csv")
    assert [i for i in ann.issues if "metadata" in i.file] == []
    assert ann.videos["video_test_0000004"].duration == 33.73333333333333  # GT value kept


def test_label_maps(tsp_dir, label_maps):
    anet = read_label_map(label_maps["activitynet_v1-3"])
    thumos = read_label_map(label_maps["thumos14"])
    assert (len(anet), len(thumos)) == (200, 20)
    assert (anet[0], anet[-1], thumos[0], thumos[19]) == (
        "Applying sunscreen", "Zumba", "BaseballPitch", "VolleyballSpiking")
    regions = tsp_dir / "activitynet_v1-3_temporal_region_label_mapping.json"
    assert read_label_map(regions) == ["Action", "No action"]


def test_groundtruth_round_trip(read_gt, tmp_path, label_maps):
    ann = read_gt("activitynet_v1-3", "valid")
    out = write_tsp_groundtruth(ann, tmp_path / "anet_valid_tsp_groundtruth.csv")
    again = read_tsp_groundtruth(out, label_map=label_maps["activitynet_v1-3"])
    assert again.issues == []  # clamped on the first read, in range now
    assert again.without_report() == ann.without_report()
    # Videos keep their order; one whose Action rows were all dropped now comes first in
    # the background block (e6J_ygZ779A, 6kgJx6ahgq0), so compare the others.
    assert [v for v in again.videos if again.videos[v].segments] == [
        v for v in ann.videos if ann.videos[v].segments]


@pytest.mark.parametrize(("dataset", "split"), [("activitynet_v1-3", "valid"),
                                                ("thumos14", "test")])
def test_clean_groundtruth_rewritten_byte_for_byte(read_gt, tsp_dir, tmp_path, dataset, split):
    """Rows without an issue are written back in the reference's order, with its bytes."""
    source = tsp_dir / f"{dataset}_{split}_tsp_groundtruth.csv"
    flagged = {int(re.search(r"line (\d+)", i.field)[1]) for i in read_gt(dataset, split).issues}
    lines = source.read_text().splitlines(keepends=True)
    clean = tmp_path / f"clean_{split}_tsp_groundtruth.csv"
    clean.write_text("".join(line for n, line in enumerate(lines, 1) if n not in flagged))
    out = write_tsp_groundtruth(read_tsp_groundtruth(clean), tmp_path / f"out_{split}.csv")
    assert len(flagged) > 0
    assert out.read_bytes() == clean.read_bytes()


def test_subset_from_file_name():
    assert infer_subset("activitynet_v1-3_train_tsp_groundtruth.csv") == "training"
    assert infer_subset("thumos14_valid_tsp_groundtruth.csv") == "validation"
    assert infer_subset("/x/thumos14_test_tsp_groundtruth.csv") == "testing"
    assert infer_subset("groundtruth.csv") is None


def test_explicit_subset_wins(tsp_dir, label_maps):
    ann = read_tsp_groundtruth(tsp_dir / "thumos14_valid_tsp_groundtruth.csv",
                               label_map=label_maps["thumos14"], subset="training")
    assert ann.counts().per_subset == {"training": 200}


def test_read_annotations_detects_csv(tsp_dir, label_maps, tmp_path):
    ann = read_annotations(tsp_dir / "thumos14_valid_tsp_groundtruth.csv",
                           label_map=label_maps["thumos14"],
                           metadata=tsp_dir / "thumos14_valid_metadata.csv",
                           subsets=["validation"])
    assert ann.counts().segments == 3007 - 4
    report = summary(ann)
    path = tmp_path / "summary.json"
    path.write_text(json.dumps(report))
    assert json.loads(path.read_text()) == report
    assert read_annotations(tsp_dir / "thumos14_valid_tsp_groundtruth.csv",
                            subsets=["testing"]).videos == {}


def test_videos_without_rows_are_not_written(tmp_path, read_gt):
    ann = read_gt("thumos14", "valid").subset("validation")
    ann.videos = {k: v for k, v in list(ann.videos.items())[:2]}
    first = next(iter(ann.videos.values()))
    ann.videos[first.video_id] = replace(first, segments=[], background=[])
    out = write_tsp_groundtruth(ann, tmp_path / "x_valid_tsp_groundtruth.csv")
    assert list(read_tsp_groundtruth(out).videos) == list(ann.videos)[1:]
    assert isinstance(out, Path)


def test_metadata_disagreement_and_unknown_columns_are_reported(tmp_path):
    gt = tmp_path / "x_test_tsp_groundtruth.csv"
    gt.write_text("video-name,t-start,t-end,action-label,video-duration,filename,fps,"
                  "video-frames,temporal-region-label,comment\n"
                  "vid_a,1.0,2.0,Diving,10.0,vid_a.mp4,30.0,300,Action,hi\n"
                  "vid_b,1.0,2.0,Diving,,,,,Action,\n")
    meta = tmp_path / "x_test_metadata.csv"
    meta.write_text("filename,video-duration,fps,video-frames\n"
                    "vid_a.mp4,12.0,30,360\nvid_b.mp4,20.0,25,500\n")
    ann = read_tsp_groundtruth(gt, metadata_csv=meta)
    assert [(i.file, i.video_id, i.field, i.severity) for i in ann.issues] == [
        (str(gt), None, "header", "warning"),
        (str(meta), "vid_a", "video-duration", "warning"),
        (str(meta), "vid_a", "video-frames", "warning")]
    assert "annotations say 10.0, metadata 12.0" in str(ann.issues[1])
    assert ann.videos["vid_a"].duration == 10.0  # the annotations' own value is kept
    vid_b = ann.videos["vid_b"]  # unknown (empty) cells are filled from the metadata
    assert (vid_b.duration, vid_b.fps, vid_b.num_frames, vid_b.filename) == (
        20.0, 25.0, 500, "vid_b.mp4")
    assert ann.counts().per_subset == {"testing": 2}
