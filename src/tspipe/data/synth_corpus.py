"""SynthActions' trimmed-clip corpus: the demo's stand-in for Kinetics.

TSP fine-tunes an encoder that Kinetics taught motion first: many short trimmed clips,
each its own scene, one action each. The untrimmed SynthActions videos cannot play that
role: ActivityNet's convention gives each video one class and its own look, so a model
trained from scratch on a dozen of them tells the videos apart by appearance and learns
no motion (measured: validation accuracy at chance while training accuracy reaches 0.87).
This corpus renders every clip as a fresh scene (new actor, background, camera), so
appearance says nothing about the class and only the motion pattern does. By default no
distractors wander through the clips (``corpus_distractors: 0``): measured with 16-clip
batches from scratch, accuracy on unseen scenes after 100 steps is 0.59 without them (0.50
on cluttered clips) against chance with them, and the demo has a few CPU minutes::

    out_dir/corpus/videos/corpus_<i>.mp4    ``corpus_clips`` clips of ``corpus_clip_seconds``
                                            each, cut together (a hard cut between clips)
    out_dir/corpus/synthactions_corpus.json ActivityNet v1.3 annotations: one segment per
                                            clip, labelled with its pattern (the catalog
                                            registers it as dataset synthactions_corpus)
    out_dir/corpus/corpus_manifest.json     per-video sha256 + config hash, for resuming

Clips are packed into a few longer files rather than one file each, so training opens a
few dozen files instead of thousands (an open costs more than decoding a clip). Classes
are the first ``classes`` patterns, as in the untrimmed videos (Kinetics shares most of
ActivityNet's activities), balanced within each video. The last videos are validation.
Determinism as the untrimmed videos: clip ``k`` of video ``i`` is drawn from
``SeedSequence(seed, spawn_key=(i, CORPUS_STREAM, k))``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np

from tspipe.config import SynthConfig
from tspipe.data.synth_encode import encode_frames, read_manifest, write_manifest
from tspipe.data.synth_render import PATTERNS, RenderSpec, Span, render_frames
from tspipe.errors import StageError
from tspipe.io import atomic_path, atomic_write_json, safe_id, sha256_file, sha256_json

log = logging.getLogger(__name__)

CORPUS_DIR = "corpus"
CORPUS_NAME = "synthactions_corpus.json"
CORPUS_MANIFEST = "corpus_manifest.json"
TAXONOMY_ROOT = "SynthActions corpus"
CORPUS_VERSION = 1  # bump when rendering or encoding of the corpus changes
_CORPUS_STREAM = 2  # beside the untrimmed videos' plan (0) and render (1) streams
_FIELDS = ("seed", "classes", "fps", "width", "height", "crf", "corpus_clips",
           "corpus_clip_seconds", "corpus_distractors")


@dataclass(frozen=True)
class CorpusVideo:
    index: int
    video_id: str
    subset: str
    labels: tuple[str, ...]  # one per clip, in order
    clip_frames: int
    fps: int

    @property
    def frames(self) -> int:
        return self.clip_frames * len(self.labels)


def plan_corpus(cfg: SynthConfig) -> list[CorpusVideo]:
    """Every corpus video's clips and labels; renders nothing."""
    n = cfg.corpus_videos
    share = cfg.corpus_validation_fraction
    n_val = min(max(1, math.floor(share * n + 0.5)), n - 1) if n > 1 else 0
    clip_frames = max(1, round(cfg.corpus_clip_seconds * cfg.fps))
    out = []
    for i in range(n):
        rng = np.random.default_rng(np.random.SeedSequence(cfg.seed,
                                                           spawn_key=(i, _CORPUS_STREAM)))
        # Balanced: each class equally often (up to the remainder), in a random order.
        cycle = np.resize(np.arange(cfg.classes), cfg.corpus_clips)
        labels = tuple(PATTERNS[int(k)] for k in rng.permutation(cycle))
        out.append(CorpusVideo(i, safe_id(f"corpus_{i:03d}"),
                               "validation" if i >= n - n_val else "training", labels,
                               clip_frames, cfg.fps))
    return out


