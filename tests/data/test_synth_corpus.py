"""The base stage's trimmed-clip corpus: balanced clips, a fresh scene per clip, real
H.264 files whose annotations tile them, the same bytes at any worker count, resume."""

from __future__ import annotations

import hashlib
import itertools
import json

import av
import numpy as np
import pytest

from tspipe.config import SynthConfig
from tspipe.data.synth_corpus import (
    CORPUS_DIR,
    CORPUS_NAME,
    generate_corpus,
    plan_corpus,
)
from tspipe.data.synth_render import PATTERNS

TINY = SynthConfig(classes=3, seed=3, fps=10, width=64, height=48, corpus_videos=3,
                   corpus_clips=5, corpus_clip_seconds=1.6, corpus_validation_fraction=0.34)


def _frames(path):
    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


def _hashes(root):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted((root / CORPUS_DIR / "videos").glob("*.mp4"))}


def test_plan_balances_the_classes_and_keeps_the_last_videos_for_validation():
    cfg = TINY.model_copy(update={"corpus_videos": 8, "corpus_clips": 7})
    videos = plan_corpus(cfg)
    assert [v.subset for v in videos] == ["training"] * 5 + ["validation"] * 3
    for v in videos:
        counts = [v.labels.count(p) for p in PATTERNS[:3]]
        assert sorted(counts) == [2, 2, 3] and len(v.labels) == 7  # 7 clips, 3 classes
        assert v.clip_frames == 16
    assert len({v.labels for v in videos}) > 1  # each file its own order
    assert plan_corpus(cfg) == videos


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    path, clips = generate_corpus(TINY.model_copy(update={"workers": 2}), root)
    return root, path, clips


def test_corpus_files_hold_one_fresh_scene_per_annotated_clip(corpus):
    root, path, clips = corpus
    assert path == root / CORPUS_DIR / CORPUS_NAME and clips == 15
    db = json.loads(path.read_text())["database"]
    assert sorted(db) == ["corpus_000", "corpus_001", "corpus_002"]
    assert [db[v]["subset"] for v in sorted(db)] == ["training", "training", "validation"]
    for vid, entry in db.items():
        frames = _frames(root / CORPUS_DIR / entry["url"])
        assert frames.shape == (5 * 16, 48, 64, 3), vid
        segs = [a["segment"] for a in entry["annotations"]]
        assert segs[0][0] == 0 and segs[-1][1] == pytest.approx(entry["duration"]) == 8.0
        assert all(a[1] == b[0] for a, b in itertools.pairwise(segs))  # exact: tiled
        assert {a["label"] for a in entry["annotations"]} == set(PATTERNS[:3])
        assert all(a[1] <= entry["duration"] for a in segs)  # never clamped
        # a cut between clips (new background, actor, camera) changes the picture far more
        # than any step inside a clip (measured: cuts 17-63, steps inside at most 6)
        step = np.abs(np.diff(frames.astype(np.float32), axis=0)).mean(axis=(1, 2, 3))
        cuts = step[15::16]  # frame 16k - 1 -> 16k
        inside = np.delete(step, np.arange(15, len(step), 16))
        assert cuts.min() > 2 * inside.max(), vid


def test_same_bytes_with_one_worker_and_resume_keeps_good_files(corpus, tmp_path):
    root, _, _ = corpus
    one = tmp_path / "one"
    generate_corpus(TINY.model_copy(update={"workers": 1}), one)
    assert _hashes(one) == _hashes(root)
    victim = one / CORPUS_DIR / "videos" / "corpus_001.mp4"
    victim.write_bytes(b"broken")
    keep = one / CORPUS_DIR / "videos" / "corpus_000.mp4"
    stamp = keep.stat().st_mtime_ns
    generate_corpus(TINY.model_copy(update={"workers": 1}), one)
    assert _hashes(one) == _hashes(root) and keep.stat().st_mtime_ns == stamp
    # fewer files: the extra one goes
    generate_corpus(TINY.model_copy(update={"workers": 1, "corpus_videos": 2}), one)
    assert sorted(_hashes(one)) == ["corpus_000.mp4", "corpus_001.mp4"]
