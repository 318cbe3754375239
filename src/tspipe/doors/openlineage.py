"""OpenLineage events of the stage runs (``tracking.openlineage``; the ``lineage`` extra).

Each recorded stage run sends a START and a COMPLETE ``RunEvent``: job namespace ``tspipe``,
job name the stage run (``NAME`` or ``NAME@VARIANT``), to a JSON-lines file or an HTTP
server (Marquez). Datasets, named so that one stage's output is the next one's input:

- a file of the run directory: namespace its ``file://`` URI, name its path in it (a file
  elsewhere: namespace ``file``, its absolute path), version its sha256;
- a checkpoint, by content: ``tspipe`` / ``checkpoint/<sha256>`` (pretrain's output, the
  init it started from, the encoder extraction and GVF ran);
- a feature version: ``tspipe`` / ``feature_version/<id>`` (extract's output, evaluate's and
  compare's input).

Walking back from a feature version: extract (checkpoint, decode report, manifest) ->
decode -> download -> ingest -> synth. The events are sent when the door records the run,
after the stage finished; a failure to send them is a warning, never a failed stage.
"""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from urllib.request import url2pathname

from openlineage.client import OpenLineageClient
from openlineage.client.event_v2 import (
    InputDataset,
    Job,
    OutputDataset,
    Run,
    RunEvent,
    RunState,
)
from openlineage.client.generated.base import DatasetFacet, RunFacet
from openlineage.client.generated.dataset_version_dataset import DatasetVersionDatasetFacet
from openlineage.client.generated.job_type_job import JobTypeJobFacet
from openlineage.client.transport.file import FileConfig, FileTransport
from openlineage.client.transport.http import HttpConfig, HttpTransport
from openlineage.client.transport.http_common import DEFAULT_RETRY_CONFIG
from openlineage.client.transport.transport import Transport

from tspipe.config import Params
from tspipe.io import sha256_file
from tspipe.paths import RunPaths
from tspipe.stages import STAGES

log = logging.getLogger(__name__)

NAMESPACE = "tspipe"
PRODUCER = "https://github.com/tspipe/tspipe"
# Run ids: uuid5 of the MLflow run id in this namespace (the same run, the same id).
_RUN_IDS = uuid.uuid5(uuid.NAMESPACE_URL, PRODUCER)
_HASH_LIMIT = 64 << 20  # files hashed for their version facet; larger ones are not read
_CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt", ".safetensors", ".pkl")
# Few, quick retries: a lineage server that is down must not hold the pipeline up.
_HTTP_RETRY = {**DEFAULT_RETRY_CONFIG, "total": 2, "connect": 2, "read": 2,
               "backoff_factor": 0.2}

Dataset = tuple[str, str, dict[str, Any]]  # namespace, name, facets


def emit_stage_run(name: str, result: Any, params: Params, paths: RunPaths,
                   mlflow_run_id: str | None = None) -> None:
    """Send the START and COMPLETE events of stage run ``name`` (as the door records it:
    a variant's stage by its name, with ``paths`` bound to the variant)."""
    target = params.tracking.openlineage
    if not target:
        return
    run_name = stage_run_name(name, paths)
    try:
        inputs, outputs = stage_datasets(run_name, result, params, paths)
        run_id = (uuid.uuid5(_RUN_IDS, mlflow_run_id) if mlflow_run_id else uuid.uuid4())
        variant = run_name.partition("@")[2] or None
        run = Run(runId=str(run_id), facets={"tspipe": _facet(
            RunFacet, stage=run_name.partition("@")[0], variant=variant,
            mlflowRunId=mlflow_run_id, metrics=_metrics(result))})
        job = Job(namespace=NAMESPACE, name=run_name, facets={"jobType": JobTypeJobFacet(
            processingType="BATCH", integration="TSPIPE", jobType="STAGE",
            producer=PRODUCER)})
        client = OpenLineageClient(transport=make_transport(target, paths))
        try:
            for state, outs in ((RunState.START, []), (RunState.COMPLETE, outputs)):
                client.emit(RunEvent(
                    eventType=state, eventTime=datetime.now(UTC).isoformat(),
                    run=run, job=job, producer=PRODUCER,
                    inputs=[InputDataset(ns, n, facets=f) for ns, n, f in inputs],
                    outputs=[OutputDataset(ns, n, facets=f) for ns, n, f in outs]))
        finally:
            client.close()
    except Exception as exc:  # lineage is a record at the side: it never fails a stage
        log.warning("OpenLineage: the events of %s were not sent to %s: %s: %s", run_name,
                    target, type(exc).__name__, exc)


