"""Bad annotation entries never vanish: each video ingest leaves out is an issue in
data/annotations/report.json naming it, the counts (kept, dropped by reason) add up in the
report and in metrics/ingest.json, the rest goes on; with ``dataset.strict: true`` an error
stops the run with exit code 2. A file that cannot be read at all ends the command with
exit code 2 and a message naming the file, without a traceback."""

from __future__ import annotations

import codecs
import json

import pytest
from reliability_helpers import assert_clean_failure, tspipe_in_process, write_params

from tspipe.config import load_params
from tspipe.doors.runner import run_stage
from tspipe.paths import RunPaths
from tspipe.reporting import NullReporter

# video id -> (subset, the issue's field, severity and words; None: kept)
CASES = {
    "v_good": ("training", None),
    "-cwPzzcNpGs": ("validation", None),  # a raw ActivityNet id: kept
    "subset_case": ("Validation", ("subset", "error", "did you mean 'validation'")),
    "subset_typo": ("trainng", ("subset", "error", "did you mean 'training'")),
    "subset_word": ("valid", ("subset", "error", "did you mean 'validation'")),
    "subset_near_unkept": ("Testing", ("subset", "error",
                                       "'testing' is not in dataset.subsets either")),
    "subset_other": ("testing", ("subset", "warning", "is not one of dataset.subsets")),
    "vidéo_unicode": ("training", ("video id", "error", "cannot be used as a file name")),
    "id with space": ("training", ("video id", "error", "cannot be used as a file name")),
    "a/b": ("training", ("video id", "error", "cannot be used as a file name")),
    "..": ("training", ("video id", "error", "cannot be used as a file name")),
    ".hidden": ("training", ("video id", "error", "cannot be used as a file name")),
}


def _annotations(path) -> None:
    db = {vid: {"subset": subset, "duration": 30.0, "url": f"videos/{vid}.mp4",
                "annotations": [{"segment": [2.0, 9.0], "label": "rise"}]}
          for vid, (subset, _) in CASES.items()}
    path.write_text(json.dumps({"version": "1.3", "database": db}))


def _ingest(root):
    return run_stage("ingest", load_params(root / "params.yaml"), RunPaths.at(root),
                     NullReporter(), track=False).result


def test_every_left_out_video_is_an_issue_and_the_counts_add_up(tmp_path, ledger) -> None:
    root = tmp_path / "run"
    write_params(root, synth={"enabled": False},
                 dataset={"annotations": "ann.json", "subsets": ["training", "validation"]})
    _annotations(root / "ann.json")
    result = _ingest(root)
    report = json.loads((root / "data/annotations/report.json").read_text())
    issues = {i["video_id"]: i for i in report["issues"]}
    kept = sorted(v for v, (_, why) in CASES.items() if why is None)
    assert sorted(json.loads((root / "data/annotations/annotations.json").read_text())
                  ["database"]) == kept
    summary = report["summary"]
    assert result.videos == summary["kept"]["videos"] == len(kept)
    assert summary["dropped"]["videos"] == len(CASES) - len(kept)
    assert summary["dropped_videos_by_reason"] == {"subset": 5, "video_id": 5}
    metrics = json.loads((root / "metrics/ingest.json").read_text())
    assert (metrics["videos"], metrics["videos_dropped"]) == (len(kept), len(CASES) - len(kept))
    assert (metrics["videos_dropped_subset"], metrics["videos_dropped_video_id"]) == (5, 5)
    for vid, (_, why) in CASES.items():
        if why is None:
            assert vid not in issues
            continue
        field, severity, words = why
        issue = issues[vid]
        assert (issue["field"], issue["action"], issue["severity"]) == (
            field, "dropped_video", severity), issue
        assert words in issue["message"], issue
        assert issue["file"].endswith("ann.json"), issue
        if field == "subset":  # which subsets are kept, and what the file says
            assert "training, validation" in issue["message"], issue
            assert repr(CASES[vid][0]) in issue["message"], issue
        ledger.record("bad_input", f"annotation-{field.replace(' ', '-')}:{vid}")
    assert result.errors == 9 and result.warnings == 1


def test_strict_stops_on_an_unsafe_id(tmp_path, monkeypatch, capsys, ledger) -> None:
    root = tmp_path / "run"
    write_params(root, synth={"enabled": False},
                 dataset={"annotations": "ann.json", "strict": True})
    _annotations(root / "ann.json")
    proc = tspipe_in_process(monkeypatch, capsys, "stage", "ingest", "--root", str(root),
                     "--params", str(root / "params.yaml"), "--no-track")
    assert_clean_failure(proc, "ann.json", "dataset.strict", "cannot be used as a file name")
    assert not (root / "data/annotations/annotations.json").exists()
    ledger.record("bad_input", "annotation-strict")


