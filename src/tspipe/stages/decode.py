"""Stage ``decode``: probe every downloaded video, standardize it to a constant frame rate,
and index the set into clip tables.

Per video (batched, resumable): ``data/reports/decode/<id>.json`` holds the probe of the
original, the probe of the standardized copy (``data/standardized/<id>.mp4``) or the
reason it failed: a file that cannot be opened or decoded, or that decodes to almost
nothing (:data:`tspipe.data.video.probe.MIN_DECODED_FRACTION`: a wrong timescale in its
header; a single picture), fails by name and is left out of the tables, of GVF, training
and extraction; the others go on. ``finalize`` merges them into
``data/reports/decode_report.json`` and builds ``data/clips/groundtruth.parquet`` (TSP's
segment table, for training) and ``data/clips/windows.parquet`` (sliding windows, for
extraction) from the videos that decoded, with their decoded durations.
"""

from __future__ import annotations

import copy
import json
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tspipe.config import Params
from tspipe.data.annotations import Annotations, read_activitynet
from tspipe.data.clips import ClipSampler, build_groundtruth, windows_table, write_table
from tspipe.data.download import manifest_entries
from tspipe.data.video import probe, standardize
from tspipe.errors import VideoError
from tspipe.io import atomic_write_json, result_dict, safe_id, sha256_json
from tspipe.paths import RunPaths
from tspipe.reporting import Reporter
from tspipe.stages.contract import Batch, Batching, Stage

log = logging.getLogger(__name__)

# Annotation and decoded durations further apart than this are reported (seconds).
DURATION_TOLERANCE_S = 0.5
# The checks a video's report has passed (tspipe.data.video.probe's refusals). A report
# marked ``ok`` without this value was written before the latest check (the decoded-frame
# fraction, MIN_DECODED_FRACTION): its original is probed again, and its standardized copy
# kept if it passes (decode_settings, which feature versions hash, are not touched).
CHECKS = "decoded-fraction-1"


@dataclass(frozen=True)
class DecodeStageResult:
    report: Path
    groundtruth: Path
    windows: Path
    videos: int
    ok: int
    failed: int
    not_downloaded: int
    frames: int
    hours: float
    duration_mismatches: int
    action_rows: int
    background_rows: int
    windows_count: int
    short_videos: int

    def metrics(self) -> dict[str, float]:
        return {k: float(getattr(self, k)) for k in (
            "videos", "ok", "failed", "not_downloaded", "frames", "hours",
            "duration_mismatches", "action_rows", "background_rows", "windows_count",
            "short_videos")}

    def to_dict(self) -> dict[str, Any]:
        return result_dict(self)


def _report_path(paths: RunPaths, video_id: str) -> Path:
    return paths.decode_report.parent / "decode" / f"{safe_id(video_id)}.json"


def decode_settings(params: Params) -> dict[str, Any]:
    """What decides a video's decode output (not the table rules: those are finalize's)."""
    d = params.decode
    return {"backend": d.backend, "standardize": d.standardize, "fps": d.fps,
            "short_side": d.short_side, "gop": d.gop, "crf": d.crf}


def _downloaded(paths: RunPaths) -> dict[str, Any]:
    return manifest_entries(paths.manifest)


def batches(params: Params, paths: RunPaths) -> list[Batch]:
    """The videos downloaded ``ok``, in id order; the key covers their sha256."""
    ann = read_activitynet(paths.annotations)
    entries = _downloaded(paths)
    ids = [v for v in sorted(ann.videos) if v in entries and entries[v].status == "ok"]
    size = params.decode.batch_size
    return [Batch(tuple(ids[i:i + size]),
                  sha256_json([[v, entries[v].sha256] for v in ids[i:i + size]]))
            for i in range(0, len(ids), size)]


def _done(params: Params, paths: RunPaths, video_id: str, sha256: str | None) -> bool:
    report = _previous(params, paths, video_id, sha256)
    return report is not None and (report["status"] != "ok" or report.get("checks") == CHECKS)