def stage_run_name(name: str, paths: RunPaths) -> str:
    """The stage run a recording is of: ``NAME@VARIANT`` for a variant's paths, and a
    stage recorded as another (``base``, recorded as ``pretrain`` in its own folder) by
    its own name."""
    variant = paths.variant
    if variant is None:
        return name
    own = STAGES.get(variant)
    if own is not None and own.record_as == name and not own.per_variant:
        return variant
    return f"{name}@{variant}"


def make_transport(target: str, paths: RunPaths) -> Transport:
    """The client's transport for the setting (never OpenLineage's own environment
    configuration): an HTTP server, or a JSON-lines file events are appended to."""
    parts = urlsplit(target)
    if parts.scheme.lower() in ("http", "https"):
        return HttpTransport(HttpConfig(url=target, timeout=5.0, retry=dict(_HTTP_RETRY)))
    path = url2pathname(parts.path) if parts.scheme.lower() == "file" else target
    file = paths.resolve(path)
    file.parent.mkdir(parents=True, exist_ok=True)
    return FileTransport(FileConfig(log_file_path=str(file), append=True))


def stage_datasets(run_name: str, result: Any, params: Params, paths: RunPaths
                   ) -> tuple[list[Dataset], list[Dataset]]:
    """Inputs and outputs: the stage's declared files (its DVC deps and outs; plots left
    out), checkpoints and feature versions by identity instead of by file, and what the
    result knows of them (hashes, counts)."""
    stage = STAGES[run_name.partition("@")[0]]
    known: dict[Path, dict[str, Any]] = {}
    ins: list[Dataset] = []
    outs: list[Dataset] = []
    kind = stage.record_as or stage.name
    if kind == "synth":
        known[Path(result.annotations_path)] = {"sha256": result.sha256,
                                                "videos": result.videos}
        outs.append(_file(paths, result.annotations_path, known))
    elif kind == "ingest":
        known[paths.resolve(result.source)] = {"sha256": result.source_sha256}
        known[Path(result.annotations)] = {
            "sha256": result.annotations_sha256, "dataset": result.dataset,
            "videos": result.videos, "segments": result.segments, "classes": result.classes}
    elif kind == "download":
        known[Path(result.manifest)] = {"ok": result.ok, "missing": result.missing,
                                        "failed": result.failed}
    elif kind == "decode":
        known[Path(result.report)] = {"ok": result.ok, "failed": result.failed}
    elif kind == "gvf":
        ins.append(_checkpoint(result.checkpoint_sha256, origin=result.checkpoint_origin,
                               encoder=result.encoder))
        known[Path(result.path)] = {"gvf_version": result.version}
    elif kind == "pretrain":
        if result.init_sha256:
            init = params.pretrain.init_checkpoint
            ins.append(_checkpoint(result.init_sha256, path=init and paths.resolve(init)))
        outs.append(_checkpoint(result.checkpoint_sha256, path=result.checkpoint,
                                origin="pretrain", encoder=result.encoder))
    elif kind == "extract":
        for stream in [*result.streams.values(), vars(result)]:
            ins.append(_checkpoint(stream["checkpoint_sha256"], path=stream["checkpoint"],
                                   origin=stream["checkpoint_origin"],
                                   encoder=stream["encoder"]))
            outs.append(_feature_version(stream))
        ins.append(_file(paths, paths.manifest, {
            paths.manifest: {"manifest_sha256": result.manifest_sha256}}))
    elif kind == "evaluate":
        ins.append(_feature_version({"feature_version": result.feature_version}))
        outs.append(_file(paths, result.results_dir, {Path(result.results_dir): {
            "feature_version": result.feature_version, "scores": result.scores}}))
    elif kind == "compare":
        ins += [_feature_version({"feature_version": v}) for v in
                sorted({r["feature_version"] for r in result.rows if r.get("feature_version")})]
    ins += [_file(paths, p, known) for p in stage.inputs(params, paths) if _kept(p, paths)]
    outs += [_file(paths, p, known) for p in stage.outputs(params, paths) if _kept(p, paths)]
    return _unique(ins), _unique(outs)


