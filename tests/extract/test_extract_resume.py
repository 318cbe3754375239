"""Resume: kill -9 mid-run, rerun, get what an uninterrupted run gets, computing nothing twice."""

from __future__ import annotations

import collections
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import WINDOWS
from extract_helpers import CountingModel, make_scene
from extract_resume_worker import OPTIONS, SAMPLER, setup

from tspipe.extract import H5FeatureWriter, VideoInput, extract_features, read_features

WORKER = Path(__file__).with_name("extract_resume_worker.py")


def _parts(out: Path) -> dict[str, Path]:
    folder = out.with_name(out.name + ".parts")
    return {p.name[:-3]: p for p in folder.glob("[!.]*.h5")} if folder.exists() else {}


@pytest.mark.slow
def test_sigkill_mid_run_then_resume(videos, tmp_path):
    extra = [VideoInput(f"more{i}", make_scene(tmp_path / f"more{i}.mp4", 64, seed=10 + i))
             for i in range(2)]
    todo = videos + extra
    windows = {**WINDOWS, "more0": 2, "more1": 2}
    out, log = tmp_path / "features.h5", tmp_path / "written.log"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(WORKER.parent), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen(
        [sys.executable, str(WORKER), str(out), str(log), "0.3",
         *[f"{v.video_id}={v.path}" for v in todo]],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    deadline = time.monotonic() + 120
    try:
        while len(_parts(out)) < 2:
            if proc.poll() is not None:
                pytest.fail(f"the worker ended early: {proc.stderr.read().decode()[-2000:]}")
            assert time.monotonic() < deadline, "no part appeared in time"
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL

    # After the kill: no merged file, every part complete and readable.
    done = _parts(out)
    assert 2 <= len(done) < len(todo), sorted(done)
    assert not out.exists()
    for vid, part in done.items():
        with h5py.File(part) as f:
            assert list(f) == [vid]
            assert f[vid].shape == (windows[vid], 128)
            assert len(f[vid].attrs["t_start"]) == windows[vid]
    attrs_json = out.with_name(out.name + ".parts") / "attrs.json"
    assert json.loads(attrs_json.read_text())["encoder"] == "r2plus1d_tiny"
    logged = collections.Counter(log.read_text().split()[1::2])
    assert set(logged) <= set(done) and max(logged.values()) == 1

    # Rerun: only the missing videos are computed.
    model, attrs = setup()
    counting = CountingModel(model)
    with H5FeatureWriter(out, attrs) as writer:
        result = extract_features(todo, counting, model.input_spec, SAMPLER, writer=writer,
                                  **OPTIONS)
    assert set(result.skipped) == set(done)
    assert set(result.written) == {v.video_id for v in todo} - set(done)
    assert counting.clips == result.clips == sum(windows[v] for v in result.written)
    assert not out.with_name(out.name + ".parts").exists()

    # Same features as an uninterrupted run.
    ref = tmp_path / "uninterrupted.h5"
    with H5FeatureWriter(ref, attrs) as writer:
        extract_features(todo, model, model.input_spec, SAMPLER, writer=writer, **OPTIONS)
    got, want = read_features(out), read_features(ref)
    assert got.keys() == want.keys() == {v.video_id for v in todo}
    for vid in want:
        np.testing.assert_array_equal(got[vid], want[vid])
