"""Prefect's cache of a stage lives in the run directory, whatever the Prefect home; a
record whose result cannot be read here is recomputed, never an error."""

from __future__ import annotations

import json
import os

import pytest

from tspipe.doors.prefect_stages import STAGE_FLOWS

pytestmark = pytest.mark.slow


def _records(root):
    folder = root / ".tspipe/prefect-results"
    return {p.name: p for p in folder.iterdir() if p.is_file()} if folder.exists() else {}


def test_results_in_the_run_directory_and_an_unreadable_one_recomputed(run_dir):
    from prefect.settings import PREFECT_HOME

    home_storage = os.path.join(PREFECT_HOME.value(), "storage")
    before = set(os.listdir(home_storage)) if os.path.isdir(home_storage) else set()

    first = STAGE_FLOWS["synth"](params_path="params.yaml", root=str(run_dir))
    assert first["cached"] is False
    [record] = [p for n, p in _records(run_dir).items() if n.startswith("synth-")]
    meta = json.loads(record.read_text())
    stored = meta["storage_key"]
    # The result sits beside its record, in the run directory, not in the Prefect home.
    assert stored.startswith(str((run_dir / ".tspipe/prefect-results/results").resolve()))
    assert os.path.exists(stored)
    after = set(os.listdir(home_storage)) if os.path.isdir(home_storage) else set()
    assert after == before

    assert STAGE_FLOWS["synth"](params_path="params.yaml", root=str(run_dir))["cached"]

    # A record written under another Prefect home (the result elsewhere): recomputed.
    meta["storage_key"] = "/home/someone-else/.prefect/storage/" + os.path.basename(stored)
    record.write_text(json.dumps(meta))
    third = STAGE_FLOWS["synth"](params_path="params.yaml", root=str(run_dir))
    assert third["cached"] is False
    assert json.loads(record.read_text())["storage_key"] == stored  # rewritten, readable
    assert STAGE_FLOWS["synth"](params_path="params.yaml", root=str(run_dir))["cached"]
