"""What the ``gvf`` and ``extract`` stages share: the decoded videos, the encoder, the shards.

Both run one encoder over every decoded video's sliding windows (the ``clip:`` section,
the loader and model code of :mod:`tspipe.extract`) in shards of ``shard_size`` videos. A
shard is one Prefect task (one Ray task with ``runner: ray``), one HDF5 file and one small
JSON report beside it; the report is written last, so a shard with a report is complete.

Everything that decides the numbers is hashed into the run's **version**
(:func:`tspipe.provenance.feature_version_id`): the checkpoint's sha256, the params that
change numbers (encoder, clip, preprocessing, precision settings, and the stage's own:
dtype or pooling), the manifest hash of the videos (ids + the downloaded files' sha256 +
the decode settings that made the standardized copies) and the code version. Shards live
under ``<out>/<version>/``, so changed inputs never resume into old files.

Precision: ``device: auto`` / ``amp: auto`` enter the version as written, and each shard
records the precision it actually ran in (``float32`` on the CPU, ``bf16``/``fp16`` under
autocast on CUDA); ``finalize`` refuses a version whose shards disagree. Pin ``device``
and ``amp`` to get one id per precision across machines.

``preprocess_on`` (host workers or the model's device) does not enter the version: the
arithmetic is the same (bit-identical on the CPU, last bits of the bilinear kernel on
CUDA). Each shard report records where it ran; the HDF5 attributes do not (a resumed
shard may finish with the other setting).
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from tspipe.config import EncoderRunConfig, Params
from tspipe.data.clip_sampler import ClipSampler
from tspipe.errors import ConfigError, StageError
from tspipe.extract.loader import VideoInput
from tspipe.extract.preprocess import Preprocess, default_resize
from tspipe.extract.runner import ExtractResult, FeatureWriter, extract_features
from tspipe.extract.writers import extraction_params, feature_attrs
from tspipe.io import atomic_write_json, sha256_json
from tspipe.models.loading import LoadedEncoder, load_encoder
from tspipe.models.registry import ENCODERS
from tspipe.paths import RunPaths
from tspipe.provenance import feature_version_id
from tspipe.reporting import Reporter
from tspipe.runtime import precision, resolve_device
from tspipe.stages.contract import Batch, Batching
from tspipe.stages.decoded import DecodedVideo, decoded_videos, manifest_sha256
from tspipe.stages.flow import settings as flow_settings

SHARD_PREFIX = "shard-"


@dataclass(frozen=True)
class EncoderRun:
    """One gvf or extract run: what decides its numbers, its version and its shards."""

    stage: str
    cfg: EncoderRunConfig
    checkpoint: Path | None
    origin: str  # official | pretrain | scratch
    loaded: LoadedEncoder
    sampler: ClipSampler
    prep: Preprocess
    videos: list[DecodedVideo]
    id_params: dict[str, Any]
    manifest_sha256: str
    code_version: str
    version: str
    out_dir: Path  # <out>/<version>
    device: torch.device  # cfg.device, resolved on this machine

    @property
    def checkpoint_sha256(self) -> str:
        return self.loaded.checkpoint_sha256

    def batches(self) -> list[Batch]:
        size = self.cfg.shard_size
        return [Batch(tuple(v.video_id for v in self.videos[i:i + size]),
                      sha256_json([self.version, [[v.video_id, v.sha256]
                                                  for v in self.videos[i:i + size]]]))
                for i in range(0, len(self.videos), size)]

    def shard_index(self, batch: Batch) -> int:
        ids = [v.video_id for v in self.videos]
        if not batch.ids or batch.ids[0] not in ids:
            raise StageError(f"{self.stage}: shard of {batch.ids[:1]} is not one of this run's")
        return ids.index(batch.ids[0]) // self.cfg.shard_size

    def shard_file(self, batch: Batch) -> Path:
        return self.out_dir / f"{SHARD_PREFIX}{self.shard_index(batch):05d}.h5"

    def shard_report(self, batch: Batch) -> Path:
        return self.shard_file(batch).with_suffix(".json")

    def inputs(self, batch: Batch) -> list[VideoInput]:
        wanted = set(batch.ids)
        return [VideoInput(v.video_id, v.path) for v in self.videos if v.video_id in wanted]

    def precision(self) -> str:
        """What this machine runs it in: float32, or the autocast dtype on CUDA."""
        return precision(self.device, self.cfg.amp)

    def base_attrs(self) -> dict[str, Any]:
        """File attributes every shard of this run carries."""
        seed = self.loaded.random_init_seed
        return feature_attrs(encoder=self.cfg.encoder, checkpoint_sha256=self.checkpoint_sha256,
                             feature_version=self.version, sampler=self.sampler, prep=self.prep,
                             checkpoint_origin=self.origin, precision=self.precision(),
                             recipe=self.recipe(),
                             **({} if seed is None else {"random_init_seed": seed}))

    def recipe(self) -> str:
        """The version without the video set: equal recipes make equal numbers for the
        same video file, which is what lets a new version reuse an old one's features."""
        return sha256_json({"checkpoint": self.checkpoint_sha256, "params": self.id_params,
                            "decode_of": "source_sha256", "code": self.code_version})


