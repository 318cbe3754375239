"""The runs of the ``extract`` stage: the (RGB) encoder's, and for I3D's two streams the
flow encoder's and their per-clip concatenation.

Each stream is a feature version of its own (the same id a single-stream run of that
encoder would get); :class:`TwoStream` names the concatenation's version, RGB first, whose
index names both sources. :func:`concat_shard` writes one shard of it from the two
streams' finished shards.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tspipe.config import Params
from tspipe.errors import ConfigError, StageError
from tspipe.extract.concat import concat_features
from tspipe.extract.writers import H5FeatureWriter
from tspipe.io import sha256_json
from tspipe.models.registry import ENCODERS, encoder_info
from tspipe.paths import RunPaths
from tspipe.provenance import CONCAT_CODE, EXTRACT_CODE, feature_version_id
from tspipe.reporting import Reporter
from tspipe.stages.contract import Batch
from tspipe.stages.encoder_runs import (
    EncoderRun,
    ShardReport,
    encoder_run,
    pretrained_weights,
)


def make_run(params: Params, paths: RunPaths) -> EncoderRun:
    """The (RGB) encoder's run."""
    cfg = params.extract
    return encoder_run("extract", cfg, params, paths, out_root=paths.features_root,
                       extra={"dtype": cfg.dtype}, code=EXTRACT_CODE,
                       default_checkpoint=pretrained_weights(params, paths),
                       default_origin="pretrain")


def _make_flow_run(params: Params, paths: RunPaths) -> EncoderRun:
    cfg = params.extract
    assert cfg.flow_encoder is not None
    if encoder_info(cfg.flow_encoder).stream != "flow":
        raise ConfigError(f"extract.flow_encoder {cfg.flow_encoder!r} is not an optical-flow "
                          "encoder; flow encoders: "
                          + ", ".join(n for n, e in ENCODERS.items() if e.stream == "flow"))
    if encoder_info(cfg.encoder).stream != "rgb":
        raise ConfigError(f"extract.encoder {cfg.encoder!r} reads optical flow; with "
                          "extract.flow_encoder set, extract.encoder is the RGB stream")
    flow_cfg = cfg.model_copy(update={"encoder": cfg.flow_encoder,
                                      "checkpoint": cfg.flow_checkpoint,
                                      "flow_encoder": None, "flow_checkpoint": None})
    # Its weights are flow_checkpoint or seeded random ones: never the pretrain stage's
    # (that fine-tunes the RGB stream).
    return encoder_run("extract", flow_cfg, params, paths, out_root=paths.features_root,
                       extra={"dtype": cfg.dtype}, code=EXTRACT_CODE)


@dataclass(frozen=True)
class TwoStream:
    """An RGB and a flow run over the same videos, and the version of their concatenation."""

    rgb: EncoderRun
    flow: EncoderRun
    id_params: dict[str, Any]
    code_version: str
    version: str
    out_dir: Path

    @classmethod
    def of(cls, rgb: EncoderRun, flow: EncoderRun, dtype: str) -> TwoStream:
        if [v.video_id for v in rgb.videos] != [v.video_id for v in flow.videos]:
            raise StageError("extract: the RGB and flow streams see different videos")
        id_params = {"stage": "extract", "dtype": dtype,
                     "concat": {"rgb": rgb.version, "flow": flow.version}}
        code = CONCAT_CODE
        # The catalog's id recipe, with the RGB stream's weights as the version's checkpoint
        # (the flow stream's are in its own version, named in "concat").
        version = feature_version_id(rgb.checkpoint_sha256, id_params, rgb.manifest_sha256, code)
        return cls(rgb, flow, id_params, code, version, rgb.out_dir.parent / version)

    def flow_batch(self, batch: Batch) -> Batch:
        return self.flow.batches()[self.rgb.shard_index(batch)]

    def shard_file(self, batch: Batch) -> Path:
        return self.out_dir / self.rgb.shard_file(batch).name

    def shard_report(self, batch: Batch) -> Path:
        return self.shard_file(batch).with_suffix(".json")

    def encoder(self) -> str:
        return f"{self.rgb.cfg.encoder}+{self.flow.cfg.encoder}"

    def recipe(self) -> str:
        return sha256_json({"params": self.id_params, "code": self.code_version})

    def attrs(self) -> dict[str, Any]:
        return {**self.rgb.base_attrs(), "encoder": self.encoder(),
                "feature_version": self.version, "recipe": self.recipe(),
                "flow_checkpoint_sha256": self.flow.checkpoint_sha256,
                "sources": json.dumps(self.id_params["concat"])}


def two_stream(params: Params, paths: RunPaths, rgb: EncoderRun) -> TwoStream | None:
    """With ``extract.flow_encoder`` set, the RGB run ``rgb`` with the flow encoder's run
    and their concatenation; else None."""
    if not params.extract.flow_encoder:
        return None
    return TwoStream.of(rgb, _make_flow_run(params, paths), params.extract.dtype)


def concat_shard(two: TwoStream, batch: Batch, flow_batch: Batch, dtype: str,
            reporter: Reporter) -> None:
    """The concatenation shard of two finished stream shards; a video either stream
    failed fails here with that stream's reason."""
    rgb_report = ShardReport.load(two.rgb.shard_report(batch))
    streams = {"rgb": rgb_report, "flow": ShardReport.load(two.flow.shard_report(flow_batch))}
    failed: dict[str, str] = {}
    for name, report in streams.items():
        for vid, why in report.failed.items():
            failed.setdefault(vid, f"{name} stream: {why}")
    ok = [vid for vid in batch.ids if vid not in failed]
    shard = two.shard_file(batch)
    with H5FeatureWriter(shard, two.attrs(), dtype=dtype) as writer:
        result = concat_features([two.rgb.shard_file(batch), two.flow.shard_file(flow_batch)],
                                 writer, ok)
    ShardReport(shard=shard.name, ids=list(batch.ids), written=result.written,
                skipped=result.skipped, failed={**failed, **result.failed}, clips=result.clips,
                seconds=result.seconds, precision=rgb_report.precision, host=rgb_report.host,
                pid=rgb_report.pid).save(two.shard_report(batch))
    reporter.message(f"extract: {shard.name}: {len(result.written)} videos concatenated "
                     f"(RGB ++ flow), {len(failed) + len(result.failed)} failed")
