"""One run at a time per run directory: every door takes this lock before it runs stages.

Two runs on one run directory (two ``tspipe run``, a ``tspipe run`` beside ``dvc repro``,
a scheduled flow run beside a manual one) would interleave their writes: one could swap
outputs the other is reading, and both would record into the catalog and dvc.lock. The
second is refused with who holds the directory; ``--wait`` waits for it instead.

Shards of one stage (``tspipe stage NAME --shard I/N``, one per machine) run side by side
by design: they take the lock shared, so they exclude a whole run but not each other.

The lock is an OS file lock (``flock``) on ``.tspipe/run.lock``: the kernel drops it when
its process dies (kill -9 included), so a crashed run never leaves the directory locked.
Within one process the lock is re-entrant (the pipeline flow calls the stage flows), kept
in a table of the directories this process holds.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from tspipe.errors import TspipeError
from tspipe.paths import RunPaths


class RunDirectoryBusy(TspipeError):
    """Another process is running stages in the same run directory."""


# Run directories this process holds: path -> (open lock file, depth). The lock is
# the process's, not a thread's: Prefect runs a flow's tasks in worker threads.
_HELD: dict[Path, list] = {}
_GUARD = threading.Lock()


def _holder(lock_file: Path) -> str:
    try:
        info = json.loads(lock_file.read_text(encoding="utf-8") or "{}")
    except (OSError, ValueError):
        return "another process"
    return (f"pid {info.get('pid', '?')} ({info.get('command', '?')}, since "
            f"{info.get('since', '?')})")


@contextlib.contextmanager
def holding(paths: RunPaths, *, wait: bool = False, shared: bool = False,
            poll_s: float = 0.5) -> Iterator[None]:
    """Hold ``paths.root`` for this process while the block runs; refuse (or, ``wait``,
    wait) when another process holds it. ``shared``: beside other shared holders (the
    shards of a stage), never beside an exclusive one."""
    root = paths.root.resolve()
    with _GUARD:
        held = _HELD.get(root)
        if held is not None:
            held[1] += 1
    if held is not None:
        try:
            yield
        finally:
            with _GUARD:
                held[1] -= 1
        return
    paths.state.mkdir(parents=True, exist_ok=True)
    lock_file = paths.state / "run.lock"
    fh = lock_file.open("a+", encoding="utf-8")  # held across the yield
    try:
        while True:
            try:
                fcntl.flock(fh, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not wait:
                    raise RunDirectoryBusy(
                        f"{root}: the run directory is in use by {_holder(lock_file)}; "
                        "two runs would interleave their outputs. Wait for it to finish "
                        "(or pass --wait), or use another run directory (--root)."
                    ) from None
                time.sleep(poll_s)
        if not shared:  # who holds it, for the refusal's message
            fh.seek(0)
            fh.truncate()
            fh.write(json.dumps({"pid": os.getpid(), "command": " ".join(sys.argv[:3]),
                                 "since": time.strftime("%Y-%m-%dT%H:%M:%S")}))
            fh.flush()
        with _GUARD:
            _HELD[root] = [fh, 1]
        try:
            yield
        finally:
            with _GUARD:
                del _HELD[root]
            if not shared:
                fh.seek(0)
                fh.truncate()
            fcntl.flock(fh, fcntl.LOCK_UN)
    finally:
        fh.close()