def pretrained_weights(params: Params, paths: RunPaths) -> Path | None:
    """Extraction's weights when ``extract.checkpoint`` is unset: the pretrain stage's
    encoder, or, where this run's pretrain is disabled, the weights it would have started
    from (``pretrain.init_checkpoint``: features without fine-tuning)."""
    if params.pretrain.enabled:
        return paths.pretrain_checkpoint
    init = params.pretrain.init_checkpoint
    return paths.resolve(init) if init else None


def _checkpoint(stage: str, cfg: EncoderRunConfig, params: Params, paths: RunPaths,
                default: Path | None, default_origin: str) -> tuple[Path | None, str]:
    """The weights file and its origin: ``cfg.checkpoint`` (official), else ``default``
    (the stage's natural source), else nothing (random weights, if allowed). A ``default``
    that is named but missing raises: random weights never stand in for it (features
    from them would be recorded and compared as if they were the trained encoder's)."""
    if cfg.checkpoint:
        path = paths.resolve(cfg.checkpoint)
        if not path.exists():
            raise ConfigError(f"{stage}.checkpoint: {path} does not exist")
        return path, "official"
    if default is not None:
        if not default.exists():
            raise _missing_default(stage, default, params, paths)
        return default, default_origin
    if not cfg.allow_random_init:
        raise ConfigError(
            f"{stage}: no checkpoint (set {stage}.checkpoint to a weights file); features "
            f"from random weights are meaningless for localization, so they are made only "
            f"with {stage}.allow_random_init: true (recorded as origin 'scratch')")
    return None, "scratch"


def _missing_default(stage: str, default: Path, params: Params, paths: RunPaths
                     ) -> ConfigError | StageError:
    """The error for a default weights file that does not exist: the pretrain stage's
    encoder (run that stage) or ``pretrain.init_checkpoint`` (a path to fix)."""
    if params.pretrain.enabled and default == paths.pretrain_checkpoint:
        name = f"pretrain@{paths.variant}" if paths.variant else "pretrain@VARIANT"
        staging = paths.staging_dir(paths.model_dir("pretrain"))
        waiting = (f"; an unfinished training waits in {staging}: the pretrain stage resumes "
                   "it" if staging.exists() else "")
        return StageError(
            f"{stage}: {default} does not exist and pretrain.enabled is true: run the "
            f"pretrain stage first (`tspipe stage {name}`), or set {stage}.checkpoint to a "
            f"weights file; random weights never stand in for the trained encoder{waiting}")
    return ConfigError(
        f"pretrain.init_checkpoint: {default} does not exist (the {stage} stage's weights "
        f"while {stage}.checkpoint is unset): fix the path, run the stage that writes it "
        "(`tspipe stage base` for models/pretrain/base/checkpoint.pt), or set it to null "
        "for seeded random weights")