def corpus_frames(video: CorpusVideo, cfg: SynthConfig) -> Iterator[np.ndarray]:
    """The video's frames: each clip a fresh scene whose actor performs its pattern
    throughout."""
    for k, label in enumerate(video.labels):
        rng = np.random.default_rng(np.random.SeedSequence(
            cfg.seed, spawn_key=(video.index, _CORPUS_STREAM, k)))
        spec = RenderSpec(frames=video.clip_frames, fps=video.fps, width=cfg.width,
                          height=cfg.height, pattern=label,
                          spans=(Span(0, video.clip_frames),),
                          distractors=(0, cfg.corpus_distractors + 1))
        yield from render_frames(spec, rng)


def corpus_annotations(videos: list[CorpusVideo], classes: list[str],
                       sha256: dict[str, str]) -> dict[str, Any]:
    taxonomy: list[dict[str, Any]] = [
        {"nodeId": 0, "nodeName": TAXONOMY_ROOT, "parentId": None, "parentName": None}]
    taxonomy += [{"nodeId": k + 1, "nodeName": name, "parentId": 0, "parentName": TAXONOMY_ROOT}
                 for k, name in enumerate(classes)]
    database = {}
    for v in videos:
        # Bounds in whole frames, divided once: the last clip ends exactly at the duration.
        database[v.video_id] = {
            "subset": v.subset, "url": f"videos/{v.video_id}.mp4",
            "duration": v.frames / v.fps, "sha256": sha256[v.video_id],
            "annotations": [{"segment": [k * v.clip_frames / v.fps,
                                         (k + 1) * v.clip_frames / v.fps], "label": label}
                            for k, label in enumerate(v.labels)]}
    return {"version": "VERSION 1.3", "taxonomy": taxonomy, "database": database}


def _path(root: Path, video: CorpusVideo) -> Path:
    return root / "videos" / f"{video.video_id}.mp4"


def _make(video: CorpusVideo, cfg: SynthConfig, root: Path) -> str:
    """Render and encode one corpus file (atomically); its sha256."""
    path = _path(root, video)
    with atomic_path(path) as tmp:
        written = encode_frames(corpus_frames(video, cfg), tmp, cfg.fps, cfg.width, cfg.height,
                                cfg.crf)
    if written != video.frames:
        raise StageError(f"{path}: encoded {written} frames, planned {video.frames}")
    return sha256_file(path)


def generate_corpus(cfg: SynthConfig, out_dir: Path, *, reporter: Any = None) -> tuple[Path, int]:
    """Render and encode the corpus into ``out_dir/corpus``; resumable like the untrimmed
    videos (a file whose sha256 the manifest holds for this config is kept). Returns the
    annotation file and the number of clips."""
    root = Path(out_dir) / CORPUS_DIR
    videos = plan_corpus(cfg)
    config_hash = sha256_json({"corpus": CORPUS_VERSION,
                               "config": {f: getattr(cfg, f) for f in _FIELDS}})
    manifest_path = root / CORPUS_MANIFEST
    old = read_manifest(manifest_path)
    known = old.get("videos", {}) if old.get("config_sha256") == config_hash else {}
    entries: dict[str, dict[str, Any]] = {}
    todo: list[CorpusVideo] = []
    for video in videos:
        path = _path(root, video)
        record = known.get(video.video_id)
        if record is not None and path.is_file() and sha256_file(path) == record.get("sha256"):
            entries[video.video_id] = record
        else:
            todo.append(video)
    if reporter is not None:
        reporter.start("synth corpus", len(videos))
        reporter.advance("synth corpus", len(entries))
    # Files in parallel (each is rendered and encoded on one thread: the same bytes).
    with ProcessPoolExecutor(max_workers=max(1, min(cfg.workers, len(todo) or 1)),
                             mp_context=get_context("spawn")) as pool:
        for video, sha in zip(todo, pool.map(_make, todo, [cfg] * len(todo),
                                             [root] * len(todo)), strict=True):
            entries[video.video_id] = {"sha256": sha, "frames": video.frames}
            write_manifest(manifest_path, config_hash, {**known, **entries}, CORPUS_VERSION)
            if reporter is not None:
                reporter.advance("synth corpus")
    for stale in sorted(set(old.get("videos", {})) - set(entries)):
        (root / "videos" / f"{stale}.mp4").unlink(missing_ok=True)
    write_manifest(manifest_path, config_hash, entries, CORPUS_VERSION)
    classes = list(PATTERNS[:cfg.classes])
    path = atomic_write_json(root / CORPUS_NAME, corpus_annotations(
        videos, classes, {k: e["sha256"] for k, e in entries.items()}))
    return path, sum(len(v.labels) for v in videos)
