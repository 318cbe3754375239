"""Re-encode a video to a constant frame rate (and optionally a smaller size).

TSP decodes every video at a fixed rate; a constant-frame-rate H.264 copy with a keyframe
every ``gop`` frames makes that rate exact and random access cheap (at most ``gop`` frames
decoded per seek). The frames are chosen by the same rule as :func:`decode`.
"""

from __future__ import annotations

import dataclasses
import logging
from fractions import Fraction
from pathlib import Path

from tspipe.data.video.backends import PyAVReader
from tspipe.data.video.decode import resolve_size, timed_frames
from tspipe.data.video.encode import VideoWriter, as_rate, h264_options
from tspipe.data.video.probe import ProbeResult, probe
from tspipe.data.video.timeline import resample
from tspipe.errors import VideoError
from tspipe.io import atomic_path

log = logging.getLogger(__name__)


def standardize(src: str | Path, dst: str | Path, *, fps: float | Fraction,
                short_side: int | None = None, gop: int = 15, crf: int = 18,
                video_id: str | None = None) -> ProbeResult:
    """Write ``src`` to ``dst`` as H.264 yuv420p MP4 at a constant ``fps``.

    ``short_side`` scales the shorter side to that many pixels (aspect kept); both sides
    are rounded to even numbers (yuv420p). Keyframes fall exactly every ``gop`` frames.
    Audio is dropped (the pipeline reads pictures only). ``dst`` appears only when complete
    (written to a temp file, probed, then renamed); ``src`` is only read. Returns the probe
    of the new file: ``frames_decoded == ceil(duration * fps)``.
    """
    src, dst = Path(src), Path(dst)
    if dst.exists() and dst.resolve() == src.resolve():
        raise VideoError(src, "standardize would overwrite its own source; give another "
                         "destination", video_id=video_id)
    if gop < 1:
        raise ValueError(f"gop must be >= 1 frame, got {gop}")
    rate = as_rate(fps)
    with PyAVReader(src, video_id=video_id) as reader, atomic_path(dst) as tmp:
        h, w = resolve_size(reader.header.width, reader.header.height, short_side=short_side,
                            even=True)
        timed, timeline = timed_frames(reader, (h, w))
        with VideoWriter(tmp, rate=rate, width=w, height=h, options=h264_options(
                crf=crf, gop=gop), gop=gop, container_options={"movflags": "+faststart"}
                         ) as writer:
            picture = None
            for k, source, first in resample(timed, float(rate), timeline=timeline):
                if first:  # scale + convert once; a repeated frame reuses the picture
                    picture = reader.convert(source.image, (h, w), "yuv420p")
                writer.write(picture, pts=k)  # type: ignore[arg-type]
        result = probe(tmp, video_id=video_id)
    log.info("standardized %s -> %s: %d frames at %s fps, %dx%d", src, dst,
             result.frames_decoded, rate, w, h)
    return dataclasses.replace(result, path=str(dst))