def encoder_run(stage: str, cfg: EncoderRunConfig, params: Params, paths: RunPaths, *,
                out_root: Path, extra: Mapping[str, Any], code: str,
                default_checkpoint: Path | None = None, default_origin: str = "official"
                ) -> EncoderRun:
    """Resolve the weights, the clips and the videos of one run, and its version."""
    checkpoint, origin = _checkpoint(stage, cfg, params, paths, default_checkpoint,
                                     default_origin)
    loaded = load_encoder(cfg.encoder, checkpoint, allow_random_init=cfg.allow_random_init,
                          seed=cfg.seed)
    sampler = ClipSampler.from_config(params.clip)
    resize = cfg.resize or (params.clip.resize if params.clip.crop == loaded.spec.size
                            else default_resize(loaded.spec.size))
    prep = Preprocess.for_spec(loaded.spec, cfg.preprocessing, resize)
    videos = decoded_videos(paths)
    if prep.is_flow:  # an optical-flow encoder reads the flow stage's files
        videos = flow_inputs(stage, cfg, params, paths, videos)
        extra = {**dict(extra), "flow": flow_settings(params).to_dict()}
    id_params = {"stage": stage, **extraction_params(cfg.encoder, sampler, prep,
                                                     device=cfg.device, amp=cfg.amp,
                                                     **dict(extra))}
    manifest = manifest_sha256(videos, params)
    version = feature_version_id(loaded.checkpoint_sha256, id_params, manifest, code)
    return EncoderRun(stage=stage, cfg=cfg, checkpoint=checkpoint, origin=origin,
                      loaded=loaded, sampler=sampler, prep=prep, videos=videos,
                      id_params=id_params, manifest_sha256=manifest, code_version=code,
                      version=version, out_dir=out_root / version,
                      device=resolve_device(cfg.device))


def flow_inputs(stage: str, cfg: EncoderRunConfig, params: Params, paths: RunPaths,
                videos: list[DecodedVideo]) -> list[DecodedVideo]:
    """The flow stage's file of each decoded video (a missing one fails that video, by
    name, when it is read)."""
    if not params.flow.enabled:
        raise ConfigError(f"{stage}.encoder {cfg.encoder} reads optical flow: set "
                          "flow.enabled: true (and run the flow stage) first")
    return [DecodedVideo(v.video_id, paths.flow_file(v.video_id), v.sha256) for v in videos]


@dataclass(frozen=True)
class ShardReport:
    """Written beside a shard once it is complete (the marker that it is)."""

    shard: str
    ids: list[str]
    written: list[str]
    skipped: list[str]
    failed: dict[str, str]
    reused: dict[str, str] = field(default_factory=dict)  # video id -> version copied from
    clips: int = 0
    seconds: float = 0.0
    precision: str = "float32"
    preprocess_on: str = "host"  # where frames were preprocessed: host (workers) | device
    host: str = ""  # where it ran (a Ray cluster spreads shards over nodes)
    pid: int = 0

    @classmethod
    def of(cls, run: EncoderRun, batch: Batch, result: ExtractResult,
           reused: Mapping[str, str]) -> ShardReport:
        return cls(shard=run.shard_file(batch).name, ids=list(batch.ids),
                   written=list(result.written), skipped=list(result.skipped),
                   failed=dict(result.failed), reused=dict(reused), clips=result.clips,
                   seconds=result.seconds, precision=run.precision(),
                   preprocess_on=result.preprocess_on, host=socket.gethostname(),
                   pid=os.getpid())

    def save(self, path: Path) -> None:
        atomic_write_json(path, self.__dict__)

    @classmethod
    def load(cls, path: Path) -> ShardReport:
        return cls(**json.loads(path.read_text(encoding="utf-8")))


