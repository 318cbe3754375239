"""A finished shard is trusted only when it is whole: every state a shard can be found in,
and what a retry's report keeps of the run before."""

from __future__ import annotations

import json

import h5py
import numpy as np

from tspipe.extract.shards import prepare_shard, remove_shard, retried, shard_problem


def _shard(folder, ids=("a", "b"), failed=None):
    shard, report = folder / "shard-00000.h5", folder / "shard-00000.json"
    with h5py.File(shard, "w") as f:
        for vid in ids:
            f[vid] = np.ones((2, 4), np.float32)
    report.write_text(json.dumps({"ids": [*ids, *(failed or {})], "failed": failed or {},
                                  "written": list(ids), "skipped": [], "reused": {},
                                  "clips": 4, "seconds": 1.0}))
    return shard, report


def test_every_state_of_a_shard(tmp_path):
    shard, report = tmp_path / "shard-00000.h5", tmp_path / "shard-00000.json"
    assert shard_problem(shard, report) is None  # not started
    _shard(tmp_path, failed={"c": "cannot be decoded"})
    assert shard_problem(shard, report) is None  # finished; its failed video is no damage
    report.unlink()
    assert shard_problem(shard, report) is None  # merged, report not yet written: resumes

    _shard(tmp_path)
    shard.unlink()
    assert "missing, but its report shard-00000.json says it is done" in \
        shard_problem(shard, report)
    _shard(tmp_path)
    report.write_text('{"ids": [')
    assert "unreadable shard report" in shard_problem(shard, report)
    _shard(tmp_path)
    with h5py.File(shard, "a") as f:
        del f["b"]
    assert "lacks 1 of the 2 videos its report shard-00000.json lists as done (b)" in \
        shard_problem(shard, report)
    _shard(tmp_path)
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) // 2])
    assert "not a readable HDF5 file, cut short or damaged" in shard_problem(shard, report)


def test_prepare_removes_a_damaged_shard_and_returns_a_finished_ones_report(tmp_path):
    said = []
    shard, report = _shard(tmp_path, failed={"c": "NaN"})
    assert prepare_shard(shard, report, said.append)["failed"] == {"c": "NaN"}
    shard.write_bytes(shard.read_bytes()[:100])
    assert prepare_shard(shard, report, said.append) is None
    assert not shard.exists() and not report.exists()
    assert len(said) == 1 and said[0].endswith("removing it and extracting its videos "
                                               "again (repair)")
    remove_shard(shard, report)  # nothing left to remove: no error


def test_a_retry_keeps_what_the_run_before_did():
    before = {"ids": ["a", "b", "c"], "written": ["a"], "skipped": [], "reused": {"b": "v0"},
              "failed": {"c": "NaN"}, "clips": 5, "seconds": 2.0}
    now = {"ids": ["a", "b", "c"], "written": ["c"], "skipped": ["a", "b"], "reused": {},
           "failed": {}, "clips": 2, "seconds": 1.0}
    assert retried(before, now) == {"ids": ["a", "b", "c"], "written": ["a", "c"],
                                    "skipped": [], "reused": {"b": "v0"}, "failed": {},
                                    "clips": 7, "seconds": 3.0}
