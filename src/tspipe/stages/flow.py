"""Stage ``flow``: optical flow of every decoded video, for I3D's flow stream.

Per video (batched, resumable, atomic): ``data/flow/videos/<id>.h5`` (the format of
:mod:`tspipe.data.flow`) from the decode stage's copy of the video (the standardized file
when there is one), at the clip rate ``clip.fps``; ``data/flow/reports/<id>.json`` says how
it went (frames, size, seconds, or why it failed). A video whose file exists with the same
settings and source sha256 is not computed again. ``finalize`` merges the reports into
``data/flow/report.json`` and ``metrics/flow.json``.

With ``flow.enabled: false`` (the default: only I3D's flow stream needs flow) the stage
computes nothing and writes an empty report, so that ``dvc repro`` finds its outputs.
"""

from __future__ import annotations

import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tspipe.config import Params
from tspipe.data.flow import FlowSettings, flow_settings_of, video_flow, write_flow
from tspipe.errors import VideoError
from tspipe.io import atomic_write_json, result_dict, safe_id, sha256_json
from tspipe.paths import RunPaths
from tspipe.reporting import Reporter
from tspipe.stages.contract import Batch, Batching, Stage
from tspipe.stages.decoded import DecodedVideo, decoded_videos

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FlowStageResult:
    report: Path
    enabled: bool
    method: str
    videos: int
    ok: int
    failed: int
    frames: int
    seconds: float
    frames_per_s: float
    bytes: int

    def metrics(self) -> dict[str, float]:
        return {k: float(getattr(self, k)) for k in (
            "enabled", "videos", "ok", "failed", "frames", "seconds", "frames_per_s", "bytes")}

    def to_dict(self) -> dict[str, Any]:
        return result_dict(self)


def settings(params: Params) -> FlowSettings:
    cfg = params.flow
    return FlowSettings(method=cfg.method, fps=float(params.clip.fps),
                        short_side=cfg.short_side, bound=float(cfg.bound),
                        backend=params.decode.backend)


def _report_path(paths: RunPaths, video_id: str) -> Path:
    return paths.flow_root / "reports" / f"{safe_id(video_id)}.json"


def _videos(params: Params, paths: RunPaths) -> list[DecodedVideo]:
    return decoded_videos(paths) if params.flow.enabled else []


def batches(params: Params, paths: RunPaths) -> list[Batch]:
    """The decoded videos, in id order; the key covers their sha256 and the settings."""
    videos = _videos(params, paths)
    size = params.flow.batch_size
    key = settings(params).to_dict()
    return [Batch(tuple(v.video_id for v in videos[i:i + size]),
                  sha256_json({"videos": [[v.video_id, v.sha256] for v in videos[i:i + size]],
                               "settings": key}))
            for i in range(0, len(videos), size)]


def _done(params: Params, paths: RunPaths, video: DecodedVideo) -> bool:
    path = _report_path(paths, video.video_id)
    if not path.exists():
        return False
    report = json.loads(path.read_text(encoding="utf-8"))
    if report.get("source_sha256") != video.sha256 or \
            report.get("settings") != settings(params).to_dict():
        return False
    if report["status"] != "ok":
        return True  # a failure is final for the same file and settings
    return flow_settings_of(paths.flow_file(video.video_id)) == report["settings"]


def batch_done(params: Params, paths: RunPaths, batch: Batch) -> bool:
    by_id = {v.video_id: v for v in _videos(params, paths)}
    return all(_done(params, paths, by_id[v]) for v in batch.ids if v in by_id)


def _flow_one(params: Params, paths: RunPaths, video: DecodedVideo) -> dict[str, Any]:
    s = settings(params)
    report: dict[str, Any] = {"video_id": video.video_id,
                              "source": str(video.path.relative_to(paths.root)),
                              "source_sha256": video.sha256, "settings": s.to_dict()}
    t0 = time.perf_counter()
    try:
        flow = video_flow(video.path, s, video_id=video.video_id)
        dest = write_flow(paths.flow_file(video.video_id), flow, s,
                          source=report["source"])
        report.update(status="ok", reason=None, frames=int(flow.shape[0]),
                      height=int(flow.shape[1]), width=int(flow.shape[2]),
                      bytes=dest.stat().st_size)
    except VideoError as exc:
        # an older file of this video must not pass for its flow
        paths.flow_file(video.video_id).unlink(missing_ok=True)
        report.update(status="failed", reason=str(exc))
    report["seconds"] = round(time.perf_counter() - t0, 3)
    return report


def run_batch(params: Params, paths: RunPaths, batch: Batch, reporter: Reporter) -> int:
    import cv2

    by_id = {v.video_id: v for v in _videos(params, paths)}
    todo = [by_id[v] for v in batch.ids if v in by_id and not _done(params, paths, by_id[v])]
    reporter.start("flow", len(batch.ids))
    reporter.advance("flow", len(batch.ids) - len(todo))
    # Videos in parallel, one OpenCV thread each (OpenCV releases the GIL while it works).
    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)

    def work(video: DecodedVideo) -> dict[str, Any]:
        report = _flow_one(params, paths, video)
        atomic_write_json(_report_path(paths, video.video_id), report)
        return report

    try:
        with ThreadPoolExecutor(max_workers=params.flow.workers) as pool:
            for report in pool.map(work, todo):
                if report["status"] != "ok":
                    reporter.message(f"flow: video {report['video_id']!r} "
                                     f"({report['source']}): {report['reason']}",
                                     logging.WARNING)
                reporter.advance("flow")
    finally:
        cv2.setNumThreads(threads)
    return len(todo)


def finalize(params: Params, paths: RunPaths, reporter: Reporter) -> FlowStageResult:
    reports: list[dict[str, Any]] = []
    for video in _videos(params, paths):
        path = _report_path(paths, video.video_id)
        if path.exists():
            reports.append(json.loads(path.read_text(encoding="utf-8")))
        else:
            reports.append({"video_id": video.video_id, "status": "failed",
                            "reason": "no flow report: run the flow stage"})
    ok = [r for r in reports if r["status"] == "ok"]
    frames = sum(r["frames"] for r in ok)
    seconds = sum(r.get("seconds", 0.0) for r in ok)
    result = FlowStageResult(
        report=paths.flow_report, enabled=params.flow.enabled, method=params.flow.method,
        videos=len(reports), ok=len(ok), failed=len(reports) - len(ok), frames=frames,
        seconds=round(seconds, 3), frames_per_s=round(frames / seconds, 2) if seconds else 0.0,
        bytes=sum(r["bytes"] for r in ok))
    atomic_write_json(paths.flow_report, {"summary": result.metrics(),
                                          "settings": settings(params).to_dict(),
                                          "videos": reports})
    atomic_write_json(paths.metrics("flow"), result.metrics())
    if not params.flow.enabled:
        reporter.message("flow: disabled (flow.enabled: false); nothing computed")
    else:
        reporter.message(f"flow: {result.ok} of {result.videos} videos, {frames} frames "
                         f"({params.flow.method}, {result.frames_per_s} frames/s per worker "
                         f"thread) -> {paths.flow_root}")
    return result


STAGE = Stage(
    name="flow",
    help="Optical flow (TV-L1 or Farneback) of every decoded video, for I3D's flow stream.",
    sections=("flow", "clip"),
    extra_params=("decode.backend",),
    inputs=lambda params, paths: [paths.decode_report],
    outputs=lambda params, paths: [paths.flow_root, paths.metrics("flow")],
    code=("tspipe.stages.flow", "tspipe.stages.decoded", "tspipe.data.flow"),
    batching=Batching(batches, run_batch, batch_done, finalize),
)
