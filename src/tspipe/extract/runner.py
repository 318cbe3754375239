"""Batched inference over the window loader; each complete video goes to a writer.

The loop (:func:`extract_features`) fits on one screen: skip what the writer already has,
stream :class:`~tspipe.extract.loader.ClipBatch` records, run the encoder in eval mode
under ``torch.inference_mode``, collect each video's clip features in clip order and hand
the video to the writer once its last window is in. On CUDA the batches are copied from
pinned memory without blocking, the model and clips use ``channels_last_3d`` and autocast
runs the encoder in bf16 (fp16 where bf16 is unsupported); on the CPU none of that applies
and features are float32 all the way.

Where preprocessing runs (``preprocess_on``): ``host``: in the DataLoader workers, which
send float clips; ``device``: the workers send uint8 frames as decoded (source size in
``reference`` mode; see :mod:`tspipe.extract.loader` for the batch layout) and
:class:`DeviceFrames` converts, resizes, crops and normalizes them on the model's device
right after the copy, in float32 outside autocast, then gathers each window's clip.
``auto``: ``device`` on CUDA, ``host`` on the CPU. Same arithmetic either way: on the CPU
the numbers are bit-identical at equal thread counts (PyTorch's CPU bilinear kernel
itself rounds differently with one thread, as DataLoader workers run, than with several:
last bits, ~1e-6 after Normalize); on CUDA its kernel may differ from the CPU's in the
last bits. So the setting does not enter the feature version (the result and the shard
reports record it).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import numpy as np
import torch
from torch import Tensor, nn

from tspipe.config import ENCODER_BATCH_SIZE
from tspipe.data.clip_sampler import ClipSampler, Window
from tspipe.errors import ConfigError, StageError
from tspipe.extract.loader import ClipBatch, VideoInput, make_loader
from tspipe.extract.preprocess import CHUNK_BYTES, Mode, Preprocess, gather_clips
from tspipe.extract.shards import count_non_finite
from tspipe.models.spec import InputSpec
from tspipe.reporting import NullReporter, Reporter
from tspipe.runtime import Amp, autocast, resolve_device

log = logging.getLogger(__name__)

PreprocessOn = Literal["auto", "host", "device"]
PREPROCESS_ON: tuple[PreprocessOn, ...] = ("auto", "host", "device")
TASK = "extract"
# Full-size float32 bytes per preprocessing chunk on a GPU: few kernel launches, bounded
# memory (about 90 frames of 640x360; the host's CHUNK_BYTES suits CPU caches).
CUDA_CHUNK_BYTES = 256 << 20


class FeatureWriter(Protocol):
    """Where complete videos go (:class:`~tspipe.extract.writers.H5FeatureWriter`,
    :class:`~tspipe.extract.gvf.GVFWriter`, :class:`~tspipe.extract.writers.MemoryWriter`)."""

    def done_ids(self) -> set[str]:
        """Videos already written (a rerun skips them)."""
        ...

    def write(self, video_id: str, features: np.ndarray, windows: Sequence[Window]) -> None:
        """``features (num_clips, D)`` of one complete video, row ``i`` = ``windows[i]``."""
        ...


@dataclass(frozen=True)
class ExtractResult:
    videos: int  # asked for
    written: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # already in the writer (resume)
    failed: dict[str, str] = field(default_factory=dict)  # video id -> reason
    clips: int = 0  # windows encoded in this run
    seconds: float = 0.0
    preprocess_on: str = "host"  # where preprocessing ran: host (workers) or device

    @property
    def clips_per_s(self) -> float:
        return self.clips / self.seconds if self.seconds > 0 else 0.0

    def metrics(self) -> dict[str, float]:
        return {"videos": float(self.videos), "written": float(len(self.written)),
                "skipped": float(len(self.skipped)), "failed": float(len(self.failed)),
                "clips": float(self.clips), "seconds": self.seconds,
                "clips_per_s": self.clips_per_s}

    def to_dict(self) -> dict[str, Any]:
        return {"videos": self.videos, "written": list(self.written),
                "skipped": list(self.skipped), "failed": dict(self.failed),
                "clips": self.clips, "seconds": self.seconds, "clips_per_s": self.clips_per_s,
                "preprocess_on": self.preprocess_on}


def resolve_preprocess_on(setting: str, device: torch.device) -> Literal["host", "device"]:
    """``auto``: ``device`` on CUDA, ``host`` elsewhere."""
    if setting not in PREPROCESS_ON:
        raise ConfigError(f"preprocess_on {setting!r}: choose one of {', '.join(PREPROCESS_ON)}")
    if setting == "auto":
        return "device" if device.type == "cuda" else "host"
    return setting  # type: ignore[return-value]


class DeviceFrames:
    """Raw-frame batches -> clips on ``device``: each batch's new frames copied (without
    blocking from pinned memory on CUDA), preprocessed, put after the frames kept from the
    same worker's previous batch, gathered into ``(B, C, T, crop, crop)`` clips; the
    frames the worker's next batch refers to are kept. Call it on every batch, in order."""

    def __init__(self, prep: Preprocess, device: torch.device) -> None:
        self.prep, self.device = prep, device
        self.cuda = device.type == "cuda"
        self.chunk_bytes = CUDA_CHUNK_BYTES if self.cuda else CHUNK_BYTES
        self.kept: dict[int, Tensor] = {}  # worker -> preprocessed frames (K, h, w, C)

    def _to(self, x: Tensor) -> Tensor:
        return x.to(self.device, non_blocking=self.cuda)

    def __call__(self, batch: ClipBatch) -> Tensor | None:
        """The batch's clips (None for a batch without windows)."""
        assert batch.frame_index is not None and batch.keep is not None
        parts = [self.kept.pop(batch.worker)] if batch.worker in self.kept else []
        parts += [self.prep.frames(self._to(f), self.chunk_bytes) for f in batch.frames]
        if not parts:
            return None
        pool = torch.cat(parts) if len(parts) > 1 else parts[0]
        if len(batch.keep):
            self.kept[batch.worker] = pool[self._to(batch.keep)]
        if not batch.video_ids:
            return None
        return gather_clips(pool, self._to(batch.frame_index))


