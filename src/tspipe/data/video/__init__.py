"""Video files in, RGB frames out: probe, decode, read by index, standardize.

- :func:`probe` -> :class:`ProbeResult`: header facts checked against a full decode.
- :func:`decode` / :func:`decode_batches`: RGB frames at a constant fps and size, by the
  rule in :mod:`.timeline` (decoder order + best-effort times, latest frame at or before
  ``k / fps``).
- :func:`read_frames`: frames by index (seeks on keyframe-dense MP4/Matroska).
- :func:`standardize`: a constant-fps H.264 copy, written atomically.

Backends (:mod:`.backends`): PyAV (default, chosen by measurement), decord, torchcodec.
Bad files raise :class:`tspipe.errors.VideoError` with the reason.
"""

from tspipe.data.video.backends import (
    BACKENDS,
    DEFAULT_BACKEND,
    Backend,
    Size,
    VideoReader,
    available_backends,
    get_backend,
)
from tspipe.data.video.decode import (
    DecodedFrame,
    FrameBatch,
    decode,
    decode_batches,
    open_reader,
    read_frames,
    resolve_size,
)
from tspipe.data.video.header import VideoHeader
from tspipe.data.video.probe import ProbeResult, probe
from tspipe.data.video.standardize import standardize
from tspipe.data.video.timeline import resample_indices

__all__ = [
    "BACKENDS",
    "DEFAULT_BACKEND",
    "Backend",
    "DecodedFrame",
    "FrameBatch",
    "ProbeResult",
    "Size",
    "VideoHeader",
    "VideoReader",
    "available_backends",
    "decode",
    "decode_batches",
    "get_backend",
    "open_reader",
    "probe",
    "read_frames",
    "resample_indices",
    "resolve_size",
    "standardize",
]
