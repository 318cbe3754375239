"""Stage ``gvf``: the global video feature of every decoded video, for TSP training.

The encoder TSP starts from (``gvf.checkpoint``; default ``pretrain.init_checkpoint``,
the Kinetics weights) runs over each video's sliding windows through the extraction
loader and model code, and its clip features are pooled over the video (max, as the
paper; mean optionally). Shards ``data/gvf/<version>/shard-NNNNN.h5`` resume like
extraction's; ``finalize`` merges them into ``data/gvf/gvf.h5`` in the format of TSP's
released GVF files (one ``(D,)`` float32 dataset per video id), which the pretrain stage
reads and which TSP's own code can read.

A video whose downloaded file is unchanged is copied from an earlier version with the
same recipe (:mod:`.reuse`; each version's ``index.json`` lists what it holds), so a run
that adds videos computes only theirs.

A damaged finished shard (cut short, a video missing) is found when the stage plans,
removed and extracted again; a finished shard's non-finite videos are tried again on the
next run. ``gvf.h5`` is replaced only by a whole set: a video whose features are NaN or
inf (or every video failing) stops ``finalize`` with its name, and the previous file
stays; a video that failed for its own input is named in its shard report and left out.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py

from tspipe.config import Params
from tspipe.errors import StageError
from tspipe.extract.gvf import GVFWriter, merge_gvf, read_gvf
from tspipe.extract.shards import (
    blocking,
    not_whole,
    prepare_shard,
    retried,
    shard_finished,
    to_retry,
)
from tspipe.io import atomic_write_json, result_dict
from tspipe.paths import RunPaths
from tspipe.provenance import GVF_CODE
from tspipe.reporting import Reporter
from tspipe.stages.contract import Batch, DisabledResult, Stage
from tspipe.stages.encoder_runs import CODE as ENCODER_CODE
from tspipe.stages.encoder_runs import (
    EncoderRun,
    ShardReport,
    encode_shard,
    encoder_inputs,
    encoder_run,
    shard_batching,
    shard_reports,
)
from tspipe.stages.reuse import reuse_stored, video_sha

log = logging.getLogger(__name__)


def make_run(params: Params, paths: RunPaths) -> EncoderRun:
    cfg = params.gvf
    init = params.pretrain.init_checkpoint
    return encoder_run("gvf", cfg, params, paths, out_root=paths.gvf_root,
                       extra={"pooling": cfg.pooling},
                       code=GVF_CODE,
                       default_checkpoint=paths.resolve(init) if init else None)


@dataclass(frozen=True)
class GvfStageResult:
    path: Path
    version: str
    encoder: str
    checkpoint_sha256: str
    checkpoint_origin: str
    pooling: str
    videos: int
    ok: int
    failed: int
    reused: int  # copied from an earlier version (same recipe, same video file)
    clips: int
    seconds: float
    feature_dim: int
    shards: int
    precision: str

    def metrics(self) -> dict[str, float]:
        m = {k: float(getattr(self, k)) for k in ("videos", "ok", "failed", "reused", "clips",
                                                   "seconds", "feature_dim", "shards")}
        m["clips_per_s"] = self.clips / self.seconds if self.seconds > 0 else 0.0
        return m

    def tags(self) -> dict[str, str]:
        return {"tspipe.gvf_version": self.version,
                "tspipe.checkpoint_sha256": self.checkpoint_sha256,
                "tspipe.checkpoint_origin": self.checkpoint_origin}

    def to_dict(self) -> dict[str, Any]:
        return result_dict(self)


def _finished(run: EncoderRun, batch: Batch) -> bool:
    return shard_finished(run.shard_file(batch), run.shard_report(batch), stage="gvf")


def run_batch(params: Params, paths: RunPaths, batch: Batch, reporter: Reporter) -> int:
    """One shard, unless it is finished: a damaged one is removed and extracted again, a
    finished one's non-finite videos are tried again."""
    run = make_run(params, paths)
    shard, report = run.shard_file(batch), run.shard_report(batch)
    previous = prepare_shard(shard, report, lambda text: reporter.message(
        f"gvf: {text}", logging.WARNING))
    if previous is not None and not to_retry(previous):
        return 0
    with GVFWriter(shard, pooling=params.gvf.pooling, attrs=run.base_attrs()) as writer:
        reused = reuse_stored(run, writer, list(batch.ids), paths.gvf_root,
                              dataset_attrs=False)
        if reused:
            reporter.message(f"gvf: {len(reused)} videos of {shard.name} copied from "
                             "earlier versions with the same recipe")
        result = encode_shard(run, batch, writer, reporter)
    new = ShardReport.of(run, batch, result, reused)
    if previous is not None:  # its failed videos tried again
        new = ShardReport(**retried(previous, new.__dict__))
    new.save(report)
    return len(result.written)