def shard_done(run: EncoderRun, batch: Batch) -> bool:
    return run.shard_report(batch).exists() and run.shard_file(batch).exists()


def shard_batching(make_run: Callable[[Params, RunPaths], EncoderRun],
                   run_batch: Callable[[Params, RunPaths, Batch, Reporter], Any],
                   finalize: Callable[[Params, RunPaths, Reporter], Any],
                   done: Callable[[EncoderRun, Batch], bool] = shard_done) -> Batching:
    """A one-encoder stage's batching: its shards, whether one is complete (``done``), and
    both in one pass (the encoder loaded once)."""

    def batches(params: Params, paths: RunPaths) -> list[Batch]:
        return make_run(params, paths).batches()

    def batch_done(params: Params, paths: RunPaths, batch: Batch) -> bool:
        return done(make_run(params, paths), batch)

    def status(params: Params, paths: RunPaths) -> list[tuple[Batch, bool]]:
        run = make_run(params, paths)
        return [(b, done(run, b)) for b in run.batches()]

    return Batching(batches, run_batch, batch_done, finalize, status)


def encode_shard(run: EncoderRun, batch: Batch, writer: FeatureWriter, reporter: Reporter,
                 dtype: str = "float32") -> ExtractResult:
    """The shard's videos through the run's encoder into ``writer`` (resumes)."""
    cfg = run.cfg
    return extract_features(run.inputs(batch), run.loaded.model, run.loaded.spec,
                            run.sampler, writer=writer, mode=run.prep.mode,
                            resize=run.prep.resize, batch_size=cfg.batch_size,
                            workers=cfg.workers, device=run.device, amp=cfg.amp,
                            dtype=dtype, preprocess_on=cfg.preprocess_on, reporter=reporter)


def shard_reports(run: EncoderRun) -> list[ShardReport]:
    """Every shard's report, or a StageError naming the shards not done."""
    missing = [run.shard_file(b).name for b in run.batches() if not shard_done(run, b)]
    if missing:
        raise StageError(f"{run.stage}: {len(missing)} of {len(run.batches())} shards of "
                         f"version {run.version[:12]} are not done ({', '.join(missing[:5])}"
                         f"{', ...' if len(missing) > 5 else ''}); run them (all, or with "
                         "--shard) before finalizing")
    reports = [ShardReport.load(run.shard_report(b)) for b in run.batches()]
    precisions = {r.precision for r in reports}
    if len(precisions) > 1:
        raise StageError(f"{run.stage}: shards of version {run.version[:12]} ran in different "
                         f"precisions {sorted(precisions)}; pin {run.stage}.device and "
                         f"{run.stage}.amp and rerun the odd shards")
    return reports


# The code both encoder stages share (each adds its own module).
CODE = ("tspipe.stages.encoder_runs", "tspipe.stages.decoded", "tspipe.stages.reuse",
        "tspipe.extract",
        "tspipe.data.clip_sampler", "tspipe.models")


def encoder_inputs(stage: str) -> Callable[[Params, RunPaths], list[Path]]:
    """The files that decide a gvf or extract run besides the videos: the decode report,
    the flow report for a flow encoder, the weights."""

    def inputs(params: Params, paths: RunPaths) -> list[Path]:
        cfg = getattr(params, stage)
        files = [paths.decode_report]
        if getattr(ENCODERS.get(cfg.encoder), "stream", "rgb") == "flow":
            files.append(paths.flow_report)
        if cfg.checkpoint:
            files.append(paths.resolve(cfg.checkpoint))
        elif stage == "extract":
            files += [p for p in (pretrained_weights(params, paths),) if p is not None]
        elif params.pretrain.init_checkpoint:
            files.append(paths.resolve(params.pretrain.init_checkpoint))
        return files

    return inputs
