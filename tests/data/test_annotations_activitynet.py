"""ActivityNet v1.3 JSON: taxonomy leaves, unknown keys kept, lossless round trips."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from tspipe.data.annotations import (
    SUBSETS,
    Annotations,
    Segment,
    Video,
    read_activitynet,
    read_annotations,
    write_activitynet,
)

TAXONOMY = [
    {"nodeId": 0, "nodeName": "Root", "parentId": None, "parentName": None},
    {"nodeId": 1, "nodeName": "Sports", "parentId": 0, "parentName": "Root"},
    {"nodeId": 2, "nodeName": "Long jump", "parentId": 1, "parentName": "Sports"},
    {"nodeId": 3, "nodeName": "Archery", "parentId": 1, "parentName": "Sports"},
    {"nodeId": 4, "nodeName": "Household", "parentId": 0, "parentName": "Root"},
    {"nodeId": 5, "nodeName": "Mopping floor", "parentId": 4, "parentName": "Household"},
]
DOC = {
    "version": "VERSION 1.3",
    "taxonomy": TAXONOMY,
    "database": {
        "sJFgo9H6zNo": {
            "duration": 139.042, "subset": "training", "resolution": "640x360",
            "url": "https://www.youtube.com/watch?v=sJFgo9H6zNo",
            "annotations": [{"segment": [0.01, 123.42336739937599], "label": "Long jump"},
                            {"segment": [3, 7], "label": "Archery"}],
            "duration_frame": 4170,  # a key tspipe does not model
        },
        "--1DO2V4K74": {"duration": 211.53, "subset": "testing", "resolution": "1280x720",
                        "url": "https://www.youtube.com/watch?v=--1DO2V4K74",
                        "annotations": []},
    },
    "note": {"source": "hand-made"},
}


def _write(path: Path, doc: object) -> Path:
    path.write_text(json.dumps(doc))
    return path


def test_read_taxonomy_leaves_and_fields(tmp_path):
    ann = read_activitynet(_write(tmp_path / "anet.json", DOC))
    assert ann.issues == []
    assert ann.classes == ["Archery", "Long jump", "Mopping floor"]  # leaves, by name
    assert ann.version == "VERSION 1.3"
    video = ann.videos["sJFgo9H6zNo"]
    assert (video.duration, video.subset, video.resolution) == (139.042, "training", "640x360")
    assert video.segments == [Segment(0.01, 123.42336739937599, "Long jump"),
                              Segment(3.0, 7.0, "Archery")]
    assert video.extra == {"duration_frame": 4170}
    assert ann.extra == {"note": {"source": "hand-made"}}
    assert ann.videos["--1DO2V4K74"].segments == []
    assert ann.counts().per_subset == {"testing": 1, "training": 1}


def test_video_ids_read_only_those_entries(tmp_path):
    doc = json.loads(json.dumps(DOC))
    doc["database"]["broken"] = {"subset": "training"}  # no duration: an error if read
    path = _write(tmp_path / "anet.json", doc)
    full = read_activitynet(path)
    some = read_activitynet(path, video_ids=["--1DO2V4K74", "not-in-the-file"])
    assert list(some.videos) == ["--1DO2V4K74"]
    assert some.videos["--1DO2V4K74"] == full.videos["--1DO2V4K74"]
    assert some.issues == [] and [i.video_id for i in full.issues] == ["broken"]
    assert some.classes == full.classes  # from the taxonomy, not the videos read

def test_label_map_overrides_taxonomy(tmp_path):
    path = _write(tmp_path / "anet.json", DOC)
    ann = read_activitynet(path, label_map=["Long jump", "Archery"])
    assert ann.classes == ["Long jump", "Archery"]
    ann = read_activitynet(path, label_map=["Long jump"])
    assert [s.label for s in ann.videos["sJFgo9H6zNo"].segments] == ["Long jump"]
    assert [i.field for i in ann.errors()] == ["annotations[1].label"]


def test_round_trip_is_lossless_and_deterministic(tmp_path):
    ann = read_activitynet(_write(tmp_path / "anet.json", DOC))
    out = write_activitynet(ann, tmp_path / "out.json")
    again = read_activitynet(out)
    assert again.without_report() == ann.without_report()
    doc = json.loads(out.read_text())
    assert list(doc["database"]) == ["sJFgo9H6zNo", "--1DO2V4K74"]  # file order kept
    assert "classes" not in doc  # derivable from the taxonomy: the file stays standard
    assert doc["database"]["sJFgo9H6zNo"]["duration_frame"] == 4170
    again_out = write_activitynet(again, tmp_path / "again.json")
    assert again_out.read_bytes() == out.read_bytes()


def test_real_tsp_valid_to_activitynet_and_back(read_gt, tmp_path, label_maps):
    ann = read_gt("activitynet_v1-3", "valid")
    out = write_activitynet(ann, tmp_path / "activitynet_valid.json")
    again = read_annotations(out, label_map=label_maps["activitynet_v1-3"])
    assert again.issues == []
    assert again.counts() == ann.counts()
    assert again.counts().segments == 7654 - 3
    assert {k: v.segments for k, v in again.videos.items()} == {
        k: v.segments for k, v in ann.videos.items()}
    assert again.without_report() == ann.without_report()  # background, fps, frames too
    entry = json.loads(out.read_text())["database"]["JDg--pjY5gg"]
    assert entry["annotations"][0] == {"segment": [61.420442338881465, 64.56014561469672],
                                       "label": "Beer pong"}
    assert (entry["subset"], entry["duration"], entry["fps"]) == (
        "validation", 126.13333333333334, 30.0)


def test_classes_not_derivable_are_written(tmp_path):
    ann = Annotations(
        videos={"a": Video("a", duration=10.0, subset="validation",
                           segments=[Segment(1.0, 2.0, "b")])},
        classes=["z", "b"])  # label-map order, and a class no segment uses
    out = write_activitynet(ann, tmp_path / "x.json")
    assert json.loads(out.read_text())["classes"] == ["z", "b"]
    assert read_activitynet(out).classes == ["z", "b"]


# Keys that a video's ``extra`` never holds: the reader maps them onto Video fields.
_MODELLED = {"subset", "duration", "resolution", "url", "annotations", "fps", "num_frames",
             "filename", "background"}
_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=6)
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner,
                                                                 max_size=3),
    max_leaves=6)


@st.composite
def _intervals(draw, duration: float) -> list[tuple[float, float]]:
    time = st.floats(min_value=0.0, max_value=duration)
    pairs = [tuple(sorted(p)) for p in draw(st.lists(st.tuples(time, time), max_size=4))]
    return [(a, b) for a, b in pairs if a < b]


@st.composite
def _annotations(draw) -> Annotations:
    classes = draw(st.lists(st.text(min_size=1, max_size=8), min_size=1, max_size=5,
                            unique=True))
    videos = {}
    for vid in draw(st.lists(st.text(min_size=1, max_size=10), max_size=5, unique=True)):
        duration = draw(st.floats(min_value=0.1, max_value=1e5))
        videos[vid] = Video(
            vid, duration=duration, subset=draw(st.sampled_from(SUBSETS)),
            fps=draw(st.none() | st.floats(min_value=1, max_value=240)),
            num_frames=draw(st.none() | st.integers(0, 10**7)),
            url=draw(st.none() | st.text(max_size=8)),
            filename=draw(st.none() | st.text(max_size=8)),
            resolution=draw(st.none() | st.just("320x240")),
            segments=[Segment(a, b, draw(st.sampled_from(classes)))
                      for a, b in draw(_intervals(duration))],
            background=draw(_intervals(duration)),
            extra=draw(st.dictionaries(st.text(max_size=6).filter(lambda k: k not in _MODELLED),
                                       _json, max_size=2)))
    taxonomy = None
    if draw(st.booleans()):
        taxonomy = [{"nodeId": 0, "nodeName": "Root", "parentId": None, "parentName": None}]
        taxonomy += [{"nodeId": i + 1, "nodeName": c, "parentId": 0, "parentName": "Root"}
                     for i, c in enumerate(classes)]
    return Annotations(videos=videos, classes=classes, taxonomy=taxonomy,
                       version=draw(st.none() | st.text(max_size=8)))


@settings(max_examples=50, deadline=None)
@given(_annotations())
def test_round_trip_property(ann):
    with tempfile.TemporaryDirectory() as tmp:
        out = write_activitynet(ann, Path(tmp) / "anet.json")
        again = read_activitynet(out)
    assert again.issues == []
    assert again.without_report() == ann.without_report()
