"""Two runs on one run directory never interleave: the second is refused with who holds
the directory (or waits, ``--wait``); shards of one stage share it; a killed holder
frees it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from reliability_helpers import assert_clean_failure, tspipe, write_params

HOLDER = """
import sys, time
from pathlib import Path
from tspipe.doors.run_lock import holding
from tspipe.paths import RunPaths
root, shared, release = Path(sys.argv[1]), sys.argv[2] == "shared", Path(sys.argv[3])
with holding(RunPaths.at(root), shared=shared):
    (root / "held").write_text("1")
    while not release.exists():
        time.sleep(0.05)
"""


def _hold(root: Path, *, shared: bool = False) -> subprocess.Popen:
    (root / "held").unlink(missing_ok=True)
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(root),
                             "shared" if shared else "exclusive", str(root / "release")])
    deadline = time.monotonic() + 60
    while not (root / "held").exists():
        assert proc.poll() is None and time.monotonic() < deadline, "holder did not start"
        time.sleep(0.05)
    return proc


@pytest.fixture
def root(tmp_path: Path) -> Path:
    write_params(tmp_path / "run", synth={"videos": 2})
    return tmp_path / "run"


def test_second_run_is_refused_then_waits_then_runs(root: Path, ledger) -> None:
    holder = _hold(root)
    try:
        for args in (("run",), ("stage", "synth")):
            out = assert_clean_failure(tspipe(root, *args), "in use by pid", str(holder.pid))
            assert "--wait" in out
            ledger.record("concurrent", f"refused-{args[0]}")
        assert not (root / "data").exists()  # the refused runs wrote nothing
        waiting = subprocess.Popen([sys.executable, "-m", "tspipe", "stage", "synth",
                                    "--wait"], cwd=root, stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, text=True)
        time.sleep(3)
        assert waiting.poll() is None and not (root / "data").exists()  # still waiting
    finally:
        (root / "release").touch()
        holder.wait(timeout=60)
    out, _ = waiting.communicate(timeout=300)
    assert waiting.returncode == 0, out
    assert (root / "data" / "synth" / "synthactions.json").is_file()
    ledger.record("concurrent", "waited")


def test_shards_share_the_directory_but_exclude_a_whole_run(root: Path, ledger) -> None:
    first = _hold(root, shared=True)
    second = _hold(root, shared=True)  # a second shard is let in
    try:
        assert_clean_failure(tspipe(root, "stage", "synth"), "in use by")
        ledger.record("concurrent", "shards-shared")
    finally:
        (root / "release").touch()
        for p in (first, second):
            p.wait(timeout=60)


def test_a_killed_holder_frees_the_directory(root: Path, ledger) -> None:
    holder = _hold(root)
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait(timeout=60)
    proc = tspipe(root, "stage", "synth")
    assert proc.returncode == 0, proc.stderr[-2000:]
    ledger.record("concurrent", "holder-killed")