def _previous(params: Params, paths: RunPaths, video_id: str, sha256: str | None
              ) -> dict[str, Any] | None:
    """The video's report if it is of this file and these settings, and its standardized
    copy (if ok) is still there; else None (decoded again)."""
    path = _report_path(paths, video_id)
    if not path.exists():
        return None
    report = json.loads(path.read_text(encoding="utf-8"))
    if report.get("source_sha256") != sha256 or report.get("settings") != decode_settings(params):
        return None
    if report["status"] == "ok" and params.decode.standardize and \
            not paths.resolve(report["standardized"]["path"]).exists():
        return None
    return report


def batch_done(params: Params, paths: RunPaths, batch: Batch) -> bool:
    entries = _downloaded(paths)
    return all(_done(params, paths, v, entries[v].sha256) for v in batch.ids if v in entries)


def status(params: Params, paths: RunPaths) -> list[tuple[Batch, bool]]:
    """Every batch and whether it is done, from one read of the manifest."""
    entries = _downloaded(paths)
    return [(b, all(_done(params, paths, v, entries[v].sha256) for v in b.ids if v in entries))
            for b in batches(params, paths)]


def _decode_one(params: Params, paths: RunPaths, video_id: str, src: Path,
                sha256: str | None) -> dict[str, Any]:
    """Probe (which refuses a file too broken to use, by name) and standardize one video;
    a report written before the latest checks only has its original probed again."""
    cfg = params.decode
    previous = _previous(params, paths, video_id, sha256)
    report: dict[str, Any] = {"video_id": video_id, "source": str(src.relative_to(paths.root)),
                              "source_sha256": sha256, "settings": decode_settings(params),
                              "checks": CHECKS}
    try:
        original = probe(src, backend=cfg.backend, video_id=video_id)
        # The file as "source" names it, not the absolute path probed: the report (a DVC
        # output) reads the same wherever the run directory is.
        report["original"] = {**original.to_dict(), "path": report["source"]}
        if previous is not None and previous["status"] == "ok" and cfg.standardize:
            report["standardized"] = previous["standardized"]  # made from the same file
        elif cfg.standardize:
            dst = paths.standardized / f"{safe_id(video_id)}.mp4"
            std = standardize(src, dst, fps=cfg.fps, short_side=cfg.short_side, gop=cfg.gop,
                              crf=cfg.crf, video_id=video_id)
            report["standardized"] = {**std.to_dict(), "path": str(dst.relative_to(paths.root))}
        report.update(status="ok", reason=None)
    except VideoError as exc:
        report.update(status="failed", reason=str(exc))
    return report


def run_batch(params: Params, paths: RunPaths, batch: Batch, reporter: Reporter) -> int:
    entries = _downloaded(paths)
    todo = [v for v in batch.ids if not _done(params, paths, v, entries[v].sha256)]
    reporter.start("decode", len(batch.ids))
    reporter.advance("decode", len(batch.ids) - len(todo))

    def work(video_id: str) -> dict[str, Any]:
        src = paths.manifest.parent / entries[video_id].path
        report = _decode_one(params, paths, video_id, src, entries[video_id].sha256)
        atomic_write_json(_report_path(paths, video_id), report)
        return report

    with ThreadPoolExecutor(max_workers=params.decode.workers) as pool:
        for report in pool.map(work, todo):
            if report["status"] != "ok":
                reporter.message(f"decode: {report['reason']}", logging.WARNING)
            reporter.advance("decode")
    return len(todo)


def _decoded_annotations(ann: Annotations, reports: dict[str, dict[str, Any]]) -> Annotations:
    """The videos that decoded, with the decoded duration, fps and frame count."""
    out = copy.deepcopy(ann)
    out.videos = {}
    for vid, video in ann.videos.items():
        report = reports.get(vid)
        if report is None or report["status"] != "ok":
            continue
        facts = report.get("standardized") or report["original"]
        v = copy.deepcopy(video)
        v.duration, v.fps, v.num_frames = facts["duration"], facts["fps"], facts["frames_decoded"]
        out.videos[vid] = v
    return out


