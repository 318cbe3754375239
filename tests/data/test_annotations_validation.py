"""One test per kind of bad annotation, through every reader that can meet it.

Each checks that the issue (or the exception) names the file, the video and the field, and
that the report counts what was kept and what was dropped.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tspipe.data.annotations import (
    AnnotationIssue,
    Annotations,
    read_activitynet,
    read_annotations,
    read_tsp_groundtruth,
    read_tsp_metadata,
    suggest_subset,
    summary,
)
from tspipe.errors import AnnotationError

LABELS = ["Diving", "HighJump"]
DURATION = {"vid_a": 100.0, "vid_b": 50.0}
FORMATS = ["activitynet", "tsp_csv", "thumos14"]
Row = tuple[str, object, object, str]  # video id, t_start, t_end, label


def _write(fmt: str, tmp: Path, rows: list[Row]) -> Path:
    """``rows`` as a file (or THUMOS directory) of format ``fmt``; all videos validation."""
    if fmt == "activitynet":
        database = {vid: {"subset": "validation", "duration": d, "annotations": []}
                    for vid, d in DURATION.items()}
        for vid, t_start, t_end, label in rows:
            database[vid]["annotations"].append({"segment": [t_start, t_end], "label": label})
        path = tmp / "bad_anet.json"
        path.write_text(json.dumps({"version": "VERSION 1.3", "database": database}))
        return path
    if fmt == "tsp_csv":
        lines = ["video-name,t-start,t-end,action-label,video-duration,filename,fps,"
                 "video-frames,temporal-region-label"]
        lines += [f"{vid},{t0},{t1},{label},{DURATION[vid]},{vid}.mp4,30.0,"
                  f"{int(DURATION[vid] * 30)},Action" for vid, t0, t1, label in rows]
        path = tmp / "bad_valid_tsp_groundtruth.csv"
        path.write_text("\n".join(lines) + "\n")
        return path
    directory = tmp / "thumos"
    directory.mkdir()
    for vid, t0, t1, label in rows:
        with (directory / f"{label}_val.txt").open("a") as fh:
            fh.write(f"{vid} {t0} {t1}\n")
    (tmp / "meta.csv").write_text("filename,video-duration,fps,video-frames\n" + "".join(
        f"{vid}.mp4,{d},30,{int(d * 30)}\n" for vid, d in DURATION.items()))
    return directory


def _read(fmt: str, tmp: Path, rows: list[Row], **kwargs) -> Annotations:
    path = _write(fmt, tmp, rows)
    metadata = tmp / "meta.csv" if fmt == "thumos14" else None
    return read_annotations(path, label_map=LABELS, metadata=metadata, **kwargs)


def _field(fmt: str, rows: list[Row], i: int, what: str) -> str:
    """The issue field each reader names for row ``i`` (``what``: "times" or "label")."""
    if fmt == "activitynet":
        j = sum(1 for r in rows[:i] if r[0] == rows[i][0])
        return f"annotations[{j}].segment" if what == "times" else f"annotations[{j}].label"
    if fmt == "tsp_csv":
        line = i + 2  # after the header
        return f"t-start,t-end (line {line})" if what == "times" else f"action-label (line {line})"
    line = 1 + sum(1 for r in rows[:i] if r[3] == rows[i][3])
    return f"t_start,t_end (line {line})" if what == "times" else f"label (line {line})"


def _assert_names(issue: AnnotationIssue, file_name: str, video_id: str, field: str) -> None:
    text = str(issue)
    assert file_name in text
    assert f"video {video_id!r}" in text
    assert f": {field}: " in text


def _file_name(fmt: str, rows: list[Row], i: int) -> str:
    return {"activitynet": "bad_anet.json", "tsp_csv": "bad_valid_tsp_groundtruth.csv",
            "thumos14": f"{rows[i][3]}_val.txt"}[fmt]


@pytest.mark.parametrize("fmt", FORMATS)
def test_end_not_after_start_is_dropped(fmt, tmp_path):
    rows = [("vid_a", 1.0, 5.0, "Diving"), ("vid_a", 8.0, 8.0, "Diving"),
            ("vid_a", 9.5, 3.0, "Diving"), ("vid_b", 2.0, 4.0, "HighJump")]
    ann = _read(fmt, tmp_path, rows)
    assert [(i.severity, i.action) for i in ann.issues] == [("error", "dropped_segment")] * 2
    for issue, row in zip(ann.issues, (1, 2), strict=True):
        _assert_names(issue, _file_name(fmt, rows, row), "vid_a", _field(fmt, rows, row, "times"))
    assert "end 3.0 s <= start 9.5 s" in str(ann.issues[1])
    report = summary(ann)
    assert (report["kept"]["segments"], report["dropped"]["segments"]) == (2, 2)
    assert report["errors"] == 2
    assert [s.t_start for s in ann.videos["vid_a"].segments] == [1.0]


@pytest.mark.parametrize("fmt", FORMATS)
def test_end_past_duration_is_clamped(fmt, tmp_path):
    rows = [("vid_a", 90.0, 120.5, "Diving"), ("vid_b", 2.0, 4.0, "HighJump")]
    ann = _read(fmt, tmp_path, rows)
    [issue] = ann.issues
    assert (issue.severity, issue.action) == ("warning", "clamped")
    _assert_names(issue, _file_name(fmt, rows, 0), "vid_a", _field(fmt, rows, 0, "times"))
    assert "end 120.5 s > video duration 100.0 s" in str(issue)
    assert ann.videos["vid_a"].segments[0].t_end == 100.0
    report = summary(ann)
    assert report["clamped"] == {"segments": 1, "background": 0}
    assert (report["kept"]["segments"], report["dropped"]["segments"]) == (2, 0)


@pytest.mark.parametrize("fmt", FORMATS)
def test_end_past_duration_without_clamping_is_dropped(fmt, tmp_path):
    rows = [("vid_a", 90.0, 120.5, "Diving"), ("vid_b", 2.0, 4.0, "HighJump")]
    ann = _read(fmt, tmp_path, rows, clamp_to_duration=False)
    [issue] = ann.issues
    assert (issue.severity, issue.action) == ("error", "dropped_segment")
    _assert_names(issue, _file_name(fmt, rows, 0), "vid_a", _field(fmt, rows, 0, "times"))
    assert ann.videos["vid_a"].segments == []
    assert summary(ann)["dropped"]["segments"] == 1


@pytest.mark.parametrize("fmt", FORMATS)
def test_start_past_duration_is_dropped(fmt, tmp_path):
    rows = [("vid_b", 1.0, 2.0, "Diving"), ("vid_b", 50.0, 60.0, "Diving"),
            ("vid_b", 70.0, 80.0, "HighJump")]
    ann = _read(fmt, tmp_path, rows)
    assert [(i.severity, i.action) for i in ann.issues] == [("error", "dropped_segment")] * 2
    _assert_names(ann.issues[0], _file_name(fmt, rows, 1), "vid_b", _field(fmt, rows, 1, "times"))
    _assert_names(ann.issues[1], _file_name(fmt, rows, 2), "vid_b", _field(fmt, rows, 2, "times"))
    assert "start 50.0 s >= video duration 50.0 s" in str(ann.issues[0])
    report = summary(ann)
    assert (report["kept"]["segments"], report["dropped"]["segments"]) == (1, 2)


@pytest.mark.parametrize("fmt", FORMATS)
def test_unknown_label_is_dropped(fmt, tmp_path):
    rows = [("vid_a", 1.0, 2.0, "Diving"), ("vid_a", 3.0, 4.0, "Curling")]
    ann = _read(fmt, tmp_path, rows)
    [issue] = ann.issues
    assert (issue.severity, issue.action) == ("error", "dropped_segment")
    _assert_names(issue, _file_name(fmt, rows, 1), "vid_a", _field(fmt, rows, 1, "label"))
    assert "unknown label 'Curling'" in str(issue)
    assert ann.classes == LABELS
    assert [s.label for s in ann.videos["vid_a"].segments] == ["Diving"]
    assert summary(ann)["dropped"]["segments"] == 1


def test_duplicate_video_id_in_json(tmp_path):
    path = tmp_path / "dup.json"
    path.write_text('{"database": {\n'
                    ' "vid_a": {"subset": "training", "duration": 10, "annotations": []},\n'
                    ' "vid_b": {"subset": "training", "duration": 20, "annotations": []},\n'
                    ' "vid_a": {"subset": "testing", "duration": 99, "annotations": []}}}')
    ann = read_activitynet(path)
    [issue] = ann.issues
    assert (issue.severity, issue.action) == ("error", "dropped_video")
    _assert_names(issue, "dup.json", "vid_a", "database")
    assert (ann.videos["vid_a"].subset, ann.videos["vid_a"].duration) == ("training", 10.0)
    report = summary(ann)
    assert (report["kept"]["videos"], report["dropped"]["videos"]) == (2, 1)


def test_duplicate_key_inside_an_annotation(tmp_path):
    path = tmp_path / "dupkey.json"
    path.write_text('{"database": {"vid_a": {"subset": "training", "duration": 10, '
                    '"annotations": [{"segment": [1, 2], "label": "a", "label": "b"}]}}}')
    ann = read_activitynet(path)
    [issue] = ann.issues
    _assert_names(issue, "dupkey.json", "vid_a", "label")
    assert ann.videos["vid_a"].segments[0].label == "a"  # the first value, as reported


def test_duplicate_video_id_in_metadata_csv(tmp_path):
    path = tmp_path / "thumos14_valid_metadata.csv"
    path.write_text("filename,video-duration,fps,video-frames\n"
                    "vid_a.mp4,10.0,30,300\nvid_b.mp4,20.0,30,600\nvid_a.mp4,11.0,30,330\n")
    meta = read_tsp_metadata(path)
    [issue] = meta.issues
    assert (issue.severity, issue.action) == ("error", "dropped_video")
    _assert_names(issue, path.name, "vid_a", "filename (line 4)")
    assert meta.videos["vid_a"].duration == 10.0
    assert (summary(meta)["kept"]["videos"], summary(meta)["dropped"]["videos"]) == (2, 1)


def test_duplicate_video_id_in_groundtruth_csv(tmp_path):
    """Two videos under one id show as rows that disagree on the video's own fields."""
    rows = [("vid_a", 1.0, 2.0, "Diving"), ("vid_b", 1.0, 2.0, "Diving")]
    path = _write("tsp_csv", tmp_path, rows)
    with path.open("a") as fh:
        fh.write("vid_a,3.0,4.0,Diving,120.0,vid_a.mp4,30.0,3600,Action\n")
    ann = read_tsp_groundtruth(path)
    [issue] = ann.issues
    assert (issue.severity, issue.action) == ("error", "dropped_segment")
    _assert_names(issue, path.name, "vid_a", "video-duration (line 4)")
    assert "120.0 contradicts 100.0" in str(issue)
    assert summary(ann)["dropped"]["segments"] == 1
    assert ann.videos["vid_a"].duration == 100.0