def _index(run: EncoderRun, reports: list[ShardReport]) -> Path:
    """``<version>/index.json``: the recipe and each video's outcome, shard and file
    sha256, which a later version reads to copy what it holds (:mod:`.reuse`)."""
    sha = video_sha(run)
    videos: dict[str, dict[str, Any]] = {}
    for report in reports:
        with h5py.File(run.out_dir / report.shard, "r") as f:
            held = set(f.keys())
        for vid in report.ids:
            videos[vid] = ({"status": "ok", "shard": report.shard, "sha256": sha.get(vid),
                            "reused_from": report.reused.get(vid)} if vid in held else
                           {"status": "failed", "shard": None, "sha256": sha.get(vid),
                            "reason": report.failed.get(vid, "not in the shard file")})
    return atomic_write_json(run.out_dir / "index.json", {
        "feature_version": run.version, "recipe": run.recipe(), "stage": "gvf",
        "encoder": run.cfg.encoder, "checkpoint_sha256": run.checkpoint_sha256,
        "params": run.id_params, "manifest_sha256": run.manifest_sha256,
        "code_version": run.code_version, "videos": videos})


def finalize(params: Params, paths: RunPaths, reporter: Reporter) -> GvfStageResult:
    run = make_run(params, paths)
    reports = shard_reports(run)
    failed = blocking({vid: (r.shard, why) for r in reports for vid, why in r.failed.items()},
                      len(run.videos))
    if failed:  # checked before gvf.h5 is touched: the previous one stays
        kept = (f"{paths.gvf_file} stays as it was" if paths.gvf_file.exists()
                else f"{paths.gvf_file} is not written")
        raise StageError(not_whole("gvf", run.version, failed, len(run.videos),
                                   f"Weights: {run.checkpoint or 'seeded random'}. The "
                                   f"shard reports in {run.out_dir} hold each reason; {kept}"))
    shards = [run.out_dir / r.shard for r in reports]
    (paths.gvf_root / "disabled.json").unlink(missing_ok=True)
    _index(run, reports)
    merge_gvf(shards, paths.gvf_file, attrs={**run.base_attrs(), "gvf_pooling":
                                             params.gvf.pooling})
    vectors = read_gvf(paths.gvf_file)
    dim = next(iter(vectors.values())).shape[0] if vectors else 0
    result = GvfStageResult(
        path=paths.gvf_file, version=run.version, encoder=params.gvf.encoder,
        checkpoint_sha256=run.checkpoint_sha256, checkpoint_origin=run.origin,
        pooling=params.gvf.pooling, videos=len(run.videos), ok=len(vectors),
        reused=sum(len(r.reused) for r in reports),
        failed=len(run.videos) - len(vectors), clips=sum(r.clips for r in reports),
        seconds=sum(r.seconds for r in reports), feature_dim=int(dim), shards=len(reports),
        precision=reports[0].precision if reports else run.precision())
    atomic_write_json(paths.metrics("gvf"), result.metrics())
    copied = f" ({result.reused} copied from earlier versions)" if result.reused else ""
    reporter.message(f"gvf: {result.ok} of {result.videos} videos{copied}, {dim}-d, "
                     f"{params.gvf.pooling} pooling -> {paths.gvf_file}")
    return result


def disabled(params: Params, paths: RunPaths) -> DisabledResult:
    """``gvf.enabled: false``: ``data/gvf/disabled.json`` and ``{"enabled": 0}`` metrics, for
    DVC, which runs every stage of dvc.yaml; earlier versions' shards stay (a run enabled
    again copies from them)."""
    paths.gvf_root.mkdir(parents=True, exist_ok=True)
    reason = "gvf.enabled: false"
    return DisabledResult(reason, [
        atomic_write_json(paths.gvf_root / "disabled.json", {"reason": reason}),
        atomic_write_json(paths.metrics("gvf"), {"enabled": 0})])


STAGE = Stage(
    name="gvf",
    help="Global video features (encoder clip features pooled per video) for TSP training.",
    sections=("gvf", "clip"),
    extra_params=("pretrain.init_checkpoint",),
    inputs=encoder_inputs("gvf"),
    outputs=lambda params, paths: [paths.gvf_file, paths.metrics("gvf")],
    code=("tspipe.stages.gvf", *ENCODER_CODE),
    # a shard is done when it is finished and readable (a damaged one is redone)
    batching=shard_batching(make_run, run_batch, finalize, done=_finished),
    enabled=lambda params: params.gvf.enabled,
    disabled=disabled,
)
