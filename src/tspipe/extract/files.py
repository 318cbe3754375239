"""Extraction of video files outside a run directory: :func:`run_extract`.

No params.yaml, catalog or MLflow: the files given, one HDF5 file out, one dataset per
video keyed by its file stem (characters outside ``[A-Za-z0-9_.-]`` become ``_``, then
:func:`tspipe.io.safe_id`). ``tspipe extract FILES`` (:mod:`tspipe.doors.cli_extract`)
calls it; tests and scripts call it directly.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from pathlib import Path

from tspipe.config import ENCODER_BATCH_SIZE
from tspipe.data.clip_sampler import ClipSampler
from tspipe.errors import ConfigError
from tspipe.extract.loader import VideoInput
from tspipe.extract.preprocess import MODES, Preprocess
from tspipe.extract.runner import PREPROCESS_ON, ExtractResult, extract_features
from tspipe.extract.writers import H5FeatureWriter, extraction_params, feature_attrs
from tspipe.io import safe_id, sha256_file, sha256_json
from tspipe.models.loading import load_encoder
from tspipe.provenance import FILES_EXTRACT_CODE, feature_version_id
from tspipe.reporting import LoggingReporter, Reporter
from tspipe.runtime import AMP_CHOICES, resolve_device

log = logging.getLogger(__name__)

VIDEO_SUFFIXES = frozenset({".mp4", ".mkv", ".webm", ".avi", ".mov", ".m4v", ".mpg", ".mpeg",
                            ".flv", ".wmv", ".3gp"})
_UNSAFE = re.compile(r"[^A-Za-z0-9_.\-]")


def video_id_for(path: Path) -> str:
    """The file stem, made a safe id: ``My clip (1).mp4 -> My_clip__1_``."""
    return safe_id(_UNSAFE.sub("_", path.stem).lstrip("._-") or "_")


def find_videos(inputs: Sequence[str | Path]) -> list[VideoInput]:
    """Files as given, folders' video files (by suffix, sorted); ids unique."""
    videos: list[VideoInput] = []
    for item in map(Path, inputs):
        if item.is_dir():
            files = sorted(p for p in item.iterdir()
                           if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES)
            if not files:
                raise ConfigError(f"{item}: no video files ({', '.join(sorted(VIDEO_SUFFIXES))})")
        elif item.exists():
            files = [item]
        else:
            raise ConfigError(f"{item}: no such file or folder")
        videos += [VideoInput(video_id_for(p), p) for p in files]
    seen: dict[str, Path] = {}
    for v in videos:
        if v.video_id in seen:
            raise ConfigError(f"{v.path} and {seen[v.video_id]} both become video id "
                              f"{v.video_id!r}")
        seen[v.video_id] = v.path
    return videos


def run_extract(inputs: Sequence[str | Path], *, out: str | Path, encoder: str,
                checkpoint: str | Path | None = None, mode: str = "reference",
                clip_len: int = 16, frame_rate: float = 15.0, stride: int = 16,
                batch_size: int = ENCODER_BATCH_SIZE, workers: int = 2, device: str = "auto",
                amp: str = "auto", dtype: str = "float32", allow_random_init: bool = False,
                seed: int = 0, preprocess_on: str = "auto", reporter: Reporter | None = None
                ) -> ExtractResult:
    """Extract clip features of ``inputs`` into ``out`` (resumes an interrupted run).
    ``preprocess_on`` is not part of the feature version (same arithmetic; see
    :mod:`tspipe.extract.runner`); the result says where it ran."""
    if mode not in MODES:
        raise ConfigError(f"--mode {mode!r}: choose one of {', '.join(MODES)}")
    if amp not in AMP_CHOICES:
        raise ConfigError(f"--amp {amp!r}: choose one of {', '.join(AMP_CHOICES)}")
    if preprocess_on not in PREPROCESS_ON:
        raise ConfigError(f"--preprocess-on {preprocess_on!r}: choose one of "
                          f"{', '.join(PREPROCESS_ON)}")
    videos = find_videos(inputs)
    loaded = load_encoder(encoder, checkpoint, allow_random_init=allow_random_init, seed=seed)
    sampler = ClipSampler(clip_len, frame_rate, stride)
    prep = Preprocess.for_spec(loaded.spec, mode)  # type: ignore[arg-type]
    dev = resolve_device(device)
    params = extraction_params(encoder, sampler, prep, dtype=dtype,
                               amp=amp if dev.type == "cuda" else "off")
    manifest = sha256_json([[v.video_id, sha256_file(v.path)] for v in videos])
    version = feature_version_id(loaded.checkpoint_sha256, params, manifest,
                                 FILES_EXTRACT_CODE)
    extra = {} if loaded.random_init_seed is None else {"random_init_seed":
                                                        loaded.random_init_seed}
    attrs = feature_attrs(encoder=encoder, checkpoint_sha256=loaded.checkpoint_sha256,
                          feature_version=version, sampler=sampler, prep=prep, **extra)
    with H5FeatureWriter(out, attrs, dtype=dtype) as writer:
        return extract_features(videos, loaded.model, loaded.spec, sampler, writer=writer,
                                mode=prep.mode, batch_size=batch_size, workers=workers,
                                device=dev, amp=amp, dtype=dtype,  # type: ignore[arg-type]
                                preprocess_on=preprocess_on,
                                reporter=reporter or LoggingReporter())