def finalize(params: Params, paths: RunPaths, reporter: Reporter) -> DecodeStageResult:
    ann = read_activitynet(paths.annotations)
    entries = _downloaded(paths)
    sampler = ClipSampler.from_config(params.clip)
    reports: dict[str, dict[str, Any]] = {}
    for vid, video in ann.videos.items():
        entry = entries.get(vid)
        if entry is None or entry.status != "ok":
            why = (f"download {entry.status}: {entry.reason} (from {entry.source})" if entry
                   else "not downloaded")
            reports[vid] = {"video_id": vid, "status": "not_downloaded", "reason": why}
            continue
        path = _report_path(paths, vid)
        if not path.exists():
            reports[vid] = {"video_id": vid, "status": "failed",
                            "reason": "no decode report: run the decode stage"}
            continue
        report = json.loads(path.read_text(encoding="utf-8"))
        report["warnings"] = _warnings(report, video.duration, sampler)
        reports[vid] = report
    decoded = _decoded_annotations(ann, reports)
    gt = build_groundtruth(decoded, gaps=params.decode.background_gaps,
                           min_background=float(params.decode.min_background_clips
                                                * sampler.clip_duration))
    windows = windows_table(decoded.videos.values(), sampler)
    write_table(gt, paths.groundtruth_table)
    write_table(windows, paths.windows_table)
    ok = [r for r in reports.values() if r["status"] == "ok"]
    region = gt.column("region_index").to_pylist()
    result = DecodeStageResult(
        report=paths.decode_report, groundtruth=paths.groundtruth_table,
        windows=paths.windows_table, videos=len(ann.videos), ok=len(ok),
        failed=sum(r["status"] == "failed" for r in reports.values()),
        not_downloaded=sum(r["status"] == "not_downloaded" for r in reports.values()),
        frames=sum(v.num_frames or 0 for v in decoded.videos.values()),
        hours=sum(v.duration or 0.0 for v in decoded.videos.values()) / 3600,
        duration_mismatches=sum(any(w.startswith("duration") for w in r["warnings"])
                                for r in ok),
        action_rows=region.count(0), background_rows=region.count(1),
        windows_count=windows.num_rows,
        short_videos=sum(any(w.startswith("shorter") for w in r["warnings"]) for r in ok),
    )
    atomic_write_json(paths.decode_report, {"summary": result.metrics(),
                                            "videos": [reports[v] for v in sorted(reports)]})
    atomic_write_json(paths.metrics("decode"), result.metrics())
    reporter.message(f"decode: {result.ok} ok, {result.failed} failed, "
                     f"{result.not_downloaded} not downloaded; {result.action_rows} action and "
                     f"{result.background_rows} background rows, {result.windows_count} windows")
    return result


def _warnings(report: dict[str, Any], annotated: float | None, sampler: ClipSampler
              ) -> list[str]:
    if report["status"] != "ok":
        return []
    facts = report.get("standardized") or report["original"]
    warnings = list(report["original"].get("warnings", []))
    if annotated is not None and abs(annotated - facts["duration"]) > DURATION_TOLERANCE_S:
        warnings.append(f"duration: the annotations say {annotated:.3f} s, the file decodes "
                        f"to {facts['duration']:.3f} s")
    clip_frames = sampler.frames_in(facts["duration"])
    if clip_frames < sampler.frames:
        warnings.append(f"shorter than one clip: {clip_frames} frames at {sampler.fps} fps "
                        f"< {sampler.frames}; its one window repeats the last frame")
    return warnings


STAGE = Stage(
    name="decode",
    help="Probe, standardize to constant fps, and index into TSP and sliding-window tables.",
    sections=("decode", "clip"),
    inputs=lambda params, paths: [paths.annotations, paths.manifest],
    outputs=lambda params, paths: [paths.decode_report, paths.groundtruth_table,
                                   paths.windows_table, paths.metrics("decode")],
    code=("tspipe.stages.decode", "tspipe.data.clips", "tspipe.data.clip_sampler",
          "tspipe.data.video"),
    batching=Batching(batches, run_batch, batch_done, finalize, status),
)
