"""H.264 bytes depend on the frames and the options only: not on what the process's heap
held before (x264's mb-tree read uninitialized memory; see ``X264_DETERMINISTIC``)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

# Encodes the same frames twice in one process: by the synth encoder (64x48 frames, as the
# suite's SynthActions) and by the standardizing writer (320x240); prints both files' sha256.
SCRIPT = r"""
import hashlib, sys, tempfile
from pathlib import Path
import numpy as np
from tspipe.data.synth_encode import encode_frames
from tspipe.data.video.encode import VideoWriter, h264_options

def frames(w, h, n=60):
    yy, xx = np.mgrid[0:h, 0:w]
    for t in range(n):
        img = ((np.sin((xx + 3 * t) / 7.0) + np.cos((yy - 2 * t) / 5.0)) * 60 + 128)
        img = img.astype(np.uint8)
        yield np.stack([img, np.roll(img, t, 1), 255 - img], -1)

out = Path(tempfile.mkdtemp())
encode_frames(frames(64, 48), out / "synth.mp4", 12, 64, 48, 23)
with VideoWriter(out / "std.mp4", rate=30, width=320, height=240,
                 options=h264_options(crf=18, gop=30)) as writer:
    for frame in frames(320, 240):
        writer.write(frame)
print(" ".join(hashlib.sha256((out / n).read_bytes()).hexdigest()
               for n in ("synth.mp4", "std.mp4")))
"""


def encode_with_heap(fill: int | None) -> str:
    env = {k: v for k, v in os.environ.items() if k != "MALLOC_PERTURB_"}
    if fill is not None:
        env["MALLOC_PERTURB_"] = str(fill)  # glibc fills malloc'd memory with this byte
    proc = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout.strip()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="MALLOC_PERTURB_ is glibc's")
def test_h264_bytes_do_not_depend_on_the_heap():
    plain = encode_with_heap(None)
    assert len(plain.split()) == 2
    assert encode_with_heap(85) == plain
    assert encode_with_heap(170) == plain