# Entries the reader checks. kind -> (entry, field, action, severity, words of the message)
_SEG = {"segment": [2.0, 9.0], "label": "rise"}
ENTRIES = {
    "negative-segment": ({"annotations": [{"segment": [-2.0, 5.0], "label": "rise"}]},
                         "annotations[0].segment", "clamped", "warning", "start -2.0 s < 0"),
    "reversed-segment": ({"annotations": [{"segment": [9.0, 2.0], "label": "rise"}]},
                         "annotations[0].segment", "dropped_segment", "error",
                         "end 2.0 s <= start 9.0 s"),
    "segment-past-duration": ({"annotations": [{"segment": [25.0, 40.0], "label": "rise"}]},
                              "annotations[0].segment", "clamped", "warning",
                              "end 40.0 s > video duration 30.0 s"),
    "segment-after-end": ({"annotations": [{"segment": [31.0, 40.0], "label": "rise"}]},
                          "annotations[0].segment", "dropped_segment", "error",
                          "start 31.0 s >= video duration 30.0 s"),
    "segment-not-a-pair": ({"annotations": [{"segment": [1.0], "label": "rise"}]},
                           "annotations[0].segment", "dropped_segment", "error",
                           "not a [t_start, t_end] pair"),
    "segment-text-time": ({"annotations": [{"segment": ["two", 9.0], "label": "rise"}]},
                          "annotations[0].segment[0]", "dropped_segment", "error",
                          "not a finite number: 'two'"),
    "missing-label": ({"annotations": [{"segment": [2.0, 9.0]}]}, "annotations[0].label",
                      "dropped_segment", "error", "missing or not a string"),
    "missing-duration": ({"duration": None}, "duration", "dropped_video", "error", "missing"),
    "zero-duration": ({"duration": 0}, "duration", "dropped_video", "error", "must be > 0"),
    "text-duration": ({"duration": "long"}, "duration", "dropped_video", "error",
                      "not a finite number: 'long'"),
    "missing-subset": ({"subset": None}, "subset", "dropped_video", "error",
                       "missing or not a string"),
    "non-numeric-fps": ({"fps": "fast"}, "fps", "kept", "warning", "unexpected value 'fast'"),
    "annotations-not-a-list": ({"annotations": {"segment": [1, 2]}}, "annotations",
                               "dropped_video", "error", "not a list"),
    "entry-not-an-object": (["training", 30.0], "database", "dropped_video", "error",
                            "entry is a list, not an object"),
}


def _entry(kind: str) -> object:
    change = ENTRIES[kind][0]
    if not isinstance(change, dict):
        return change
    entry = {"subset": "training", "duration": 30.0, "annotations": [_SEG]}
    entry.update(change)
    return {k: v for k, v in entry.items() if v is not None}


@pytest.fixture(scope="module")
def entries_run(tmp_path_factory):
    """One ingest over a file holding a good video, every kind of :data:`ENTRIES` (one
    video each) and a duplicate id (JSON keeps the last silently; the reader the first)."""
    root = tmp_path_factory.mktemp("bad-entries") / "run"
    write_params(root, synth={"enabled": False}, dataset={"annotations": "ann.json"})
    items = [("good", {"subset": "training", "duration": 30.0, "annotations": [_SEG]}),
             *((kind, _entry(kind)) for kind in ENTRIES),
             ("good", {"subset": "training", "duration": 99.0, "annotations": []})]
    db = ", ".join(f"{json.dumps(vid)}: {json.dumps(entry)}" for vid, entry in items)
    (root / "ann.json").write_text(f'{{"database": {{{db}}}}}')
    result = _ingest(root)
    report = json.loads((root / "data/annotations/report.json").read_text())
    return root, result, report


@pytest.mark.parametrize("kind", ENTRIES)
def test_each_bad_entry_is_reported_by_field_and_the_rest_goes_on(entries_run, kind,
                                                                   ledger) -> None:
    root, _, report = entries_run
    _, field, action, severity, words = ENTRIES[kind]
    mine = [i for i in report["issues"] if i["video_id"] == kind]
    assert [(i["field"], i["action"], i["severity"]) for i in mine] == [
        (field, action, severity)], mine
    assert words in mine[0]["message"] and mine[0]["file"].endswith("ann.json"), mine
    written = json.loads((root / "data/annotations/annotations.json").read_text())["database"]
    assert (kind in written) == (action != "dropped_video")
    assert written["good"]["duration"] == 30.0  # the first of the duplicate ids is kept
    ledger.record("bad_input", f"annotation-{kind}")