def test_malformed_json_raises_with_line_and_column(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('{"database": {\n  "vid_a": {"duration": 1,}\n}}')
    with pytest.raises(AnnotationError, match=r"broken\.json: malformed JSON at line 2, column"):
        read_activitynet(path)


def test_missing_database_raises(tmp_path):
    path = tmp_path / "nodb.json"
    path.write_text('{"version": "VERSION 1.3", "taxonomy": []}')
    with pytest.raises(AnnotationError, match=r"nodb\.json: field 'database'") as info:
        read_annotations(path)
    assert info.value.field == "database"


@pytest.mark.parametrize(("entry", "field"), [
    ({"subset": "training", "annotations": []}, "duration"),
    ({"duration": 12.5, "annotations": []}, "subset"),
    ({"subset": "training", "duration": "long", "annotations": []}, "duration"),
    ({"subset": "training", "duration": 12.5, "annotations": {"segment": [1, 2]}},
     "annotations"),
])
def test_missing_or_bad_video_field_drops_the_video(tmp_path, entry, field):
    path = tmp_path / "missing.json"
    path.write_text(json.dumps({"database": {
        "vid_a": entry,
        "vid_b": {"subset": "training", "duration": 5.0,
                  "annotations": [{"segment": [1, 2], "label": "Diving"}]}}}))
    ann = read_activitynet(path)
    [issue] = ann.issues
    assert (issue.severity, issue.action) == ("error", "dropped_video")
    _assert_names(issue, "missing.json", "vid_a", field)
    assert list(ann.videos) == ["vid_b"]
    report = summary(ann)
    assert (report["kept"]["videos"], report["dropped"]["videos"]) == (1, 1)
    assert report["kept"]["segments"] == 1


def test_csv_missing_column_raises(tmp_path):
    path = tmp_path / "short_valid_tsp_groundtruth.csv"
    path.write_text("video-name,t-start,t-end,action-label\nvid_a,1,2,Diving\n")
    with pytest.raises(AnnotationError, match=r"short_valid_tsp_groundtruth\.csv: field "
                       r"'header': .*lacks columns \['video-duration'"):
        read_tsp_groundtruth(path)


@pytest.mark.parametrize(("fmt", "bad", "field"), [
    ("tsp_csv", ("vid_a", "abc", 3.0, "Diving"), "t-start (line 3)"),
    ("tsp_csv", ("vid_a", 1.0, "nan", "Diving"), "t-end (line 3)"),
    ("activitynet", ("vid_a", "abc", 3.0, "Diving"), "annotations[1].segment[0]"),
    ("activitynet", ("vid_a", 1.0, None, "Diving"), "annotations[1].segment[1]"),
    ("thumos14", ("vid_a", "abc", 3.0, "Diving"), "t_start (line 2)"),
])
def test_non_numeric_time_drops_the_segment(tmp_path, fmt, bad, field):
    rows = [("vid_a", 1.0, 2.0, "Diving"), bad, ("vid_b", 1.0, 2.0, "HighJump")]
    ann = _read(fmt, tmp_path, rows)
    [issue] = ann.issues
    assert (issue.severity, issue.action) == ("error", "dropped_segment")
    _assert_names(issue, _file_name(fmt, rows, 1), "vid_a", field)
    report = summary(ann)
    assert (report["kept"]["segments"], report["dropped"]["segments"]) == (2, 1)


def test_csv_background_rows_are_checked_apart(tmp_path):
    path = tmp_path / "bg_valid_tsp_groundtruth.csv"
    path.write_text(
        "video-name,t-start,t-end,action-label,video-duration,filename,fps,video-frames,"
        "temporal-region-label\n"
        "vid_a,1.0,2.0,Diving,10.0,vid_a.mp4,30.0,300,Action\n"
        "vid_a,2.0,12.0,,10.0,vid_a.mp4,30.0,300,No action\n"
        "vid_a,11.0,12.0,,10.0,vid_a.mp4,30.0,300,No action\n"
        "vid_a,0.0,1.0,Diving,10.0,vid_a.mp4,30.0,300,Background\n")
    ann = read_tsp_groundtruth(path)
    assert [(i.field, i.action) for i in ann.issues] == [
        ("background t-start,t-end (line 3)", "clamped"),
        ("background t-start,t-end (line 4)", "dropped_segment"),
        ("temporal-region-label (line 5)", "dropped_segment")]
    assert ann.videos["vid_a"].background == [(2.0, 10.0)]
    report = summary(ann)
    assert report["dropped"] == {"videos": 0, "segments": 1, "background": 1}
    assert report["clamped"] == {"segments": 0, "background": 1}


@pytest.mark.parametrize(("found", "meant"), [
    ("Validation", "validation"), ("TRAINING", "training"), (" testing ", "testing"),
    ("trainng", "training"), ("valdation", "validation"), ("testin", "testing"),
    ("valid", "validation"), ("train", "training"), ("test", "testing"),
    ("val", "validation"), ("xyz", None), ("", None), ("development", None),
])
def test_suggest_subset_names_the_near_miss(found, meant):
    assert suggest_subset(found) == meant


def test_dropped_videos_are_counted_by_reason(tmp_path):
    path = tmp_path / "ann.json"
    path.write_text(json.dumps({"database": {
        "ok": {"subset": "training", "duration": 10.0, "annotations": []},
        "no_duration": {"subset": "training", "annotations": []},
        "bad_duration": {"subset": "training", "duration": -1, "annotations": []},
        "no_subset": {"duration": 10.0, "annotations": []},
    }}))
    report = summary(read_activitynet(path))
    assert report["kept"]["videos"] == 1 and report["dropped"]["videos"] == 3
    assert report["dropped_videos_by_reason"] == {"duration": 2, "subset": 1}