def _kept(path: Path, paths: RunPaths) -> bool:
    """A declared file that is not named by identity instead (a checkpoint, a feature
    version's pointer) nor a plot."""
    try:
        top = path.relative_to(paths.root).parts[0]
    except (ValueError, IndexError):
        top = ""
    if top in ("models", "plots") or path.suffix in _CHECKPOINT_SUFFIXES:
        return False
    return not (top == "features" and path.name == "current.json")


def _file(paths: RunPaths, path: str | Path, known: dict[Path, dict[str, Any]]) -> Dataset:
    path = Path(path)
    try:
        namespace, name = paths.root.as_uri(), path.relative_to(paths.root).as_posix()
    except ValueError:
        namespace, name = "file", path.as_posix()
    facts = dict(known.get(path, {}))
    sha = facts.pop("sha256", None) or _sha256(path)
    facets: dict[str, Any] = {}
    if sha:
        facets["version"] = DatasetVersionDatasetFacet(datasetVersion=sha, producer=PRODUCER)
    if sha or facts:
        facets["tspipe"] = _facet(DatasetFacet, sha256=sha, **facts)
    return namespace, name, facets


def _checkpoint(sha256: str, *, path: str | Path | None = None, origin: str | None = None,
                encoder: str | None = None) -> Dataset:
    uri = Path(path).resolve().as_uri() if path else None
    return NAMESPACE, f"checkpoint/{sha256}", {
        "version": DatasetVersionDatasetFacet(datasetVersion=sha256, producer=PRODUCER),
        "tspipe": _facet(DatasetFacet, sha256=sha256, uri=uri, origin=origin, encoder=encoder)}


def _feature_version(fv: dict[str, Any]) -> Dataset:
    """``fv``: an extraction result's fields (or only ``feature_version``)."""
    version = fv["feature_version"]
    facts = {k: fv.get(k) for k in ("encoder", "checkpoint_sha256", "manifest_sha256",
                                    "code_version", "videos", "ok", "failed", "feature_dim")}
    if fv.get("features_dir"):
        facts["uri"] = Path(fv["features_dir"]).resolve().as_uri()
    return NAMESPACE, f"feature_version/{version}", {
        "version": DatasetVersionDatasetFacet(datasetVersion=version, producer=PRODUCER),
        "tspipe": _facet(DatasetFacet, **{k: v for k, v in facts.items() if v is not None})}


def _facet(cls: type, **facts: Any) -> Any:
    return cls(producer=PRODUCER).with_additional_properties(**facts)


def _sha256(path: Path) -> str | None:
    try:
        if path.is_file() and path.stat().st_size <= _HASH_LIMIT:
            return sha256_file(path)
    except OSError:
        pass
    return None


def _metrics(result: Any) -> dict[str, float] | None:
    metrics = getattr(result, "metrics", None)
    return dict(metrics()) if callable(metrics) else None


def _unique(datasets: list[Dataset]) -> list[Dataset]:
    """The first of each (namespace, name): what the result knew, before the declared."""
    seen: dict[tuple[str, str], Dataset] = {}
    for ds in datasets:
        seen.setdefault(ds[:2], ds)
    return list(seen.values())
