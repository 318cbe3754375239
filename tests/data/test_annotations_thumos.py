"""THUMOS14 per-class text files: Ambiguous kept apart, durations from metadata, round trips."""

from __future__ import annotations

import pytest

from tspipe.data.annotations import (
    Segment,
    read_annotations,
    read_thumos14,
    summary,
    write_thumos14,
)
from tspipe.data.annotations.validate import sort_segments
from tspipe.errors import AnnotationError

# Lines as the real THUMOS14 files have them (video_validation_0000051 is in Billiards).
FILES = {
    "Billiards_val.txt": "video_validation_0000051 67.5 75.9\n"
                         "video_validation_0000051  85.9  90.6 \n\n",
    "Diving_val.txt": "video_validation_0000052 10.0 12.5\n",
    "CliffDiving_val.txt": "video_validation_0000052 10.0 12.5\n",
    "Ambiguous_val.txt": "video_validation_0000051 80.1 81.2\nvideo_validation_0000099 1.0 2.0\n",
    "HighJump_test.txt": "video_test_0000004 0.2 1.1\n",
    "README.txt": "not an annotation file\n",
}
METADATA = ("filename,video-duration,fps,video-frames\n"
            "video_validation_0000051.mp4,169.666666666667,30,5090\n"
            "video_validation_0000052.mp4,11.0,30,330\n"
            "video_test_0000004.mp4,33.7333333333333,30,1012\n")


@pytest.fixture
def thumos_dir(tmp_path):
    directory = tmp_path / "thumos14"
    directory.mkdir()
    for name, text in FILES.items():
        (directory / name).write_text(text)
    (tmp_path / "metadata.csv").write_text(METADATA)
    return directory


def test_read_classes_segments_and_ambiguous(thumos_dir):
    ann = read_thumos14(thumos_dir)
    assert ann.issues == []
    assert ann.classes == ["Billiards", "CliffDiving", "Diving", "HighJump"]  # no Ambiguous
    assert list(ann.videos) == ["video_test_0000004", "video_validation_0000051",
                                "video_validation_0000052", "video_validation_0000099"]
    video = ann.videos["video_validation_0000051"]
    assert video.subset == "validation"
    assert video.segments == [Segment(67.5, 75.9, "Billiards"), Segment(85.9, 90.6, "Billiards")]
    assert video.extra == {"ambiguous": [[80.1, 81.2]]}
    assert video.duration is None  # the text files hold no duration
    only_ambiguous = ann.videos["video_validation_0000099"]
    assert (only_ambiguous.segments, only_ambiguous.extra) == ([], {"ambiguous": [[1.0, 2.0]]})
    assert ann.videos["video_test_0000004"].subset == "testing"
    assert summary(ann)["per_subset"] == {
        "testing": {"videos": 1, "segments": 1, "background": 0},
        "validation": {"videos": 3, "segments": 4, "background": 0}}


def test_metadata_fills_durations_and_checks_them(thumos_dir):
    ann = read_thumos14(thumos_dir, metadata_csv=thumos_dir.parent / "metadata.csv")
    video = ann.videos["video_validation_0000051"]
    assert (video.duration, video.fps, video.num_frames, video.filename) == (
        169.666666666667, 30.0, 5090, "video_validation_0000051.mp4")
    # 10.0..12.5 in an 11 s video: clamped, once per class file.
    assert [(i.file.rsplit("/", 1)[-1], i.action) for i in ann.issues] == [
        ("CliffDiving_val.txt", "clamped"), ("Diving_val.txt", "clamped")]
    assert ann.videos["video_validation_0000052"].segments == [
        Segment(10.0, 11.0, "CliffDiving"), Segment(10.0, 11.0, "Diving")]