def encode(model: nn.Module, clips: Tensor) -> Tensor:
    """Clip features ``(N, D)``: ``forward_features`` when the model has one (a classifier
    head, if any, is not applied), else ``forward``."""
    forward = getattr(model, "forward_features", None)
    return forward(clips) if callable(forward) else model(clips)


def _not_finite(features: np.ndarray) -> str | None:
    """Why ``features (num_clips, D)`` are not numbers a version may hold, or None."""
    bad = count_non_finite(features)
    if not bad:
        return None
    clips = int(np.count_nonzero(~np.isfinite(features).all(axis=1)))
    return (f"{bad} of {features.size} feature values are not finite (NaN or inf), in "
            f"{clips} of {len(features)} clips: the encoder's weights hold NaN/inf, or its "
            f"outputs exceed {features.dtype}'s range; nothing written for this video")


def extract_features(videos: Sequence[VideoInput], model: nn.Module, spec: InputSpec,
                     sampler: ClipSampler, *, writer: FeatureWriter, mode: Mode = "reference",
                     resize: tuple[int, int] | None = None, batch_size: int = ENCODER_BATCH_SIZE,
                     workers: int = 2, device: str | torch.device = "auto", amp: Amp = "auto",
                     dtype: str | np.dtype = "float32", backend: str | None = "auto",
                     preprocess_on: str = "auto", reporter: Reporter | None = None
                     ) -> ExtractResult:
    """Clip features of every video of ``videos`` not yet in ``writer``.

    Windows come from ``sampler`` (see :mod:`tspipe.extract.loader`), preprocessed for
    ``spec`` in ``mode`` (``resize`` before the crop; default
    :func:`~tspipe.extract.preprocess.default_resize`). Features are handed to the writer
    as ``dtype`` (float32 or float16). ``preprocess_on``: in the loader's workers
    (``host``) or on ``device`` (``auto``: on CUDA); see the module docstring. A video
    that fails to decode, or whose features hold NaN or inf, is reported in ``failed`` and
    written nowhere; the others go on.
    """
    reporter = reporter or NullReporter()
    device = resolve_device(device)
    cuda = device.type == "cuda"
    flow = spec.channels == 2
    if flow and preprocess_on == "device":
        raise ConfigError("optical-flow clips are preprocessed on the host: set "
                          "preprocess_on to host or auto")
    where = "host" if flow else resolve_preprocess_on(preprocess_on, device)
    if sampler.frames != spec.frames:
        log.warning("clips of %d frames for an encoder built for %d", sampler.frames,
                    spec.frames)
    ids = [v.video_id for v in videos]
    if len(set(ids)) != len(ids):
        raise StageError("duplicate video ids in the extraction list")
    done = writer.done_ids()
    todo = [v for v in videos if v.video_id not in done]
    skipped = [v.video_id for v in videos if v.video_id in done]
    prep = Preprocess.for_spec(spec, mode, resize)
    loader = make_loader(todo, sampler, prep, batch_size=batch_size, workers=workers,
                         device=device, backend=backend, raw_frames=where == "device")
    on_device = DeviceFrames(prep, device) if where == "device" else None
    model = model.eval().to(device)
    if cuda:
        model = model.to(memory_format=torch.channels_last_3d)

    reporter.start(TASK, len(videos))
    reporter.advance(TASK, len(skipped))
    if skipped:
        reporter.message(f"extract: {len(skipped)} of {len(videos)} videos already written; "
                         "skipping them")
    feats: dict[str, list[np.ndarray]] = {}  # video id -> clip features so far
    wins: dict[str, list[Window]] = {}
    written: list[str] = []
    failed: dict[str, str] = {}
    clips, started = 0, time.perf_counter()
    with torch.inference_mode():
        for step, batch in enumerate(loader):
            for failure in batch.failures:
                feats.pop(failure.video_id, None)
                wins.pop(failure.video_id, None)
                failed[failure.video_id] = failure.reason
                reporter.message(f"extract: video {failure.video_id!r} failed: "
                                 f"{failure.reason}", logging.WARNING)
                reporter.advance(TASK)
            # preprocessing runs before autocast: float32, as on the host
            x = on_device(batch) if on_device else batch.clips
            if not batch.video_ids or x is None:
                continue
            x = x.to(device, non_blocking=cuda)
            # the host path's (B, C, T, H, W) layout on the CPU (the same numbers out)
            x = x.contiguous(memory_format=torch.channels_last_3d if cuda
                             else torch.contiguous_format)
            with autocast(device, amp):
                out = encode(model, x).float().cpu().numpy()
            clips += len(out)
            for row, video_id in enumerate(batch.video_ids):
                feats.setdefault(video_id, []).append(out[row])
                wins.setdefault(video_id, []).append(batch.windows[row])
                if not batch.is_last[row]:
                    continue
                windows = wins.pop(video_id)
                if [w.index for w in windows] != list(range(len(windows))):
                    raise StageError(f"video {video_id!r}: windows arrived out of order")
                # Cast quietly: an overflow to inf (float16) is caught just below, by name.
                with np.errstate(over="ignore"):
                    features = np.stack(feats.pop(video_id)).astype(dtype)
                if why := _not_finite(features):  # checked as stored: float16 can overflow
                    failed[video_id] = why
                    reporter.message(f"extract: video {video_id!r} failed: {why}",
                                     logging.WARNING)
                else:
                    writer.write(video_id, features, windows)
                    written.append(video_id)
                reporter.advance(TASK)
            elapsed = time.perf_counter() - started
            reporter.metric("extract/clips_per_s", clips / elapsed if elapsed else 0.0, step)
    if feats:  # the loader ended a video without its last window: a bug, not bad input
        raise StageError(f"videos left incomplete: {sorted(feats)}")
    result = ExtractResult(videos=len(videos), written=written, skipped=skipped,
                           failed=failed, clips=clips, seconds=time.perf_counter() - started,
                           preprocess_on=where)
    reporter.metric("extract/clips_per_s", result.clips_per_s)
    reporter.message(f"extract: {len(written)} written, {len(skipped)} skipped, "
                     f"{len(failed)} failed; {clips} clips at {result.clips_per_s:.1f} clips/s "
                     f"(preprocessing on the {where})")
    return result
