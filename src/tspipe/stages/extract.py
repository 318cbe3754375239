"""Stage ``extract``: clip features of every decoded video, one versioned HDF5 file per shard.

Layout (a variant's ``features/<variant>/``, ``F`` below, is a DVC output kept between
runs, ``persist: true``)::

    F/<version>/shard-00000.h5    one dataset (num_clips, D) per video id
    F/<version>/shard-00000.json  the shard's report (written last: its marker)
    F/<version>/index.json        every video: status, shard, clips, reused_from
    F/<version>/{npy,csv}/, features.h5   exports named in extract.export
    F/current.json                the version this stage last finished

A shard resumes video by video (:class:`~tspipe.extract.writers.H5FeatureWriter` parts).

**Whole and finite, or not current.** A video whose features hold NaN or inf fails by
name (the runner writes nothing of it), like one that cannot be decoded. A finished shard
found damaged when the stage plans (cut short, a video missing:
:func:`tspipe.extract.shards.shard_problem`) is removed and extracted again, and a finished
shard's non-finite videos are tried again on the next run. ``finalize`` writes the index of
what there is. A video that fails for its own input is named in the index and left out;
a version with non-finite features (or where every video failed) is not whole: it stops
with a StageError naming each failure, before the exports and ``current.json``, which
keeps naming the version it named.

**Two streams (I3D).** With ``extract.flow_encoder`` set, ``extract.encoder`` is the RGB
stream and the flow encoder reads the flow stage's files: each stream is a feature version
of its own (``F/<rgb version>/``, ``F/<flow version>/``, the same ids as single-stream
runs of those encoders would get), and a third version holds their per-clip
concatenation (:mod:`.extract_runs`, :mod:`tspipe.extract.concat`; RGB first), whose index
names both sources.
The concatenation is what ``current.json`` points to, so BMN / G-TAD read two-stream
features; the catalog records all three versions and the concatenation's sources.

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
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py

from tspipe.config import Params
from tspipe.errors import StageError
from tspipe.extract.export import export_csv, export_npy, merge_h5
from tspipe.extract.shards import (
    blocking,
    not_whole,
    prepare_shard,
    retried,
    shard_finished,
    to_retry,
)
from tspipe.extract.writers import H5FeatureWriter
from tspipe.io import atomic_write_json, result_dict
from tspipe.paths import RunPaths
from tspipe.reporting import Reporter
from tspipe.stages.contract import Batch, Batching, Stage
from tspipe.stages.encoder_runs import CODE as ENCODER_CODE
from tspipe.stages.encoder_runs import (
    SHARD_PREFIX,
    EncoderRun,
    ShardReport,
    encode_shard,
    encoder_inputs,
    shard_reports,
)
from tspipe.stages.extract_runs import (
    TwoStream,
    concat_shard,
    make_run,
    two_stream,
)
from tspipe.stages.reuse import reuse_stored, video_sha

log = logging.getLogger(__name__)


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
    # Two streams: "rgb" / "flow" -> that stream's version (the keys above, as JSON); this
    # result is then their concatenation.
    streams: dict[str, dict[str, Any]] = field(default_factory=dict)

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


def batches(params: Params, paths: RunPaths) -> list[Batch]:
    return make_run(params, paths).batches()


def _finished(run: EncoderRun, batch: Batch) -> bool:
    return shard_finished(run.shard_file(batch), run.shard_report(batch), stage="extract")


def _done(run: EncoderRun, two: TwoStream | None, batch: Batch) -> bool:
    """The shard is complete and readable: the encoder's, and with two streams the flow
    encoder's and their concatenation's too (a damaged one is logged and not done)."""
    if two is None:
        return _finished(run, batch)
    return (_finished(run, batch) and _finished(two.flow, two.flow_batch(batch))
            and shard_finished(two.shard_file(batch), two.shard_report(batch),
                               stage="extract"))


def batch_done(params: Params, paths: RunPaths, batch: Batch) -> bool:
    run = make_run(params, paths)
    return _done(run, two_stream(params, paths, run), batch)


def status(params: Params, paths: RunPaths) -> list[tuple[Batch, bool]]:
    run = make_run(params, paths)
    two = two_stream(params, paths, run)
    return [(b, _done(run, two, b)) for b in run.batches()]


def run_batch(params: Params, paths: RunPaths, batch: Batch, reporter: Reporter) -> int:
    """One shard: the encoder's features; with two streams also the flow encoder's and
    their concatenation. Returns the videos encoded."""
    run = make_run(params, paths)
    written = _encode(run, batch, params, paths, reporter)
    two = two_stream(params, paths, run)
    if two is None:
        return written
    flow_batch = two.flow_batch(batch)
    written += _encode(two.flow, flow_batch, params, paths, reporter)
    previous = prepare_shard(two.shard_file(batch), two.shard_report(batch),
                             _say(reporter))
    if previous is None or to_retry(previous):
        concat_shard(two, batch, flow_batch, params.extract.dtype, reporter)
    return written


def _say(reporter: Reporter) -> Callable[[str], None]:
    return lambda text: reporter.message(f"extract: {text}", logging.WARNING)


def _encode(run: EncoderRun, batch: Batch, params: Params, paths: RunPaths,
            reporter: Reporter) -> int:
    """The shard's videos, unless it is finished: a damaged shard is removed first and
    extracted again, and a finished one's non-finite videos are tried again."""
    shard, report = run.shard_file(batch), run.shard_report(batch)
    previous = prepare_shard(shard, report, _say(reporter))
    if previous is not None and not to_retry(previous):
        return 0
    cfg = params.extract
    videos = run.inputs(batch)
    with H5FeatureWriter(shard, run.base_attrs(), dtype=cfg.dtype) as writer:
        reused = reuse_stored(run, writer, [v.video_id for v in videos],
                              paths.features_root)
        if reused:
            reporter.message(f"extract: {len(reused)} videos of {shard.name} copied from "
                             "earlier versions with the same recipe")
        result = encode_shard(run, batch, writer, reporter, dtype=cfg.dtype)
    new = ShardReport.of(run, batch, result, reused)
    if previous is not None:  # its failed videos tried again
        new = ShardReport(**retried(previous, new.__dict__))
    new.save(report)
    return len(result.written)


