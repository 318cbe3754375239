"""OpenLineage events (``tracking.openlineage``) of real stage runs on tiny SynthActions:
a feature version's whole upstream found by walking the events back, an unreachable
server a warning (the stage succeeds), a bad target refused at validation."""

from __future__ import annotations

import json
import logging
import socket
import sys

import pytest
import yaml

from tspipe.config import load_params, parse_params
from tspipe.doors.recording import record
from tspipe.doors.runner import run_stage
from tspipe.errors import ConfigError, StageError
from tspipe.io import sha256_file
from tspipe.paths import RunPaths
from tspipe.reporting import NullReporter

pytest.importorskip("openlineage.client")

VARIANT = "main"
EVENTS = "lineage/events.jsonl"
# One variant, no base or pretraining: extraction from seeded random weights.
ONE_VARIANT = {"compare": {"variants": {VARIANT: {}}}, "base": {"enabled": False},
               "synth": {"corpus_videos": 0},
               "pretrain": {"enabled": False, "init_checkpoint": None}}


def _with_lineage(root, target):
    """``run_dir`` (tiny SynthActions params) with one variant and lineage to ``target``."""
    path = root / "params.yaml"
    raw = yaml.safe_load(path.read_text())
    for section, values in {**ONE_VARIANT, "tracking": {"openlineage": target}}.items():
        raw[section].update(values)
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return root


def _run(root, *stages):
    params, paths = load_params(root / "params.yaml", env={}), RunPaths.at(root)
    return {s: run_stage(s, params, paths, NullReporter(), track=False).result
            for s in stages}


def _events(root):
    lines = (root / EVENTS).read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines]


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_a_feature_versions_upstream_is_walked_back_to_the_annotations(run_dir):
    root = _with_lineage(run_dir, EVENTS)
    stages = ("synth", "ingest", "download", "decode", f"extract@{VARIANT}")
    results = _run(root, *stages)
    version = results[f"extract@{VARIANT}"].feature_version
    events = _events(root)

    # Each stage run: a START, then a COMPLETE of the same run, job tspipe/<stage run>.
    assert [(e["job"]["name"], e["eventType"]) for e in events] == [
        (s, t) for s in stages for t in ("START", "COMPLETE")]
    for start, done in zip(events[::2], events[1::2], strict=True):
        assert start["run"]["runId"] == done["run"]["runId"]
        assert done["job"]["namespace"] == "tspipe"
        assert done["producer"] == "https://github.com/tspipe/tspipe"
    assert len({e["run"]["runId"] for e in events}) == len(stages)

    complete = [e for e in events if e["eventType"] == "COMPLETE"]
    made_by = {(o["namespace"], o["name"]): e["job"]["name"]
               for e in complete for o in e["outputs"]}
    inputs_of = {e["job"]["name"]: [(i["namespace"], i["name"]) for i in e["inputs"]]
                 for e in complete}
    datasets = {(d["namespace"], d["name"]): d for e in complete
                for d in (*e["inputs"], *e["outputs"])}

    # Walk back from the feature version: the jobs and datasets upstream of it.
    todo, jobs, seen = [("tspipe", f"feature_version/{version}")], [], set()
    while todo:
        ds = todo.pop(0)
        if ds in seen:
            continue
        seen.add(ds)
        job = made_by.get(ds)
        if job is not None and job not in jobs:
            jobs.append(job)
            todo += inputs_of[job]
    assert sorted(jobs) == sorted([f"extract@{VARIANT}", "decode", "download", "ingest",
                                   "synth"])

    run_ns = root.resolve().as_uri()
    annotations = (run_ns, "data/annotations/annotations.json")
    assert annotations in seen and made_by[annotations] == "ingest"
    sha = sha256_file(root / "data/annotations/annotations.json")
    assert datasets[annotations]["facets"]["version"]["datasetVersion"] == sha
    assert (run_ns, "data/manifest/downloads.json") in inputs_of[f"extract@{VARIANT}"]
    assert (run_ns, "data/reports/decode_report.json") in inputs_of[f"extract@{VARIANT}"]
    ckpt = results[f"extract@{VARIANT}"].checkpoint_sha256
    assert ("tspipe", f"checkpoint/{ckpt}") in inputs_of[f"extract@{VARIANT}"]
    fv = datasets[("tspipe", f"feature_version/{version}")]["facets"]["tspipe"]
    assert fv["checkpoint_sha256"] == ckpt
    assert fv["uri"] == (root / "features" / VARIANT / version).resolve().as_uri()
    # No checkpoint file, plot or pointer file stands in for what has an identity.
    names = {name for _, name in datasets}
    assert not any(n.startswith(("models/", "plots/")) or n.endswith("current.json")
                   for n in names)

    # Run ids come from the MLflow run id when there is one: the same run, the same id.
    from tspipe.doors.openlineage import emit_stage_run

    params, paths = load_params(root / "params.yaml", env={}), RunPaths.at(root)
    for _ in range(2):
        emit_stage_run("ingest", results["ingest"], params, paths, "mlflow-run-1")
    again = _events(root)[len(events):]
    assert len({e["run"]["runId"] for e in again}) == 1 and len(again) == 4


@pytest.mark.slow
def test_an_unreachable_server_is_a_warning_and_the_stage_succeeds(run_dir, caplog):
    url = f"http://127.0.0.1:{_closed_port()}"
    root = _with_lineage(run_dir, url)
    with caplog.at_level(logging.WARNING, logger="tspipe.doors.openlineage"):
        result = _run(root, "synth")["synth"]
    assert result.videos == 3 and (root / "data/synth/synthactions.json").is_file()
    warned = [r.getMessage() for r in caplog.records if r.name == "tspipe.doors.openlineage"]
    assert len(warned) == 1
    assert "synth" in warned[0] and url in warned[0]


@pytest.mark.parametrize("target, needle", [
    ("ftp://lineage.example/x", "unknown scheme 'ftp'"),
    ("htp://localhost:5000", "unknown scheme 'htp'"),
    ("http://", "an http: URL needs a host"),
    ("file:", "a file: URL names a local file"),
])
def test_a_bad_target_is_refused_at_validation(target, needle):
    with pytest.raises(ConfigError) as err:
        parse_params({"tracking": {"openlineage": target}}, env={})
    assert "tracking.openlineage" in str(err.value) and needle in str(err.value)


def test_targets_and_the_environment_override():
    for ok in ("lineage/events.jsonl", "file:lineage/e.jsonl", "file:///tmp/e.jsonl",
               "http://127.0.0.1:5000", "https://marquez.example"):
        assert parse_params({"tracking": {"openlineage": ok}}, env={}).tracking.openlineage == ok
    assert parse_params({}, env={}).tracking.openlineage is None
    params = parse_params({}, env={"TSPIPE_OPENLINEAGE_URL": "http://marquez:5000"})
    assert params.tracking.openlineage == "http://marquez:5000"
    with pytest.raises(ConfigError, match="TSPIPE_OPENLINEAGE_URL"):
        parse_params({}, env={"TSPIPE_OPENLINEAGE_URL": "s3://bucket/x"})


def test_without_the_package_the_setting_says_which_extra(tmp_path, monkeypatch):
    monkeypatch.delitem(sys.modules, "tspipe.doors.openlineage", raising=False)
    monkeypatch.setitem(sys.modules, "openlineage.client", None)
    params = parse_params({"tracking": {"openlineage": EVENTS}}, env={})
    with pytest.raises(StageError, match=r"pip install 'tspipe\[lineage\]'"):
        record("synth", None, params, RunPaths.at(tmp_path))
