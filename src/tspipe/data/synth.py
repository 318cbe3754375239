"""SynthActions: a small, real untrimmed-video benchmark of encoded H.264 files.

Each video shows one action class (ActivityNet's convention: one activity per video)
performed several times, separated by background in which the same actor idles while
distractors wander and the camera jitters. The frames come from ``synth_render``; this
module plans the videos (lengths, action spans, subsets), encodes them and writes the
ActivityNet v1.3 annotations next to them::

    out_dir/videos/<video_id>.mp4
    out_dir/synthactions.json       annotations (urls relative to this file's folder)
    out_dir/synth_manifest.json     per-video sha256 + config hash, for resuming

Determinism: video ``i`` is drawn from ``SeedSequence(seed, spawn_key=(i, ...))``, so it does
not depend on how many videos are made; the encoder runs on one thread (x264's output depends
on its thread count) and the muxer writes no version string or creation time. The same
config on the same library builds gives the same bytes.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from tspipe.config import SynthConfig
from tspipe.data.synth_corpus import generate_corpus
from tspipe.data.synth_encode import encode_frames, read_manifest, write_manifest
from tspipe.data.synth_render import PATTERNS, RenderSpec, Span, render_frames
from tspipe.errors import ConfigError, StageError
from tspipe.io import atomic_path, atomic_write_json, result_dict, safe_id, sha256_file, sha256_json

log = logging.getLogger(__name__)

ANNOTATIONS_NAME = "synthactions.json"
MANIFEST_NAME = "synth_manifest.json"
VIDEOS_DIR = "videos"
TAXONOMY_ROOT = "SynthActions"
# Bump when rendering or encoding changes the bytes a config produces: videos regenerate.
GENERATOR_VERSION = 2  # 2: x264 without mb-tree (same bytes whatever the heap held)
# Config fields a video's bytes depend on; `videos` and `validation_fraction` only change
# which videos exist and their subsets, so adding videos reuses the ones already made.
_RENDER_FIELDS = ("seed", "classes", "min_duration", "max_duration", "fps", "width", "height",
                  "min_instances", "max_instances", "min_action", "max_action", "min_gap", "crf")
# Child-seed streams per video: the plan (lengths, spans) and the pictures are independent.
_PLAN_STREAM, _RENDER_STREAM = 0, 1
_EPS = 1e-9


class _Progress(Protocol):
    def start(self, task: str, total: int | None) -> None: ...

    def advance(self, task: str, n: int = 1) -> None: ...


@dataclass(frozen=True)
class SynthVideo:
    """One planned video; ``spans`` are its action instances in frames, sorted."""

    index: int
    video_id: str
    subset: str
    label: str
    frames: int
    fps: int
    width: int
    height: int
    spans: tuple[Span, ...]

    @property
    def duration(self) -> float:
        """Seconds: the encoded frame count over the constant frame rate."""
        return self.frames / self.fps

    @property
    def segments(self) -> list[tuple[float, float]]:
        """Action instances as (t_start, t_end) in seconds."""
        return [(s.start / self.fps, s.stop / self.fps) for s in self.spans]


@dataclass(frozen=True)
class SynthResult:
    out_dir: Path
    annotations_path: Path
    videos: int
    segments: int
    classes: list[str]
    frames: int  # total over all videos
    seconds: float  # wall time of generate()
    reused: int  # videos whose existing file matched the manifest and was kept
    sha256: str  # of the annotation file
    corpus_clips: int = 0  # trimmed clips of the base stage's corpus (synth_corpus)

    def metrics(self) -> dict[str, float]:
        m = {k: float(getattr(self, k)) for k in ("videos", "segments", "frames", "seconds",
                                                   "reused", "corpus_clips")}
        m["classes"] = float(len(self.classes))
        return m

    def to_dict(self) -> dict[str, Any]:
        return result_dict(self)


def generate(cfg: SynthConfig, out_dir: Path, *, reporter: _Progress | None = None
             ) -> SynthResult:
    """Render, encode and annotate ``cfg.videos`` videos into ``out_dir``; resumable.

    A video whose file exists with the sha256 the manifest recorded for the same render
    config is kept; everything else is (re)encoded, each file written atomically.
    """
    started = time.perf_counter()
    out_dir = Path(out_dir)
    videos = plan_videos(cfg)
    classes = list(PATTERNS[:cfg.classes])
    config_hash = _config_hash(cfg)
    manifest_path = out_dir / MANIFEST_NAME
    old = read_manifest(manifest_path)
    known = old.get("videos", {}) if old.get("config_sha256") == config_hash else {}
    entries: dict[str, dict[str, Any]] = {}
    reused = 0
    if reporter is not None:
        reporter.start("synth", len(videos))
    for video in videos:
        path = _video_path(out_dir, video.video_id)
        record = known.get(video.video_id)
        if record is not None and path.is_file() and sha256_file(path) == record.get("sha256"):
            entries[video.video_id] = record
            reused += 1
        else:
            _encode_video(video, cfg, path)
            entries[video.video_id] = {"sha256": sha256_file(path), "frames": video.frames}
            # Recorded after every video, so an interrupted run resumes where it stopped.
            write_manifest(manifest_path, config_hash, {**known, **entries}, GENERATOR_VERSION)
        if reporter is not None:
            reporter.advance("synth")
    for stale in sorted(set(old.get("videos", {})) - set(entries)):
        _video_path(out_dir, stale).unlink(missing_ok=True)  # made by us, no longer listed
        log.info("removed %s: not among the %d configured videos", stale, cfg.videos)
    write_manifest(manifest_path, config_hash, entries, GENERATOR_VERSION)

    annotations_path = atomic_write_json(out_dir / ANNOTATIONS_NAME,
                                         to_activitynet(videos, classes, {
                                             k: e["sha256"] for k, e in entries.items()}))
    corpus_clips = 0
    if cfg.corpus_videos:
        _, corpus_clips = generate_corpus(cfg, out_dir, reporter=reporter)
    result = SynthResult(
        out_dir=out_dir, annotations_path=annotations_path, videos=len(videos),
        segments=sum(len(v.spans) for v in videos), classes=classes,
        frames=sum(v.frames for v in videos), seconds=time.perf_counter() - started,
        reused=reused, sha256=sha256_file(annotations_path), corpus_clips=corpus_clips,
    )
    log.info("SynthActions: %d videos (%d reused), %d segments, %d frames in %.1f s -> %s",
             result.videos, reused, result.segments, result.frames, result.seconds, out_dir)
    return result


def plan_videos(cfg: SynthConfig) -> list[SynthVideo]:
    """Lengths, labels, action spans and subsets of every video; cheap, renders nothing."""
    _check(cfg)
    n_val = min(max(1, math.floor(cfg.validation_fraction * cfg.videos + 0.5)), cfg.videos - 1)
    lo = math.ceil(cfg.min_duration * cfg.fps - _EPS)
    hi = max(lo, math.floor(cfg.max_duration * cfg.fps + _EPS))
    videos = []
    for i in range(cfg.videos):
        video_id = safe_id(f"synth_{i:03d}")
        rng = np.random.default_rng(np.random.SeedSequence(cfg.seed, spawn_key=(i, _PLAN_STREAM)))
        frames = int(rng.integers(lo, hi + 1))
        videos.append(SynthVideo(
            index=i, video_id=video_id,
            # The last videos go to validation: with labels cycling, they cover distinct classes.
            subset="validation" if i >= cfg.videos - n_val else "training",
            label=PATTERNS[i % cfg.classes], frames=frames, fps=cfg.fps,
            width=cfg.width, height=cfg.height, spans=_place_spans(rng, frames, cfg),
        ))
    return videos


def to_activitynet(videos: Iterable[SynthVideo], classes: Sequence[str],
                   sha256: Mapping[str, str] | None = None) -> dict[str, Any]:
    """ActivityNet v1.3 annotations: taxonomy with one root and a leaf per class, database.

    ``sha256`` (video id -> file checksum), when given, goes into each entry: the download
    stage then knows when a copy it holds is stale (e.g. after a change of ``synth.crf``)."""
    taxonomy: list[dict[str, Any]] = [
        {"nodeId": 0, "nodeName": TAXONOMY_ROOT, "parentId": None, "parentName": None}]
    taxonomy += [{"nodeId": k + 1, "nodeName": name, "parentId": 0, "parentName": TAXONOMY_ROOT}
                 for k, name in enumerate(classes)]
    database = {
        v.video_id: {
            "subset": v.subset,
            "url": f"{VIDEOS_DIR}/{v.video_id}.mp4",
            "duration": v.duration,
            "resolution": f"{v.width}x{v.height}",
            "annotations": [{"segment": [t0, t1], "label": v.label} for t0, t1 in v.segments],
            **({"sha256": sha256[v.video_id]} if sha256 and v.video_id in sha256 else {}),
        }
        for v in videos
    }
    return {"version": "VERSION 1.3", "taxonomy": taxonomy, "database": database}


def _check(cfg: SynthConfig) -> None:
    """Refuse configs no video can satisfy, naming the fields, before anything is written."""
    if cfg.videos < 2:
        raise ConfigError(f"synth.videos={cfg.videos}: at least 2 are needed, one training "
                          "and one validation video")
    need = cfg.min_instances * cfg.min_action + (cfg.min_instances + 1) * cfg.min_gap
    if need > cfg.min_duration + _EPS:
        raise ConfigError(
            f"synth: min_instances={cfg.min_instances} actions of min_action={cfg.min_action} s "
            f"with background of min_gap={cfg.min_gap} s around each need {need:g} s, more "
            f"than min_duration={cfg.min_duration} s")


def _place_spans(rng: np.random.Generator, frames: int, cfg: SynthConfig) -> tuple[Span, ...]:
    """Action spans in frames: background of at least ``min_gap`` before, between and after.

    Integer frames throughout, so the bounds hold exactly once divided by fps.
    """
    gap = math.ceil(cfg.min_gap * cfg.fps - _EPS)
    shortest = math.ceil(cfg.min_action * cfg.fps - _EPS)
    longest = max(shortest, math.floor(cfg.max_action * cfg.fps + _EPS))
    fits = (frames - gap) // (shortest + gap)
    if fits < cfg.min_instances:  # _check makes this unreachable for valid durations
        raise ConfigError(f"synth: a {frames / cfg.fps:g} s video cannot hold "
                          f"min_instances={cfg.min_instances} actions")
    count = min(int(rng.integers(cfg.min_instances, cfg.max_instances + 1)), fits)
    lengths = rng.integers(shortest, longest + 1, size=count)
    room = frames - (count + 1) * gap - count * shortest  # frames beyond the minimums
    extra = lengths - shortest
    if extra.sum() > room:
        # Too long together: shorten each in proportion, keeping part of the room for
        # background so that a full video is not all minimum gaps.
        budget = math.floor(room * rng.uniform(0.4, 0.8))
        extra = extra * budget // extra.sum()
    lengths = shortest + extra
    slack = room - int(extra.sum())
    shares = np.floor(rng.dirichlet(np.ones(count + 1)) * slack).astype(int)
    gaps = gap + shares
    gaps[-1] += slack - int(shares.sum())  # the rounding remainder goes to the tail
    spans, cursor = [], 0
    for length, before in zip(lengths, gaps[:-1], strict=True):
        cursor += int(before)
        spans.append(Span(cursor, cursor + int(length)))
        cursor += int(length)
    return tuple(spans)


def _encode_video(video: SynthVideo, cfg: SynthConfig, dest: Path) -> None:
    seed = np.random.SeedSequence(cfg.seed, spawn_key=(video.index, _RENDER_STREAM))
    spec = RenderSpec(frames=video.frames, fps=video.fps, width=video.width,
                      height=video.height, pattern=video.label, spans=video.spans,
                      difficulty=cfg.difficulty, patterns=PATTERNS[:cfg.classes])
    with atomic_path(dest) as tmp:
        written = encode_frames(render_frames(spec, np.random.default_rng(seed)), tmp, video.fps,
                          video.width, video.height, cfg.crf)
    if written != video.frames:
        raise StageError(f"{dest}: encoded {written} frames, planned {video.frames}")
    log.debug("encoded %s: %d frames, %s", video.video_id, written, video.label)


def _video_path(out_dir: Path, video_id: str) -> Path:
    return out_dir / VIDEOS_DIR / f"{safe_id(video_id)}.mp4"


def _config_hash(cfg: SynthConfig) -> str:
    fields = {name: getattr(cfg, name) for name in _RENDER_FIELDS}
    if cfg.difficulty != "normal":  # absent for normal videos: their hash, so their files, stay
        fields["difficulty"] = cfg.difficulty
    return sha256_json({"generator": GENERATOR_VERSION, "config": fields})