def test_entry_counts_add_up(entries_run, ledger) -> None:
    root, result, report = entries_run
    summary = report["summary"]
    dropped_videos = [k for k, e in ENTRIES.items() if e[2] == "dropped_video"]
    # every entry of the file: kept, or dropped with its reason (the duplicate: "database")
    assert summary["kept"]["videos"] == result.videos == 1 + len(ENTRIES) - len(dropped_videos)
    assert summary["dropped"]["videos"] == len(dropped_videos) + 1
    assert summary["dropped_videos_by_reason"] == {
        "annotations": 1, "database": 2, "duration": 3, "subset": 1}
    assert summary["dropped"]["segments"] == sum(e[2] == "dropped_segment"
                                                 for e in ENTRIES.values())
    assert summary["clamped"]["segments"] == 2
    metrics = json.loads((root / "metrics/ingest.json").read_text())
    assert metrics["videos_dropped"] == len(dropped_videos) + 1
    assert metrics["videos_dropped_duration"] == 3
    assert metrics["segments_dropped"] == summary["dropped"]["segments"]
    assert metrics["segments_clamped"] == 2
    dup = [i for i in report["issues"] if i["video_id"] == "good"]
    assert [(i["field"], i["action"]) for i in dup] == [("database", "dropped_video")]
    assert "appears twice" in dup[0]["message"]
    ledger.record("bad_input", "annotation-duplicate-id")



_UTF16 = codecs.BOM_UTF16_LE + '{"database": {}}'.encode("utf-16-le")
# Files that cannot be read at all. kind -> (bytes, words of the message)
FILES = {
    "not-json": (b"video,subset\nv1,training\n", ["malformed JSON at line 1, column 1"]),
    "truncated-json": (b'{"database": {"v1": {"subset": "tra', ["malformed JSON at line 1"]),
    "json-list": (b'[{"v1": {"subset": "training"}}]',
                  ["the top level is a list", "'database'"]),
    "no-database": (b'{"videos": {}}', ["field 'database'", "no top-level 'database'"]),
    "database-list": (b'{"database": []}', ["field 'database'", "a list"]),
    "utf-16": (_UTF16, ["UTF-16", "save it as UTF-8"]),
    "latin-1": ('{"database": {"vidéo": {}}}'.encode("latin-1"), ["not UTF-8"]),
    "empty-file": (b"", ["malformed JSON at line 1, column 1"]),
}


@pytest.mark.parametrize("kind", FILES)
def test_an_unreadable_file_is_a_named_error(tmp_path, monkeypatch, capsys, kind,
                                             ledger) -> None:
    data, words = FILES[kind]
    path = tmp_path / "ann.json"
    path.write_bytes(data)
    proc = tspipe_in_process(monkeypatch, capsys, "annotations", str(path))
    assert_clean_failure(proc, str(path), *words)
    ledger.record("bad_input", f"annotation-file-{kind}")


def test_a_utf8_bom_is_read(tmp_path, monkeypatch, capsys, ledger) -> None:
    """Windows editors save JSON with a byte order mark; the TSP CSVs are read with one."""
    path = tmp_path / "ann.json"
    doc = {"database": {"v1": {"subset": "training", "duration": 30.0, "annotations": [_SEG]}}}
    path.write_bytes(codecs.BOM_UTF8 + json.dumps(doc).encode())
    proc = tspipe_in_process(monkeypatch, capsys, "annotations", "--json", str(path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert json.loads(proc.stdout)["kept"] == {"videos": 1, "segments": 1, "background": 0}
    ledger.record("bad_input", "annotation-file-utf8-bom")


def test_an_empty_database_stops_ingest_by_name(tmp_path, monkeypatch, capsys,
                                                ledger) -> None:
    root = tmp_path / "run"
    write_params(root, synth={"enabled": False}, dataset={"annotations": "ann.json"})
    (root / "ann.json").write_text('{"version": "1.3", "database": {}}')
    proc = tspipe_in_process(monkeypatch, capsys, "stage", "ingest", "--root", str(root),
                     "--params", str(root / "params.yaml"), "--no-track")
    assert_clean_failure(proc, "ann.json", "no video in subsets", "training")
    ledger.record("bad_input", "annotation-empty-database")
