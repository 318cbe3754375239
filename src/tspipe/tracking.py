"""MLflow: one parent run per pipeline run, one nested run per stage. One module owns it.

Default store: a SQLite database in the run directory (``sqlite:///mlflow.db``, MLflow's
recommended local backend; no ``mlruns/`` file store); ``MLFLOW_TRACKING_URI`` (through
``tspipe.config``) switches to a server. The explicit ``MlflowClient`` with run ids is
used rather than the fluent API, whose active-run stack is per thread: Prefect may run
tasks on other threads.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tspipe.config import Params, TrackingConfig
from tspipe.dvc_inputs import stage_inputs_hash
from tspipe.paths import RunPaths
from tspipe.provenance import git_commit

log = logging.getLogger(__name__)

TAG_KIND = "tspipe.kind"  # "pipeline" or "stage"
TAG_STAGE = "tspipe.stage"
TAG_VARIANT = "tspipe.variant"  # the compare.variants entry a stage run belongs to
TAG_PARAMS_HASH = "tspipe.params_hash"
TAG_GIT = "tspipe.git_commit"
TAG_FLOW_RUN = "tspipe.prefect_flow_run_id"
TAG_DVC = "tspipe.dvc_stage_hash"
TAG_FEATURE_VERSION = "tspipe.feature_version"
TAG_CACHED = "tspipe.cached"
# MLflow 3 opens an experiment without a kind on its GenAI (traces) page: this one holds
# model-training runs, shown on the classic runs table.
EXPERIMENT_TAGS = {
    "mlflow.experimentKind": "custom_model_development",
    "mlflow.note.content": (
        "tspipe runs: one `pipeline` run per pipeline run, one nested run per stage run, "
        "named `STAGE` or `STAGE@VARIANT` (tsp, tac, ...). Evaluate runs hold BMN / G-TAD "
        "metrics (`bmn.auc`, `gtad.average_map`, ...) and AR-AN / mAP plots; the registered "
        "model `tspipe-encoder` holds every fine-tuned encoder (alias `@best`: the variant "
        "whose features scored best in the last comparison). In MLflow 3's UI, choose "
        "'Model training' (not 'GenAI') at the top left, or open "
        "`#/experiments?workflowType=machine_learning`."),
}


# Sections that say where results are recorded, not what they are: outside params hashes
# (TSPIPE_CATALOG_URL or MLFLOW_TRACKING_URI set, the same numbers, the same hash).
RECORDING_SECTIONS = ("tracking", "catalog")


def numbers_hash(params: Params, sections: tuple[str, ...] | None = None) -> str:
    """Hash of the params ``sections`` (default: all) that can change a number."""
    names = sections if sections is not None else tuple(type(params).model_fields)
    return params.section_hash(*(n for n in names if n not in RECORDING_SECTIONS))


def resolve_uri(cfg: TrackingConfig, paths: RunPaths) -> str:
    """A relative ``sqlite:///file.db`` is made absolute inside the run directory."""
    return paths.resolve_sqlite_url(cfg.uri)


def flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested params as MLflow params: ``{"pretrain": {"lr": 1}} -> {"pretrain.lr": "1"}``."""
    out: dict[str, str] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(flatten(v, key + "."))
        else:
            out[key] = str(v)[:6000]  # MLflow's param value limit
    return out


@dataclass
class TrackedRun:
    """A handle a door logs into; ``run_id`` is None when tracking is off."""

    tracker: Tracker | None
    run_id: str | None

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        if self.tracker and self.run_id:
            self.tracker.log_metrics(self.run_id, metrics, step)

    def log_dict(self, obj: dict[str, Any], name: str) -> None:
        if self.tracker and self.run_id:
            self.tracker.client.log_dict(self.run_id, obj, name)

    def log_artifact(self, path: str | Path) -> None:
        if self.tracker and self.run_id:
            self.tracker.client.log_artifact(self.run_id, str(path))

    def set_tags(self, tags: Mapping[str, str]) -> None:
        if self.tracker and self.run_id:
            for k, v in tags.items():
                self.tracker.client.set_tag(self.run_id, k, v)

    def register_model(self, name: str, path: str | Path, tags: Mapping[str, str],
                       description: str | None = None, alias: str | None = None
                       ) -> str | None:
        """Log ``path`` under ``model/`` and register it as a new version of model ``name``
        (created on first use) with ``tags``; the version number, None without tracking.
        A version whose ``sha256`` tag equals ``tags["sha256"]`` already holds these
        weights: its number is returned and nothing is registered again."""
        if not (self.tracker and self.run_id):
            return None
        from mlflow.exceptions import MlflowException

        client = self.tracker.client
        version = None
        if "sha256" in tags:
            for mv in client.search_model_versions(f"name = '{name}'"):
                if mv.tags.get("sha256") == tags["sha256"]:
                    version = mv.version
                    for k, v in tags.items():  # e.g. registered before variants were tagged
                        if mv.tags.get(k) is None:
                            client.set_model_version_tag(name, version, k, v)
        if version is None:
            client.log_artifact(self.run_id, str(path), "model")
            try:
                client.create_registered_model(name, description=REGISTERED_DESCRIPTION)
            except MlflowException as exc:
                if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                    raise
            source = f"{client.get_run(self.run_id).info.artifact_uri}/model/{Path(path).name}"
            version = client.create_model_version(name, source, run_id=self.run_id,
                                                  tags=dict(tags),
                                                  description=description).version
        if alias:
            client.set_registered_model_alias(name, alias, version)
        return version


REGISTERED_DESCRIPTION = (
    "Video encoders fine-tuned by tspipe (TSP or TAC, per compare.variants entry). Tags: "
    "variant, mode, encoder, dataset, sha256 of the weights file. Aliases: one per variant "
    "(its latest encoder) and `best` (the variant whose features scored best).")


class Tracker:
    def __init__(self, cfg: TrackingConfig, paths: RunPaths) -> None:
        from mlflow import MlflowClient

        self.cfg = cfg
        self.paths = paths
        self.uri = resolve_uri(cfg, paths)
        self.client = MlflowClient(tracking_uri=self.uri)
        self.experiment_id = self._experiment(cfg.experiment)

    @property
    def artifact_root(self) -> Path:
        """Where an embedded store's experiment keeps its artifacts: beside the store."""
        return self.paths.root / "mlartifacts"

    def embedded(self) -> bool:
        """Whether the store is a SQLite file inside the run directory (its own)."""
        prefix = "sqlite:///"
        return (self.uri.startswith(prefix)
                and Path(self.uri[len(prefix):]).is_relative_to(self.paths.root))

    def _experiment(self, name: str) -> str:
        exp = self.client.get_experiment_by_name(name)
        if exp is not None and self.embedded():
            relocate_store(Path(self.uri[len("sqlite:///"):]), exp.artifact_location,
                           self.artifact_root)
        if exp is not None:
            for key, value in EXPERIMENT_TAGS.items():  # made before these tags existed
                if exp.tags.get(key) != value:
                    self.client.set_experiment_tag(exp.experiment_id, key, value)
            return exp.experiment_id
        location = None
        if self.uri.startswith("sqlite:"):
            # Artifacts beside the SQLite store, not in whatever folder the process runs in.
            location = self.artifact_root.as_uri()
        try:
            return self.client.create_experiment(name, artifact_location=location,
                                                 tags=EXPERIMENT_TAGS)
        except Exception:  # created by a concurrent process meanwhile
            exp = self.client.get_experiment_by_name(name)
            if exp is None:
                raise
            return exp.experiment_id

    def base_tags(self, params: Params) -> dict[str, str]:
        tags = {TAG_PARAMS_HASH: numbers_hash(params)}
        commit = git_commit(self.paths.root)
        if commit:
            tags[TAG_GIT] = commit
            tags["mlflow.source.git.commit"] = commit.removesuffix("+dirty")
        return tags

    @contextlib.contextmanager
    def run(self, name: str, *, params: Mapping[str, Any], tags: Mapping[str, str],
            parent_id: str | None = None) -> Iterator[TrackedRun]:
        """A run that ends FINISHED, or FAILED when the body raises."""
        from mlflow.entities import Param
        from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

        all_tags = dict(tags)
        if parent_id:
            all_tags[MLFLOW_PARENT_RUN_ID] = parent_id
        run = self.client.create_run(self.experiment_id, tags=all_tags, run_name=name)
        run_id = run.info.run_id
        flat = flatten(params)
        for i in range(0, len(flat), 100):  # MLflow's batch limit is 100 params
            chunk = list(flat.items())[i:i + 100]
            self.client.log_batch(run_id, params=[Param(k, v) for k, v in chunk])
        status = "FAILED"
        try:
            yield TrackedRun(self, run_id)
            status = "FINISHED"
        finally:
            self.client.set_terminated(run_id, status=status)

    def log_metrics(self, run_id: str, metrics: Mapping[str, float],
                    step: int | None = None) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(run_id, metrics=[
            Metric(k, float(v), now, step or 0) for k, v in metrics.items()])

    def dvc_tag(self, stage: str) -> dict[str, str]:
        """The inputs hash of DVC stage ``stage`` as they are now (before it runs): the
        ``dvc.lock`` entry this run's outputs will be recorded under."""
        h = stage_inputs_hash(self.paths.root, stage)
        return {TAG_DVC: h} if h else {}


