"""Prefect's cache of a stage lives in the run directory, whatever the Prefect home; a
record whose result cannot be read here is recomputed, never an error; a run directory
copied or moved elsewhere is served from its own cache."""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tspipe.doors.prefect_cache import cache_state, located, portable
from tspipe.doors.prefect_stages import STAGE_FLOWS
from tspipe.paths import RunPaths


def _records(root):
    folder = root / ".tspipe/prefect-results"
    return {p.name: p for p in folder.iterdir() if p.is_file()} if folder.exists() else {}


@pytest.mark.slow
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


def _store(paths: RunPaths):
    """Prefect's result store laid out as ``task_cache`` lays it out."""
    from prefect.filesystems import LocalFileSystem
    from prefect.results import ResultStore

    return ResultStore(
        metadata_storage=LocalFileSystem(basepath=str(paths.prefect_results)),
        result_storage=LocalFileSystem(basepath=str(paths.prefect_results / "results")))


def test_a_moved_run_directory_reads_its_own_cached_results(tmp_path, caplog):
    old = RunPaths.at(tmp_path / "old" / "run")
    _store(old).write({"videos": 3}, key="synth-abc")
    _store(old).write({"videos": 4}, key="ingest-abc")
    shutil.move(tmp_path / "old", tmp_path / "new")
    new = RunPaths.at(tmp_path / "new" / "run")
    record = new.prefect_results / "synth-abc"
    # Prefect recorded the absolute path it wrote: here it refuses to read it.
    with pytest.raises(ValueError, match="outside of the base path"):
        _store(new).read("synth-abc")

    with caplog.at_level(logging.INFO, logger="tspipe.doors.prefect_cache"):
        assert cache_state("synth-abc", new) == "readable"
    here = new.prefect_results / "results" / "synth-abc"
    assert json.loads(record.read_text())["storage_key"] == str(here)
    assert "rewritten" in caplog.text and str(old.root) in caplog.text
    assert _store(new).read("synth-abc").result == {"videos": 3}
    assert cache_state("synth-abc", new) == "readable"  # once rewritten, left alone

    # A record whose result this run directory lacks is not pointed at nothing.
    (new.prefect_results / "results" / "ingest-abc").unlink()
    before = (new.prefect_results / "ingest-abc").read_text()
    assert cache_state("ingest-abc", new) == "unreadable"
    assert (new.prefect_results / "ingest-abc").read_text() == before
    assert not (tmp_path / "old").exists()


def test_a_result_of_another_prefect_home_is_not_taken_for_a_moved_one(tmp_path):
    paths = RunPaths.at(tmp_path / "run")
    _store(paths).write(1, key="synth-abc")
    record = paths.prefect_results / "synth-abc"
    meta = json.loads(record.read_text())
    meta["storage_key"] = "/home/someone-else/.prefect/storage/synth-abc"  # same file name
    record.write_text(json.dumps(meta))
    assert cache_state("synth-abc", paths) == "unreadable"
    assert json.loads(record.read_text()) == meta
    assert cache_state("nothing-here", paths) == "none"


@dataclass(frozen=True)
class _Result:
    checkpoint: Path
    figures: list[Path]
    by_name: dict[str, Path]
    source: str  # a string is left as it is
    outside: Path = Path("/weights/k400.pth")
    nested: tuple[Path, ...] = ()
    counts: dict[str, int] = field(default_factory=dict)


def test_cached_results_hold_paths_relative_to_the_run_directory(tmp_path):
    old, new = RunPaths.at(tmp_path / "old"), RunPaths.at(tmp_path / "new")
    result = _Result(checkpoint=old.pretrain_checkpoint, figures=[old.plot("p", "e")],
                     by_name={"m": old.metrics("p")}, source=str(old.root / "a.json"),
                     nested=(old.root / "x",), counts={"ok": 3})
    cached = portable(result, old)
    assert cached.checkpoint == Path("models/pretrain/checkpoint.pt")
    assert cached.figures == [Path("plots/p_e.csv")] and cached.nested == (Path("x"),)
    assert cached.by_name == {"m": Path("metrics/p.json")}
    assert cached.outside == Path("/weights/k400.pth") and cached.source == result.source
    assert located(cached, old) == result
    there = located(cached, new)
    assert there.checkpoint == new.pretrain_checkpoint and there.figures == [new.plot("p", "e")]
    assert there.by_name == {"m": new.metrics("p")} and there.nested == (new.root / "x",)
    assert there.outside == Path("/weights/k400.pth") and there.counts == {"ok": 3}
    assert located(7, new) == 7 and portable(None, old) is None