def _index(out_dir: Path, reports: list[ShardReport], sha: dict[str, str | None],
           head: dict[str, Any]) -> tuple[Path, dict[str, dict[str, Any]], int]:
    """Write ``out_dir/index.json`` (``head``, the feature size and every video's outcome
    from the shards); returns its path, the videos and the feature size."""
    videos: dict[str, dict[str, Any]] = {}
    dims: set[int] = set()
    for report in reports:
        with h5py.File(out_dir / report.shard, "r") as f:
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
        raise StageError(f"extract: version {head['feature_version'][:12]} holds features of "
                         f"several sizes {sorted(dims)}")
    dim = dims.pop() if dims else 0
    # The width readers check every video against (evaluate refuses another).
    index = {**head, "feature_dim": dim, "videos": videos}
    return atomic_write_json(out_dir / "index.json", index), videos, dim


def _version_summary(run: EncoderRun, reports: list[ShardReport]) -> dict[str, Any]:
    """Index one encoder run's version; the ExtractStageResult fields that describe it."""
    head = {"feature_version": run.version, "recipe": run.recipe(), "stage": "extract",
            "encoder": run.cfg.encoder, "checkpoint_sha256": run.checkpoint_sha256,
            "checkpoint_origin": run.origin, "params": run.id_params,
            "manifest_sha256": run.manifest_sha256, "code_version": run.code_version,
            "attrs": run.base_attrs()}
    index, videos, dim = _index(run.out_dir, reports, video_sha(run), head)
    ok = [v for v in videos.values() if v["status"] == "ok"]
    return {"feature_version": run.version, "features_dir": run.out_dir, "index": index,
            "encoder": run.cfg.encoder,
            "checkpoint": None if run.checkpoint is None else str(run.checkpoint),
            "checkpoint_sha256": run.checkpoint_sha256, "checkpoint_origin": run.origin,
            "params": run.id_params, "manifest_sha256": run.manifest_sha256,
            "code_version": run.code_version, "videos": len(videos), "ok": len(ok),
            "failed": len(videos) - len(ok),
            "reused": sum(v["reused_from"] is not None for v in ok), "feature_dim": dim}


