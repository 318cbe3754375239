"""A disk that fills up: a size-limited tmpfs where this machine lets the tests mount one
(root in a container that allows it: CI and the dev machine), else a per-file size limit
(RLIMIT_FSIZE: writes past it fail with EFBIG, the same path through tspipe's code)."""

from __future__ import annotations

import contextlib
import os
import resource
import shutil
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path


def _mount(where: Path, size: int, *, remount: bool = False) -> bool:
    opts = f"{'remount,' if remount else ''}size={size}"
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(where)],
                          capture_output=True)
    return proc.returncode == 0


@dataclass
class SmallDisk:
    """``root``: where the run directory lives; ``popen``: extra arguments for the process
    that must meet the full disk (the per-file limit where no tmpfs could be mounted)."""

    root: Path
    mounted: bool
    limit: int

    @property
    def popen(self) -> dict:
        if self.mounted:
            return {}
        limit = self.limit

        def cap() -> None:  # in the child: EFBIG instead of SIGXFSZ's kill
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
        return {"preexec_fn": cap}

    def leave_free(self, free: int) -> None:
        """Shrink the tmpfs to what it holds now plus ``free`` bytes."""
        if self.mounted:
            st = os.statvfs(self.root)
            used = (st.f_blocks - st.f_bfree) * st.f_frsize
            assert _mount(self.root, used + free, remount=True)

    def grow(self, size: int) -> None:
        """Free space: a bigger tmpfs (or no limit)."""
        if self.mounted:
            assert _mount(self.root, size, remount=True)
        self.limit = resource.RLIM_INFINITY


@contextlib.contextmanager
def small_disk(where: Path, size: int, file_limit: int) -> Iterator[SmallDisk]:
    """A folder of ``size`` bytes (tmpfs), or, without mount rights, an ordinary folder
    whose writers are limited to ``file_limit`` bytes per file."""
    where.mkdir(parents=True)
    mounted = shutil.which("mount") is not None and _mount(where, size)
    try:
        yield SmallDisk(where, mounted, file_limit)
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(where)], check=False)


def used_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
