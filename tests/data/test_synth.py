"""SynthActions: real, deterministic, resumable videos whose actions are learnable."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import av
import decord
import numpy as np
import pytest

from tspipe.config import SynthConfig
from tspipe.data.synth import ANNOTATIONS_NAME, MANIFEST_NAME, generate, to_activitynet
from tspipe.data.synth_render import PATTERNS, RenderSpec, Span, render_video
from tspipe.errors import ConfigError

SMALL = SynthConfig(videos=3, classes=2, seed=7, min_duration=20, max_duration=24, fps=12,
                    width=64, height=48, validation_fraction=0.34, min_instances=2,
                    max_instances=3, min_action=3, max_action=5, min_gap=2, corpus_videos=0)


def tree_hashes(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def load_db(root: Path) -> dict:
    return json.loads((root / ANNOTATIONS_NAME).read_text())


def gray_frames(path: Path) -> np.ndarray:
    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="gray") for f in container.decode(video=0)])


@pytest.fixture(scope="module")
def twice(tmp_path_factory):
    roots = [tmp_path_factory.mktemp(name) for name in ("a", "b")]
    return roots, [generate(SMALL, root) for root in roots]


def test_same_config_gives_identical_bytes(twice):
    (a, b), (ra, rb) = twice
    hashes = tree_hashes(a)
    assert len([k for k in hashes if k.endswith(".mp4")]) == SMALL.videos
    assert hashes == tree_hashes(b)
    assert ra.sha256 == rb.sha256 == hashes[ANNOTATIONS_NAME]
    assert (ra.videos, ra.reused, ra.classes) == (3, 0, ["rise", "fall"])
    assert ra.metrics()["classes"] == 2.0
    assert json.loads(json.dumps(ra.to_dict()))["annotations_path"] == str(ra.annotations_path)
    assert ra.frames == sum(round(v["duration"] * SMALL.fps) for v in load_db(a)["database"]
                            .values())


def test_same_bytes_in_another_process_with_another_heap_and_threads(twice, tmp_path):
    """Same seed, same bytes on any machine: a fresh process whose heap is filled with
    another byte (MALLOC_PERTURB_) and that runs with one thread gives the files of the
    in-process run (x264's mb-tree once read uninitialized memory: 1 run in 3 differed)."""
    (a, _), _ = twice
    script = ("import sys; from pathlib import Path; from tspipe.config import SynthConfig; "
              "from tspipe.data.synth import generate; "
              f"generate(SynthConfig.model_validate_json({SMALL.model_dump_json()!r}), "
              "Path(sys.argv[1]))")
    env = {**os.environ, "MALLOC_PERTURB_": "77", "OMP_NUM_THREADS": "1",
           "OPENBLAS_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "-c", script, str(tmp_path / "c")], env=env, check=True,
                   timeout=300)
    assert tree_hashes(tmp_path / "c") == tree_hashes(a)


def test_videos_decode_with_decord_and_pyav(twice):
    (root, _), _ = twice
    for video_id, video in load_db(root)["database"].items():
        path = root / video["url"]
        assert path == root / "videos" / f"{video_id}.mp4"
        frames = round(video["duration"] * SMALL.fps)
        assert video["duration"] == frames / SMALL.fps
        assert video["resolution"] == f"{SMALL.width}x{SMALL.height}"
        reader = decord.VideoReader(str(path))
        assert len(reader) == frames
        assert reader[len(reader) - 1].shape == (SMALL.height, SMALL.width, 3)
        assert reader.get_avg_fps() == pytest.approx(SMALL.fps)
        with av.open(str(path)) as container:
            assert "creation_time" not in container.metadata
            stream = container.streams.video[0]
            assert (stream.codec_context.name, stream.average_rate) == ("h264", SMALL.fps)
            decoded = [f for f in container.decode(stream)]
        assert len(decoded) == frames
        assert (decoded[0].width, decoded[0].height) == (SMALL.width, SMALL.height)
        assert b"Lavf" not in path.read_bytes()  # bitexact: no muxer version string


def test_annotations_respect_the_config(twice):
    (root, _), _ = twice
    data = load_db(root)
    assert data["version"] == "VERSION 1.3"
    root_node, *leaves = data["taxonomy"]
    assert root_node["parentId"] is None
    assert [n["nodeName"] for n in leaves] == ["rise", "fall"]
    assert all(n["parentId"] == root_node["nodeId"] for n in leaves)
    subsets = {v["subset"] for v in data["database"].values()}
    assert subsets == {"training", "validation"}
    eps = 1e-9
    for video_id, video in data["database"].items():
        segments = [a["segment"] for a in video["annotations"]]
        assert SMALL.min_instances <= len(segments) <= SMALL.max_instances, video_id
        assert len({a["label"] for a in video["annotations"]}) == 1
        bounds = [0.0, *[t for seg in segments for t in seg], video["duration"]]
        assert bounds == sorted(bounds)
        # Background before, between and after the actions: (0, s0), (e0, s1), ..., (eN, D).
        background = list(zip(bounds[0::2], bounds[1::2], strict=True))
        assert len(background) == len(segments) + 1
        assert all(e - s >= SMALL.min_gap - eps for s, e in background), video_id
        for t0, t1 in segments:
            assert SMALL.min_action - eps <= t1 - t0 <= SMALL.max_action + eps


def test_actions_move_more_than_background_which_is_not_static(twice):
    (root, _), _ = twice
    for video_id, video in load_db(root)["database"].items():
        diffs = np.abs(np.diff(gray_frames(root / video["url"]).astype(np.float32), axis=0))
        energy = diffs.mean(axis=(1, 2))  # (T-1,) mean absolute frame difference, grey levels
        action = np.zeros(len(energy), bool)
        for a in video["annotations"]:
            t0, t1 = a["segment"]
            action[round(t0 * SMALL.fps):round(t1 * SMALL.fps) - 1] = True
        background = energy[~action]
        assert energy[action].mean() > 1.05 * background.mean(), video_id
        # Jitter and distractors: the background moves in nearly every frame pair.
        assert background.mean() > 0.15, video_id
        assert np.mean(background < 0.02) < 0.2, video_id


def action_only(pattern: str, seed: int = 5) -> np.ndarray:
    """(T, H, W) absolute difference between a clip with one action and the same without."""
    spans = (Span(15, 75),)
    with_action = render_video(RenderSpec(90, 15, 64, 48, pattern, spans),
                               np.random.default_rng(seed))
    without = render_video(RenderSpec(90, 15, 64, 48, pattern, ()), np.random.default_rng(seed))
    return np.abs(with_action.astype(np.int16) - without.astype(np.int16)).sum(axis=-1)


def test_vertical_classes_move_vertically_shake_horizontally():
    yy, xx = np.mgrid[0:48, 0:64]

    def spread(pattern: str) -> tuple[float, float]:
        diff = action_only(pattern)[15:75].astype(np.float64)
        diff = diff[diff.sum(axis=(1, 2)) > 0]
        mass = diff.sum(axis=(1, 2))
        cx, cy = (diff * xx).sum(axis=(1, 2)) / mass, (diff * yy).sum(axis=(1, 2)) / mass
        return cx.std(), cy.std()  # px: where the actor's change is, frame to frame

    for pattern in ("rise", "fall"):
        sx, sy = spread(pattern)
        assert sy > 1.5 * sx, pattern
    sx, sy = spread("shake")
    assert sx > 1.5 * sy


@pytest.mark.parametrize("pattern", PATTERNS)
def test_an_action_changes_only_its_span(pattern):
    diff = action_only(pattern).sum(axis=(1, 2))
    assert diff[:15].sum() == 0
    assert (diff[20:70] > 0).mean() > 0.5
    if pattern != "spin":  # a spin leaves the actor turned
        assert diff[75:].sum() == 0


def test_resume_reuses_then_config_changes_regenerate(tmp_path):
    cfg = SMALL.model_copy(update={"videos": 2, "max_duration": 20})
    first = generate(cfg, tmp_path)
    before = tree_hashes(tmp_path)
    again = generate(cfg, tmp_path)
    assert (again.reused, again.sha256) == (2, first.sha256)
    assert tree_hashes(tmp_path) == before

    # Video i does not depend on how many videos there are: a third one reuses the two.
    more = generate(cfg.model_copy(update={"videos": 3}), tmp_path)
    assert more.reused == 2
    assert all(tree_hashes(tmp_path)[k] == h for k, h in before.items() if k.endswith(".mp4"))

    # A damaged file is re-encoded to the same bytes.
    damaged = tmp_path / "videos" / "synth_001.mp4"
    damaged.write_bytes(b"not a video")
    repaired = generate(cfg, tmp_path)
    assert repaired.reused == 1
    assert tree_hashes(tmp_path) == before  # synth_002 was dropped again with videos=2

    reseeded = generate(cfg.model_copy(update={"seed": 8}), tmp_path)
    assert reseeded.reused == 0
    after = tree_hashes(tmp_path)
    assert all(after[k] != before[k] for k in before if k.endswith(".mp4"))
    assert json.loads((tmp_path / MANIFEST_NAME).read_text())["videos"].keys() == {
        "synth_000", "synth_001"}


def test_reporter_sees_every_video(tmp_path):
    class Recorder:
        def __init__(self):
            self.calls = []

        def start(self, task, total):
            self.calls.append(("start", task, total))

        def advance(self, task, n=1):
            self.calls.append(("advance", task, n))

    recorder = Recorder()
    generate(SMALL.model_copy(update={"videos": 2, "max_duration": 20}), tmp_path,
             reporter=recorder)
    assert recorder.calls == [("start", "synth", 2), ("advance", "synth", 1),
                              ("advance", "synth", 1)]


@pytest.mark.parametrize(("update", "field"), [
    ({"videos": 1}, "videos"),
    ({"min_instances": 4, "max_instances": 4, "min_action": 3, "min_duration": 20}, "min_gap"),
])
def test_impossible_configs_fail_before_writing(tmp_path, update, field):
    with pytest.raises(ConfigError, match=field):
        generate(SMALL.model_copy(update=update), tmp_path)
    assert not any(tmp_path.iterdir())


def test_to_activitynet_shape():
    from tspipe.data.synth import SynthVideo

    video = SynthVideo(index=0, video_id="synth_000", subset="training", label="spin",
                       frames=45, fps=15, width=64, height=48, spans=(Span(15, 30),))
    data = to_activitynet([video], ["rise", "spin"])
    assert data["database"] == {"synth_000": {
        "subset": "training", "url": "videos/synth_000.mp4", "duration": 3.0,
        "resolution": "64x48", "annotations": [{"segment": [1.0, 2.0], "label": "spin"}]}}
    assert [(n["nodeId"], n["nodeName"], n["parentId"]) for n in data["taxonomy"]] == [
        (0, "SynthActions", None), (1, "rise", 0), (2, "spin", 0)]


@pytest.mark.slow
def test_default_benchmark_is_reproducible(tmp_path):
    cfg = SynthConfig(corpus_videos=0)  # the benchmark; the corpus: test_synth_corpus.py
    results = [generate(cfg, tmp_path / name) for name in ("a", "b")]
    assert tree_hashes(tmp_path / "a") == tree_hashes(tmp_path / "b")
    assert results[0].videos == 12 and results[0].classes == ["rise", "fall", "spin", "shake"]
    db = load_db(tmp_path / "a")["database"]
    assert {v["annotations"][0]["label"] for v in db.values()} == set(results[0].classes)
    assert all(20 <= v["duration"] <= 90 for v in db.values())


def test_hard_mimics_perform_between_the_actions_only():
    from tspipe.data.synth_render import _gaps

    assert _gaps((Span(10, 20), Span(15, 30), Span(40, 50)), 60) == [(0, 10), (30, 40),
                                                                       (50, 60)]
    assert _gaps((Span(0, 60),), 60) == []
    # A hard video differs from the normal one only where the extras are: the actor's
    # frames within its actions still show the action (the scene around it moves more).
    spans = (Span(20, 50),)
    spec = dict(frames=80, fps=12, width=64, height=48, pattern="spin", spans=spans,
                patterns=PATTERNS[:4])
    hard = render_video(RenderSpec(**spec, difficulty="hard"), np.random.default_rng(4))
    again = render_video(RenderSpec(**spec, difficulty="hard"), np.random.default_rng(4))
    normal = render_video(RenderSpec(**spec), np.random.default_rng(4))
    assert np.array_equal(hard, again) and not np.array_equal(hard, normal)


def test_hard_videos_are_deterministic_and_keyed_apart(tmp_path):
    cfg = SMALL.model_copy(update={"videos": 2, "validation_fraction": 0.5,
                                   "difficulty": "hard", "min_action": 0.5})
    a, b = (generate(cfg, tmp_path / n) for n in ("a", "b"))
    assert tree_hashes(tmp_path / "a") == tree_hashes(tmp_path / "b") and a.sha256 == b.sha256
    # The same plan as normal videos (spans, lengths), other pictures.
    normal = generate(cfg.model_copy(update={"difficulty": "normal"}), tmp_path / "n")
    assert load_db(tmp_path / "a")["database"].keys() == load_db(tmp_path / "n")["database"] \
        .keys()
    assert tree_hashes(tmp_path / "a")["videos/synth_000.mp4"] != \
        tree_hashes(tmp_path / "n")["videos/synth_000.mp4"]
    assert normal.reused == 0
    # Switching difficulty in place regenerates (the manifest's config hash differs).
    again = generate(cfg.model_copy(update={"difficulty": "normal"}), tmp_path / "a")
    assert again.reused == 0
    assert tree_hashes(tmp_path / "a") == tree_hashes(tmp_path / "n")
