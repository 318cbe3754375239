"""SynthActions' files: rendered frames encoded to H.264/mp4, and the manifests that let
a rerun keep the files already encoded (the untrimmed videos' and the corpus's alike).

Determinism: the encoder runs on one thread (x264's output depends on its thread count)
without mb-tree (:data:`~tspipe.data.video.encode.X264_DETERMINISTIC`), and the muxer
writes no version string or creation time.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np

from tspipe.data.video.encode import X264_DETERMINISTIC
from tspipe.io import atomic_write_json

log = logging.getLogger(__name__)

_PRESET = "veryfast"
_GOP_S = 2  # a keyframe every 2 s keeps random clip access (TSP sampling) cheap


def encode_frames(frames: Iterable[np.ndarray], dest: Path, fps: int, width: int, height: int,
                  crf: int) -> int:
    """Encode RGB ``(H, W, 3) uint8`` frames to H.264/mp4 at constant ``fps``; return count.

    ``+bitexact`` keeps the muxer from writing its version; one encoder thread because
    x264's bitstream depends on the thread count (and the default is the CPU count).
    """
    rate = Fraction(fps)
    packets = 0
    with av.open(str(dest), mode="w", format="mp4",
                 container_options={"fflags": "+bitexact"}) as container:
        stream = container.add_stream("libx264", rate=rate, options={
            "crf": str(crf), "preset": _PRESET, "x264-params": X264_DETERMINISTIC})
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.codec_context.thread_count = 1
        stream.codec_context.gop_size = _GOP_S * fps
        for pts, rgb in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(_yuv420p(rgb), format="yuv420p")
            frame.pts, frame.time_base = pts, 1 / rate
            for packet in stream.encode(frame):
                container.mux(packet)
                packets += 1
        for packet in stream.encode(None):
            container.mux(packet)
            packets += 1
    return packets


def _yuv420p(rgb: np.ndarray) -> np.ndarray:
    """RGB ``(H, W, 3) uint8`` to planar YUV 4:2:0, BT.601 limited range: ``(3H/2, W) uint8``.

    Integer arithmetic (the usual 8-bit BT.601 coefficients) instead of swscale, whose SIMD
    paths may round differently on other CPUs.
    """
    h, w = rgb.shape[:2]
    px = np.moveaxis(rgb, -1, 0).astype(np.int32)  # (3, H, W): contiguous channel planes
    r, g, b = px
    y = ((66 * r + 129 * g + 25 * b + 128) >> 8) + 16
    # Chroma from the rounded mean of each 2x2 block.
    quad = (px[:, 0::2, 0::2] + px[:, 1::2, 0::2] + px[:, 0::2, 1::2] + px[:, 1::2, 1::2]
            + 2) >> 2
    qr, qg, qb = quad
    u = ((-38 * qr - 74 * qg + 112 * qb + 128) >> 8) + 128
    v = ((112 * qr - 94 * qg - 18 * qb + 128) >> 8) + 128
    planes = np.empty(h * w * 3 // 2, dtype=np.uint8)
    planes[:h * w] = y.ravel()
    planes[h * w:h * w * 5 // 4] = u.ravel()
    planes[h * w * 5 // 4:] = v.ravel()
    return planes.reshape(h * 3 // 2, w)


def read_manifest(path: Path) -> dict[str, Any]:
    """What :func:`write_manifest` recorded at ``path``; ``{}`` when absent or unreadable."""
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        # Only a cache: an unreadable one costs re-encoding, not correctness. Said aloud.
        log.warning("%s unreadable (%s): every video is re-encoded", path, err)
        return {}
    return data if isinstance(data, dict) else {}


def write_manifest(path: Path, config_hash: str, entries: dict[str, Any],
                   generator: int) -> None:
    """Record each file's sha256 (``entries``) under the config hash and the version of
    the generator that made them; :func:`read_manifest` reads it back."""
    atomic_write_json(path, {"generator": generator, "config_sha256": config_hash,
                             "pyav": av.__version__, "videos": entries})