def finalize(params: Params, paths: RunPaths, reporter: Reporter) -> ExtractStageResult:
    run = make_run(params, paths)
    cfg = params.extract
    reports = shard_reports(run)
    main = _version_summary(run, reports)
    two = two_stream(params, paths, run)
    streams: dict[str, dict[str, Any]] = {}
    if two is not None:
        flow_reports = shard_reports(two.flow)
        streams = {"rgb": main, "flow": _version_summary(two.flow, flow_reports)}
        missing = [two.shard_file(b).name for b in run.batches()
                   if not two.shard_report(b).exists()]
        if missing:
            raise StageError(f"extract: {len(missing)} concatenation shards of version "
                             f"{two.version[:12]} are not done ({', '.join(missing[:5])}); "
                             "run them before finalizing")
        concat_reports = [ShardReport.load(two.shard_report(b)) for b in run.batches()]
        head = {"feature_version": two.version, "recipe": two.recipe(), "stage": "extract",
                "encoder": two.encoder(), "checkpoint_sha256": run.checkpoint_sha256,
                "checkpoint_origin": run.origin, "params": two.id_params,
                "manifest_sha256": run.manifest_sha256, "code_version": two.code_version,
                "attrs": two.attrs(), "sources": two.id_params["concat"]}
        index, videos, dim = _index(two.out_dir, concat_reports, video_sha(run), head)
        ok = [v for v in videos.values() if v["status"] == "ok"]
        main = {**main, "feature_version": two.version, "features_dir": two.out_dir,
                "index": index, "encoder": two.encoder(), "params": two.id_params,
                "code_version": two.code_version, "videos": len(videos), "ok": len(ok),
                "failed": len(videos) - len(ok), "reused": 0, "feature_dim": dim}
        reports = [*reports, *flow_reports]
        out_dir = two.out_dir
    else:
        concat_reports = []
        out_dir = run.out_dir
    _refuse_not_whole(main, [*reports, *concat_reports], paths, run)
    shards = sorted(out_dir.glob(f"{SHARD_PREFIX}*.h5"))
    exports = _export(out_dir, shards, cfg.export, cfg.export_id_prefix)
    atomic_write_json(paths.features_current, {"feature_version": main["feature_version"],
                                            "dir": str(out_dir.relative_to(paths.root))})
    result = ExtractStageResult(
        **main, computed=sum(len(r.written) for r in reports),
        clips=sum(r.clips for r in reports), seconds=sum(r.seconds for r in reports),
        shards=len(run.batches()),
        precision=reports[0].precision if reports else run.precision(), exports=exports,
        streams={k: {**v, "features_dir": str(v["features_dir"]), "index": str(v["index"])}
                 for k, v in streams.items()})
    atomic_write_json(paths.metrics("extract"), result.metrics())
    reporter.message(f"extract: version {result.feature_version[:12]}: {result.ok} videos ok "
                     f"({result.reused} copied from earlier versions), {result.failed} "
                     f"failed, {result.shards} shards, {result.feature_dim}-d features"
                     + (f" (RGB {streams['rgb']['feature_version'][:12]} ++ flow "
                        f"{streams['flow']['feature_version'][:12]})" if streams else ""))
    return result


def _refuse_not_whole(summary: dict[str, Any], reports: list[ShardReport],
                      paths: RunPaths, run: EncoderRun) -> None:
    """A version whose failures block it (non-finite features, or every video failed:
    :func:`tspipe.extract.shards.blocking`) never becomes current: StageError naming them,
    before exports and ``current.json`` (which keeps pointing where it did)."""
    index = json.loads(Path(summary["index"]).read_text(encoding="utf-8"))
    shard_of = {vid: r.shard for r in reports for vid in r.ids}
    failed = blocking({vid: (shard_of.get(vid), str(v.get("reason")))
                       for vid, v in index["videos"].items() if v["status"] != "ok"},
                      len(index["videos"]))
    if not failed:
        return
    current = paths.features_current
    kept = (f"{current} still names version {_current_version(current)[:12]}"
            if current.exists() else f"{current} is not written")
    raise StageError(not_whole("extract", summary["feature_version"], failed,
                               len(index["videos"]), f"Weights: {_weights(run)}. Each "
                               f"failure is in {summary['index']}; {kept}"))


def _weights(run: EncoderRun) -> str:
    return (f"{run.checkpoint} ({run.origin})" if run.checkpoint is not None
            else f"seeded random ({run.origin})")


def _current_version(current: Path) -> str:
    try:
        return str(json.loads(current.read_text(encoding="utf-8"))["feature_version"])
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as exc:
        return f"(unreadable: {exc})"


def _export(out_dir: Path, shards: list[Path], formats: list[str], prefix: str) -> list[str]:
    done = []
    for fmt in formats:
        if fmt == "h5":
            merge_h5(shards, out_dir / "features.h5")
        else:
            export = export_npy if fmt == "npy" else export_csv
            for shard in shards:
                export(shard, out_dir / fmt, id_prefix=prefix)
        done.append(fmt)
    return done


STAGE = Stage(
    name="extract",
    help="Clip features of every decoded video: versioned HDF5 shards, exports, catalog.",
    sections=("extract", "clip"),
    inputs=encoder_inputs("extract"),
    outputs=lambda params, paths: [paths.features_current, paths.metrics("extract")],
    code=("tspipe.stages.extract", "tspipe.stages.extract_runs", *ENCODER_CODE),
    batching=Batching(batches, run_batch, batch_done, finalize, status),
    per_variant=True,
)
