"""Decoder backends behind one small interface: PyAV, decord, torchcodec.

A backend opens a :class:`VideoReader` (:mod:`.reader`) on one file. The reader yields every
frame in the decoder's output order with its raw timestamp (``frames``), converts a frame to
RGB at a size (``to_rgb``) and reads frames by index (``read``). Timing, resampling and
sizes are done once, above the backends, in :mod:`.decode`. PyAV lives in
:mod:`.backend_pyav`, decord and torchcodec in :mod:`.backend_libs`; this module picks.

Default backend, by measurement (``python benchmarks/decode.py --repeat 3``, 2-core x86
CPU, each file to 112x112 RGB at 15 fps; frames/s = output frames per second of wall time
over the six real samples of ``shared/data/videos``; "correct" = the README's decoded frame
count, strictly increasing times, no failure; runs vary by about 5%):

=========== ========= =====================================================================
backend     frames/s  correct on all six real samples?
=========== ========= =====================================================================
pyav        1808      yes
decord      1540      no: box.mp4 gives 456 frames (its last frame repeated)
torchcodec   559      no: cityCC0.mpg fails near the end ("no more frames left to decode");
                      frames/s over the other five
=========== ========= =====================================================================

PyAV is the fastest *and* the only one correct on every sample, so ``"auto"`` means PyAV.
Its edge: only the frames the output keeps are converted (25 -> 15 fps skips 40% of the
RGB conversions), and the resize happens inside FFmpeg with one reused swscale context,
while decord and torchcodec convert every frame. The same run, all nine files (three
30 fps SynthActions + the six samples): ours 2004 frames/s, FFmpeg's own filter graph
("limit") 1881, a TSP-style per-clip reader 229: ours / limit 1.07, ours / per-clip 8.75.
"""

from __future__ import annotations

from tspipe.data.video.backend_libs import DecordBackend, TorchCodecBackend
from tspipe.data.video.backend_pyav import INTERPOLATION, PyAVBackend, PyAVReader
from tspipe.data.video.reader import Backend, Size, SourceFrame, VideoReader
from tspipe.errors import ConfigError

DEFAULT_BACKEND = "pyav"

BACKENDS: dict[str, Backend] = {b.name: b for b in
                                (PyAVBackend(), DecordBackend(), TorchCodecBackend())}


def get_backend(name: str | None = "auto") -> Backend:
    """The backend called ``name``; ``"auto"`` or None is :data:`DEFAULT_BACKEND`."""
    key = DEFAULT_BACKEND if name in (None, "auto") else name
    if key not in BACKENDS:
        raise ConfigError(f"unknown video backend {name!r}; choose auto, "
                          f"{', '.join(BACKENDS)}")
    backend = BACKENDS[key]
    if (why := backend.unavailable_reason()) is not None:
        raise ConfigError(f"video backend {key!r} is unavailable here: {why}")
    return backend


def available_backends() -> dict[str, str | None]:
    """Each backend's name -> None if usable, else why not."""
    return {name: b.unavailable_reason() for name, b in BACKENDS.items()}


__all__ = ["BACKENDS", "DEFAULT_BACKEND", "INTERPOLATION", "Backend", "PyAVReader", "Size",
           "SourceFrame", "VideoReader", "available_backends", "get_backend"]