def test_round_trip_with_ambiguous(thumos_dir, tmp_path):
    meta = thumos_dir.parent / "metadata.csv"
    ann = read_thumos14(thumos_dir, metadata_csv=meta)
    out_meta = tmp_path / "out_metadata.csv"
    paths = write_thumos14(ann, tmp_path / "out", metadata_csv=out_meta)
    names = sorted(p.name for p in paths)
    # Every class in every split present (empty files keep the class list); Ambiguous only
    # where there is an ambiguous interval.
    assert names == ["Ambiguous_val.txt", "Billiards_test.txt",
                     "Billiards_val.txt", "CliffDiving_test.txt", "CliffDiving_val.txt",
                     "Diving_test.txt", "Diving_val.txt", "HighJump_test.txt",
                     "HighJump_val.txt", "out_metadata.csv"]
    assert (tmp_path / "out" / "Ambiguous_val.txt").read_text() == (
        "video_validation_0000051 80.1 81.2\nvideo_validation_0000099 1.0 2.0\n")
    again = read_thumos14(tmp_path / "out", metadata_csv=out_meta)
    assert again.issues == []
    assert again.without_report() == ann.without_report()


def test_real_thumos_test_groundtruth_round_trip(read_gt, tsp_dir, tmp_path, label_maps):
    """The real THUMOS14 test ground truth, written as THUMOS14 files and read back."""
    ann = read_gt("thumos14", "test")
    paths = write_thumos14(ann, tmp_path / "thumos", metadata_csv=tmp_path / "meta.csv")
    assert len(paths) == 20 + 1  # one file per class, all testing, and the metadata
    assert (tmp_path / "thumos" / "CricketBowling_test.txt").read_text().startswith(
        "video_test_0000004 0.2 1.1\nvideo_test_0000004 11.4 12.2\n")
    again = read_annotations(tmp_path / "thumos", label_map=label_maps["thumos14"],
                             metadata=tmp_path / "meta.csv")
    assert again.issues == []
    assert again.classes == ann.classes
    assert again.counts().segments == 3358 - 26
    assert again.counts().per_subset == {"testing": 212}
    for video_id, video in ann.videos.items():
        back = again.videos[video_id]
        assert back.segments == sort_segments(video.segments)
        assert (back.duration, back.fps, back.num_frames, back.filename) == (
            video.duration, video.fps, video.num_frames, video.filename)
    # Read -> write -> read of THUMOS files is exact (order included).
    write_thumos14(again, tmp_path / "thumos2", metadata_csv=tmp_path / "meta2.csv")
    third = read_thumos14(tmp_path / "thumos2", metadata_csv=tmp_path / "meta2.csv",
                          label_map=label_maps["thumos14"])
    assert third.without_report() == again.without_report()


def test_write_refuses_training_videos(read_gt, tmp_path):
    ann = read_gt("activitynet_v1-3", "train").subset("training")
    with pytest.raises(AnnotationError, match=r"video '[^']+': field 'subset'"):
        write_thumos14(ann, tmp_path / "out")


def test_bad_lines_are_reported(thumos_dir):
    (thumos_dir / "Diving_test.txt").write_text(
        "video_test_0000010 1.0\nvideo_test_0000011 x 3.0\nvideo_test_0000012 5.0 4.0\n")
    ann = read_thumos14(thumos_dir, label_map=["Billiards", "Diving", "HighJump"])
    found = [(i.video_id, i.field, i.action) for i in ann.errors()]
    assert found == [
        # CliffDiving is not in the label map: its one line is dropped.
        ("video_validation_0000052", "label (line 1)", "dropped_segment"),
        ("video_test_0000010", "line 1", "dropped_segment"),
        ("video_test_0000011", "t_start (line 2)", "dropped_segment"),
        ("video_test_0000012", "t_start,t_end (line 3)", "dropped_segment"),
    ]
    assert all(i.file.endswith(("Diving_test.txt", "CliffDiving_val.txt"))
               for i in ann.errors())
    assert summary(ann)["dropped"]["segments"] == 4
    assert ann.classes == ["Billiards", "Diving", "HighJump"]


def test_directory_without_annotation_files(tmp_path):
    with pytest.raises(AnnotationError, match=r"no <Class>_val\.txt"):
        read_thumos14(tmp_path)
