"""``tspipe run --dry-run``: the plan of a pipeline run, without running anything.

Every enabled stage run in order, what it reads, how many videos and clips it will see
(counted from the annotation file and the ``clip:`` section), whether Prefect's cache
already holds it (the same keys and checks as the flow: :mod:`tspipe.doors.prefect_cache`)
and a time estimate from measured figures, each naming its source. The user-supplied
files still missing (:mod:`tspipe.doors.required_files`) are listed too.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from tspipe.config import Params
from tspipe.data.annotations import Annotations, read_annotations
from tspipe.data.clip_sampler import ClipSampler
from tspipe.data.clips import build_groundtruth, trainable_segments
from tspipe.doors.prefect_cache import batch_cache_key, cache_state, stage_cache_key
from tspipe.doors.required_files import missing_files
from tspipe.errors import TspipeError
from tspipe.paths import RunPaths
from tspipe.stages import Stage, bind, instances

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Rate:
    """A measured speed and where it was measured."""

    per_s: float
    unit: str
    source: str


# Clips/s of an encoder run (gvf, extract) by encoder name.
ENCODER_RATES: dict[str, Rate] = {
    "r2plus1d_34": Rate(190.0, "clips/s", "README 'Features' > Speed: R(2+1)D-34 on an H100, "
                        "tspipe's loader on 640x360 sources, reference mode, 182-194 clips/s"),
}
# Frames/s of decoding (the probe and clip frames; re-encoding is not in it).
DECODE_RATE = Rate(1800.0, "frames/s", "README 'Videos and clips': PyAV about 1800 "
                   "frames/s to 112x112 at 15 fps on 2 CPU cores (standardizing's re-encode "
                   "not measured)")
# Seconds per frame pair of optical flow, per worker.
FLOW_S_PER_PAIR = {
    "tvl1": Rate(0.3, "s/pair", "params.yaml flow.method: TV-L1 ~0.3 s a pair at 128x96 per "
                 "core (larger frames are slower)"),
    "farneback": Rate(0.006, "s/pair", "params.yaml flow.method: Farneback ~50x faster than "
                      "TV-L1 at 128x96"),
}
# Seconds per training epoch on ActivityNet-sized inputs (4,926 videos x 100 positions).
LOCALIZE_EPOCH_S = {
    "bmn": Rate(3.5, "s/epoch", "README 'Localization': BMN 3.5 s an epoch of 4,926 videos "
                "x 100 positions on an H100 (bf16)"),
    "gtad": Rate(8.1, "s/epoch", "README 'Localization': G-TAD 8.1 s an epoch of 4,926 "
                 "videos x 100 positions on an H100 (bf16)"),
}
LOCALIZE_RECIPE_EPOCHS = {"bmn": 9, "gtad": 10}
_LOCALIZE_VIDEOS = 4926


@dataclass
class Counts:
    """What the annotation file says, per subset."""

    videos: dict[str, int]
    windows: dict[str, int]  # extraction windows (clip.stride)
    frames: dict[str, int]   # clip-rate frames
    no_duration: int         # videos whose windows cannot be counted
    ann: Annotations


def _counts(params: Params, paths: RunPaths) -> Counts | str:
    d = params.dataset
    try:
        ann = read_annotations(
            paths.resolve(d.annotations), format=d.format,
            label_map=paths.resolve(d.label_map) if d.label_map else None,
            metadata=paths.resolve(d.metadata) if d.metadata else None,
            subsets=d.subsets, clamp_to_duration=d.clamp_to_duration)
    except (TspipeError, OSError) as exc:
        return f"annotations not readable yet: {exc}"
    sampler = ClipSampler.from_config(params.clip)
    videos: dict[str, int] = {}
    windows: dict[str, int] = {}
    frames: dict[str, int] = {}
    unknown = 0
    for v in ann.videos.values():
        subset = v.subset or "unknown"
        videos[subset] = videos.get(subset, 0) + 1
        try:
            n = sampler.frames_for_video(v)
        except TspipeError:
            unknown += 1
            continue
        frames[subset] = frames.get(subset, 0) + n
        windows[subset] = windows.get(subset, 0) + sampler.num_windows(n)
    return Counts(videos, windows, frames, unknown, ann)


def _training_rows(params: Params, ann: Annotations, subsets: list[str]) -> int:
    """Segments the pretrain stage samples from (TSP: action + background rows longer
    than a clip; TAC: action rows), as the decode stage builds them."""
    sampler = ClipSampler.from_config(params.clip)
    table = build_groundtruth(
        ann.subset(*subsets),
        min_background=params.decode.min_background_clips * float(sampler.clip_duration),
        gaps=params.decode.background_gaps)
    rows = trainable_segments(table, sampler).table
    if params.pretrain.mode == "tac":
        return int((rows["region_index"].to_numpy() == 0).sum())
    return rows.num_rows


def _cache(name: str, stage: Stage, params: Params, paths: RunPaths) -> str:
    """``cached`` when the flow would serve the stage run from Prefect's cache (the flow's
    own test: outputs present and a readable record under its key), else why it runs."""
    if stage.batching is None:
        present = stage.outputs_present(params, paths)
        state = cache_state(stage_cache_key(name, stage, params, paths), paths)
        if present and state == "readable":
            return "cached"
        return "runs" + ("" if present else " (no outputs yet)")
    if not all(p.exists() for p in stage.inputs(params, paths)):
        return "runs (inputs not made yet)"
    try:
        plan = stage.batching.plan(params, paths)
    except (TspipeError, OSError) as exc:
        return f"runs ({exc})"
    hits = sum(done and cache_state(batch_cache_key(name, stage, params, b), paths)
               == "readable" for b, done in plan)
    if plan and hits == len(plan):
        return "cached"
    return f"runs ({hits}/{len(plan)} batches cached)" if plan else "runs"


def _sum(d: dict[str, int], subsets: list[str] | None = None) -> int:
    return sum(v for k, v in d.items() if subsets is None or k in subsets)


def _estimate(name: str, p: Params, counts: Counts | None
              ) -> tuple[float | None, str | None, str]:
    """(seconds, source, what was counted) of a stage run, or None where no figure
    applies."""
    if counts is None:
        return None, None, ""
    if name in ("gvf", "extract"):
        cfg = getattr(p, name)
        clips = _sum(counts.windows)
        what = f"{clips:,} clips"
        if name == "extract" and cfg.flow_encoder:
            what += " x 2 streams"
        rate = ENCODER_RATES.get(cfg.encoder)
        if rate is None:
            return None, f"no measured figure for encoder {cfg.encoder}", what
        streams = 2 if name == "extract" and cfg.flow_encoder else 1
        return clips * streams / rate.per_s, rate.source, what
    if name == "decode":
        frames = _sum(counts.frames)
        return frames / DECODE_RATE.per_s, DECODE_RATE.source, f"{frames:,} frames"
    if name == "flow" and not p.flow.enabled:
        return None, None, "flow.enabled: false (an empty report)"
    if name == "flow":
        rate = FLOW_S_PER_PAIR[p.flow.method]
        pairs = _sum(counts.frames)
        return pairs * rate.per_s / p.flow.workers, rate.source, f"{pairs:,} frame pairs"
    if name in ("pretrain", "base") and p.pretrain.corpus is None:
        rows = _training_rows(p, counts.ann, p.pretrain.train_subsets)
        clips = rows * p.pretrain.clips_per_segment * p.pretrain.epochs
        what = f"{clips:,} training clips ({rows:,} segments x {p.pretrain.clips_per_segment} x " \
               f"{p.pretrain.epochs} epochs)"
        rate = ENCODER_RATES.get(p.pretrain.encoder)
        if rate is None:
            return None, f"no measured figure for encoder {p.pretrain.encoder}", what
        # A training step is at least the loader's pace (decode-bound at 190 clips/s).
        return clips / rate.per_s, rate.source + " (the loader's pace: a lower bound for " \
            "training)", what
    if name == "evaluate":
        videos = counts.videos.get(p.localize.train_subset, 0)
        total, sources = 0.0, []
        for method in p.localize.methods:
            rate = LOCALIZE_EPOCH_S[method]
            epochs = p.localize.epochs or LOCALIZE_RECIPE_EPOCHS[method]
            total += rate.per_s * epochs * videos / _LOCALIZE_VIDEOS
            sources.append(rate.source)
        note = "" if p.localize.temporal_scale == 100 else \
            f" (measured at temporal_scale 100, here {p.localize.temporal_scale})"
        return total, "; ".join(sources) + note, \
            f"{videos:,} {p.localize.train_subset} videos"
    return None, None, ""


def _notes(params: Params, counts: Counts | None) -> list[str]:
    notes = []
    if counts is not None:
        cfg = params.localize
        for key, subset in (("train_subset", cfg.train_subset),
                            ("eval_subset", cfg.eval_subset)):
            if not counts.videos.get(subset):
                notes.append(f"localize.{key} is {subset!r}, but the annotations have no "
                             f"{subset} videos: evaluate will fail (the annotations' subsets: "
                             f"{', '.join(sorted(counts.videos)) or 'none'})")
                break
        if counts.no_duration:
            notes.append(f"{counts.no_duration} videos have no duration in the annotations: "
                         "their clips are not counted (dataset.metadata can supply them)")
    return notes


def make_plan(params: Params, paths: RunPaths) -> dict[str, Any]:
    """The plan as a JSON-able dict."""
    got = _counts(params, paths)
    counts = got if isinstance(got, Counts) else None
    rows = []
    for inst in instances(params):
        stage, p, scoped = bind(inst, params, paths)
        seconds, source, what = _estimate(stage.name, p, counts)
        rows.append({
            "stage": inst,
            "reads": [paths.relative(x) for x in stage.inputs(p, scoped)],
            "counts": what,
            "cache": _cache(inst, stage, p, scoped),
            "estimate_s": None if seconds is None else round(seconds, 1),
            "estimate_source": source,
        })
    return {
        "root": str(paths.root),
        "annotations": params.dataset.annotations,
        "videos": counts.videos if counts else None,
        "clips": counts.windows if counts else None,
        "annotations_note": None if counts else got,
        "clip": {"frames": params.clip.frames, "fps": params.clip.fps,
                 "stride": params.clip.stride},
        "stages": rows,
        "missing": [{"key": m.key, "path": m.value, "stage": m.stage,
                     "message": m.message(paths)} for m in missing_files(params, paths)],
        "notes": _notes(params, counts),
    }


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def print_plan(plan: dict[str, Any]) -> None:
    """The plan as a Rich table, then videos per subset, sources, missing files, notes."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table(title=f"tspipe run --dry-run ({plan['root']})")
    for col in ("stage", "reads", "videos / clips", "cache", "estimate"):
        table.add_column(col, overflow="fold")
    sources: list[str] = []
    for row in plan["stages"]:
        src = row["estimate_source"]
        mark = ""
        if src:
            if src not in sources:
                sources.append(src)
            mark = f" [{sources.index(src) + 1}]"
        table.add_row(row["stage"], "\n".join(row["reads"]) or "-", row["counts"] or "-",
                      row["cache"], _duration(row["estimate_s"]) + mark)
    console.print(table)
    clip = plan["clip"]
    if plan["videos"] is not None:
        per = ", ".join(f"{s} {n:,} videos / {plan['clips'].get(s, 0):,} clips"
                        for s, n in plan["videos"].items())
        console.print(f"{plan['annotations']}: {per} (clips of {clip['frames']} frames at "
                      f"{clip['fps']:g} fps, stride {clip['stride']})", markup=False,
                      highlight=False)
    else:
        console.print(plan["annotations_note"], markup=False, highlight=False)
    for i, src in enumerate(sources, 1):
        console.print(f"[{i}] estimate from {src}", markup=False, highlight=False)
    for m in plan["missing"]:
        console.print(f"missing: {m['message']}", markup=False, highlight=False)
    for note in plan["notes"]:
        console.print(f"note: {note}", markup=False, highlight=False)


__all__ = ["make_plan", "print_plan"]
