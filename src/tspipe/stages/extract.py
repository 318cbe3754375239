"""Stage ``extract``: clip features of every decoded video, one versioned HDF5 file per shard.

Layout (a variant's ``features/<variant>/``, ``F`` below, is a DVC output kept between
runs, ``persist: true``)::

    F/<version>/shard-00000.h5    one dataset (num_clips, D) per video id
    F/<version>/shard-00000.json  the shard's report (written last: its marker)
    F/<version>/index.json        every video: status, shard, clips, reused_from
    F/<version>/{npy,csv}/, features.h5   exports named in extract.export
    F/current.json                the version this stage last finished

A shard resumes video by video (:class:`~tspipe.extract.writers.H5FeatureWriter` parts).

**Reuse across versions, by copy.** When the video set grows, the version changes (its
manifest hash does), but a video already extracted by an earlier version with the same
*recipe* (checkpoint, params, code) and the same downloaded file (sha256) has the same
numbers: its dataset is copied from the old shard into the new version instead of being
recomputed, and the index says where it came from. Copied, not referenced (HDF5
external links, or an index pointing into the old folder), because a version must stay
whole on its own: it is exported, uploaded and given to BMN/G-TAD as one folder, and the
old version may be garbage-collected (``dvc gc``, a cleanup of ``features/``) later.
Features are small next to videos (ActivityNet, 2048-d R(2+1)D-34 float32: ~18 GB), so
the copy costs disk, never GPU time.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py

from tspipe import __version__
from tspipe.config import Params
from tspipe.errors import StageError
from tspipe.extract.export import export_csv, export_npy, merge_h5
from tspipe.extract.writers import H5FeatureWriter
from tspipe.io import atomic_write_json, source_hash
from tspipe.paths import RunPaths
from tspipe.reporting import Reporter
from tspipe.stages.base import Batch, result_dict
from tspipe.stages.encoder_runs import (
    SHARD_PREFIX,
    EncoderRun,
    ShardReport,
    cached_run,
    encode_shard,
    encoder_run,
    pretrained_weights,
    shard_done,
    shard_functions,
    shard_reports,
)

log = logging.getLogger(__name__)

CODE = ("tspipe.stages.extract", "tspipe.extract.writers")


def make_run(params: Params, paths: RunPaths) -> EncoderRun:
    return cached_run("extract", params, paths, _make_run)


def _make_run(params: Params, paths: RunPaths) -> EncoderRun:
    cfg = params.extract
    return encoder_run("extract", cfg, params, paths, out_root=paths.features_root,
                       extra={"dtype": cfg.dtype}, code=(source_hash(CODE, version=__version__),),
                       default_checkpoint=pretrained_weights(params, paths),
                       default_origin="pretrain")


@dataclass(frozen=True)
class ExtractStageResult:
    feature_version: str
    features_dir: Path
    index: Path
    encoder: str
    checkpoint: str | None
    checkpoint_sha256: str
    checkpoint_origin: str
    params: dict[str, Any]
    manifest_sha256: str
    code_version: str
    videos: int
    ok: int
    failed: int
    reused: int
    computed: int
    clips: int
    seconds: float
    feature_dim: int
    shards: int
    precision: str
    exports: list[str]

    def metrics(self) -> dict[str, float]:
        m = {k: float(getattr(self, k)) for k in ("videos", "ok", "failed", "reused",
                                                   "computed", "clips", "seconds",
                                                   "feature_dim", "shards")}
        m["clips_per_s"] = self.clips / self.seconds if self.seconds > 0 else 0.0
        return m

    def tags(self) -> dict[str, str]:
        return {"tspipe.feature_version": self.feature_version,
                "tspipe.checkpoint_sha256": self.checkpoint_sha256,
                "tspipe.checkpoint_origin": self.checkpoint_origin,
                "tspipe.precision": self.precision}

    def to_dict(self) -> dict[str, Any]:
        return result_dict(self)


batches, batch_done = shard_functions(make_run)


def run_batch(params: Params, paths: RunPaths, batch: Batch, reporter: Reporter) -> int:
    run = make_run(params, paths)
    if shard_done(run, batch):
        return 0
    cfg = params.extract
    shard = run.shard_file(batch)
    videos = run.inputs(batch)
    with H5FeatureWriter(shard, run.base_attrs(), dtype=cfg.dtype) as writer:
        reused = reuse_old_features(run, writer, [v.video_id for v in videos], paths)
        if reused:
            reporter.message(f"extract: {len(reused)} videos of {shard.name} copied from "
                             "earlier versions with the same recipe")
        result = encode_shard(run, batch, writer, reporter, dtype=cfg.dtype)
    ShardReport.of(run, batch, result, reused).save(run.shard_report(batch))
    return len(result.written)


def _video_sha(run: EncoderRun) -> dict[str, str | None]:
    return {v.video_id: v.sha256 for v in run.videos}


def reuse_old_features(run: EncoderRun, writer: H5FeatureWriter, ids: list[str],
                       paths: RunPaths) -> dict[str, str]:
    """Copy the datasets of ``ids`` that an earlier version with this run's recipe holds
    for the same downloaded file; returns video id -> the version copied from."""
    todo = set(ids) - writer.done_ids()
    if not todo:
        return {}
    sha = _video_sha(run)
    reused: dict[str, str] = {}
    for index_file in sorted(paths.features_root.glob("*/index.json")):
        if index_file.parent == run.out_dir or not todo:
            continue
        index = json.loads(index_file.read_text(encoding="utf-8"))
        if index.get("recipe") != run.recipe():
            continue
        for vid in sorted(todo):
            entry = index["videos"].get(vid)
            if not entry or entry["status"] != "ok" or entry.get("sha256") != sha[vid] \
                    or sha[vid] is None:
                continue
            source = index_file.parent / entry["shard"]

            def fill(f: h5py.File, source: Path = source, vid: str = vid) -> None:
                with h5py.File(source, "r") as src:
                    src.copy(src[vid], f, name=vid)
                    f[vid].attrs.update(writer.store.attrs)  # this version's attributes

            writer.store.write(vid, fill)
            reused[vid] = index["feature_version"]
            todo.discard(vid)
    return reused


def finalize(params: Params, paths: RunPaths, reporter: Reporter) -> ExtractStageResult:
    run = make_run(params, paths)
    cfg = params.extract
    reports = shard_reports(run)
    sha = _video_sha(run)
    videos: dict[str, dict[str, Any]] = {}
    dims: set[int] = set()
    for report in reports:
        with h5py.File(run.out_dir / report.shard, "r") as f:
            for vid in report.ids:
                if vid in f:
                    dims.add(int(f[vid].shape[1]))
                    videos[vid] = {"status": "ok", "shard": report.shard,
                                   "num_clips": int(f[vid].shape[0]), "sha256": sha[vid],
                                   "reused_from": report.reused.get(vid)}
                else:
                    videos[vid] = {"status": "failed", "shard": None, "sha256": sha[vid],
                                   "reason": report.failed.get(vid, "not in the shard file")}
    if len(dims) > 1:
        raise StageError(f"extract: version {run.version[:12]} holds features of several "
                         f"sizes {sorted(dims)}")
    index = {"feature_version": run.version, "recipe": run.recipe(), "stage": "extract",
             "encoder": cfg.encoder, "checkpoint_sha256": run.checkpoint_sha256,
             "checkpoint_origin": run.origin, "params": run.id_params,
             "manifest_sha256": run.manifest_sha256, "code_version": run.code_version,
             "attrs": run.base_attrs(), "videos": videos}
    index_path = atomic_write_json(run.out_dir / "index.json", index)
    shards = sorted(run.out_dir.glob(f"{SHARD_PREFIX}*.h5"))
    exports = _export(run, shards, cfg.export, cfg.export_id_prefix)
    atomic_write_json(paths.features_current, {"feature_version": run.version,
                                            "dir": str(run.out_dir.relative_to(paths.root))})
    ok = [v for v in videos.values() if v["status"] == "ok"]
    result = ExtractStageResult(
        feature_version=run.version, features_dir=run.out_dir, index=index_path,
        encoder=cfg.encoder, checkpoint=None if run.checkpoint is None else str(run.checkpoint),
        checkpoint_sha256=run.checkpoint_sha256, checkpoint_origin=run.origin,
        params=run.id_params, manifest_sha256=run.manifest_sha256,
        code_version=run.code_version, videos=len(videos), ok=len(ok),
        failed=len(videos) - len(ok), reused=sum(v["reused_from"] is not None for v in ok),
        computed=sum(len(r.written) for r in reports),
        clips=sum(r.clips for r in reports), seconds=sum(r.seconds for r in reports),
        feature_dim=dims.pop() if dims else 0, shards=len(reports),
        precision=reports[0].precision if reports else run.precision(), exports=exports)
    atomic_write_json(paths.metrics("extract"), result.metrics())
    reporter.message(f"extract: version {run.version[:12]}: {result.ok} videos ok "
                     f"({result.reused} copied from earlier versions), {result.failed} "
                     f"failed, {result.shards} shards, {result.feature_dim}-d features")
    return result


def _export(run: EncoderRun, shards: list[Path], formats: list[str], prefix: str) -> list[str]:
    done = []
    for fmt in formats:
        if fmt == "h5":
            merge_h5(shards, run.out_dir / "features.h5")
        else:
            export = export_npy if fmt == "npy" else export_csv
            for shard in shards:
                export(shard, run.out_dir / fmt, id_prefix=prefix)
        done.append(fmt)
    return done