# Every column of MLflow's SQL store that holds a file location (MLflow 3).
LOCATION_COLUMNS = (("experiments", "artifact_location"), ("runs", "artifact_uri"),
                    ("model_versions", "source"), ("model_versions", "storage_location"),
                    ("logged_models", "artifact_location"))


def relocate_store(db: Path, location: str, artifact_root: Path) -> int:
    """Make the SQLite store ``db`` of a run directory copied or moved to where
    ``artifact_root`` now is name its artifacts there; the number of values rewritten.

    MLflow stores artifact locations absolute (it resolves a relative one when the
    experiment is created, mlflow/mlflow#7670) and has no API to change them
    (mlflow/mlflow#3144): a copy would log into the original's folder. ``location``, the
    experiment's recorded one, ends with the same path as ``artifact_root`` under another
    run directory root: every location under that old root, as a ``file://`` URI or a
    plain path, is rewritten under the new one. Only for the run directory's own store
    (see :meth:`Tracker.embedded`), never a tracking server's."""
    import sqlite3
    from urllib.parse import unquote, urlsplit

    recorded = Path(unquote(urlsplit(location).path) if location.startswith("file:")
                    else location)
    depth = len(artifact_root.parts) - len(artifact_root.parent.parts)
    if (recorded == artifact_root or not recorded.is_absolute()
            or recorded.parts[-depth:] != artifact_root.parts[-depth:]):
        return 0
    old, new = recorded.parents[depth - 1], artifact_root.parents[depth - 1]
    prefixes = [(old.as_uri() + "/", new.as_uri() + "/"), (f"{old}/", f"{new}/")]
    changed = 0
    with contextlib.closing(sqlite3.connect(db)) as con, con:
        tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        for table, column in LOCATION_COLUMNS:
            if table not in tables:
                continue
            # Table and column names are the constants above, never input.
            query = f"SELECT rowid, {column} FROM {table}"  # noqa: S608
            update = f"UPDATE {table} SET {column} = ? WHERE rowid = ?"  # noqa: S608
            for rowid, value in con.execute(query).fetchall():
                for before, after in prefixes:
                    if isinstance(value, str) and value.startswith(before):
                        con.execute(update, (after + value[len(before):], rowid))
                        changed += 1
                        break
    if changed:  # none: another process or thread rewrote them first
        log.warning("MLflow store %s: the run directory moved from %s to %s; %d artifact "
                    "locations (experiments, runs, model versions) rewritten to the new "
                    "folder", db, old, new, changed)
    return changed


class MlflowReporter:
    """The ``Reporter`` that turns a stage's per-step metrics into MLflow metrics."""

    def __init__(self, run: TrackedRun) -> None:
        self.run = run

    def start(self, task: str, total: int | None = None) -> None:
        pass

    def advance(self, task: str, n: int = 1) -> None:
        pass

    def metric(self, key: str, value: float, step: int | None = None) -> None:
        self.run.log_metrics({key: value}, step)

    def message(self, text: str, level: int = logging.INFO) -> None:
        pass


def make_tracker(params: Params, paths: RunPaths) -> Tracker | None:
    return Tracker(params.tracking, paths) if params.tracking.enabled else None
