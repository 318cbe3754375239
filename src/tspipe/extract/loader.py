"""Decode each video once into its sliding clip windows; pack windows of many videos into
full batches, with DataLoader workers splitting the videos.

Per video (:func:`video_clips`):

- frames come from :mod:`tspipe.data.video`, decoded once, front to back:
  ``reference`` decodes at the source rate and size and keeps clip frame ``k``'s source
  frame ``ClipSampler.source_indices`` names (30 -> 15 fps: frames 0, 2, 4, ..., exactly the
  reference's ``vframes[::2]``; only kept frames are converted to RGB); ``fast`` decodes
  at the clip rate (the decoder's resampling rule) and size;
- each kept frame is preprocessed once (:class:`~tspipe.extract.preprocess.Preprocess`),
  also when ``stride < frames`` makes windows overlap (THUMOS's dense stride 1);
- windows are those of ``ClipSampler.windows(n)`` for the video's ``n`` clip-rate frames:
  starts ``0, stride, 2 stride, ...``; **the tail shorter than a clip is dropped** (as the
  reference does, so feature ``i`` always covers ``[i stride, i stride + frames)`` clip
  frames); a video shorter than one clip gets **one window padded** with copies of its last
  frame (the reference crashes there). A window is emitted as soon as its last frame is
  decoded (``n`` is only known at the end), and the emitted ones are checked against
  ``ClipSampler.windows(n)`` once it is.

Across videos (:class:`WindowDataset`): an ``IterableDataset`` whose every worker decodes
whole videos (``videos[worker_id::num_workers]``, from ``get_worker_info``) and yields
:class:`ClipBatch` records of exactly ``batch_size`` windows, filled from as many videos
as it takes (only each worker's last batch is short). A video that fails to decode
(:class:`~tspipe.errors.VideoError`) is reported in the next batch's ``failures`` and
its windows already sent are to be discarded; the others go on.

What a batch carries, two ways:

- **preprocessed clips** (``raw_frames=False``, the host path): ``clips (B, C, T, crop,
  crop) float32``, each kept frame preprocessed once in the worker;
- **raw frames** (``raw_frames=True``, preprocessing on the model's device): the batch's
  *new* frames, ``uint8 (N, H, W, 3)`` as decoded (source size in ``reference`` mode),
  each sent once, plus ``frame_index (B, T)``: window ``b``'s clip frame ``t`` is frame
  ``frame_index[b, t]`` of the batch's **pool**. The pool is the frames the consumer kept
  from this worker's previous batch (``keep`` of that batch, in that order), then every
  tensor of ``frames`` preprocessed, in order; the consumer keeps ``pool[keep]`` for the
  worker's next batch (``worker`` says whose). Overlapping windows (``stride < frames``)
  thus share frames within a batch and across consecutive batches: every kept frame is
  decoded, sent and preprocessed once, as on the host path (a padded window repeats an
  index). **Different source sizes**: ``frames`` holds one tensor per frame size in the
  batch, so batches stay full whatever the videos' sizes (no short batch at a size
  change). Costs: the worker sends ``H x W x 3`` bytes per kept frame instead of ``crop^2
  x 12`` (640x360: 691 KB against 150 KB at 112), through shared and then pinned memory.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, IterableDataset, default_collate, get_worker_info

from tspipe.data.clip_sampler import ClipSampler, Window, as_fraction
from tspipe.data.flow import iter_flow
from tspipe.data.video import decode, open_reader
from tspipe.data.video.decode import timed_frames
from tspipe.errors import StageError, VideoError
from tspipe.extract.preprocess import Preprocess

log = logging.getLogger(__name__)


class VideoInput(NamedTuple):
    video_id: str
    path: Path


class VideoFailure(NamedTuple):
    video_id: str
    path: str
    reason: str


class VideoClip(NamedTuple):
    """One window of one video: ``clip`` is ``(C, T, H, W) float32``, normalized."""

    window: Window
    clip: Tensor


class WindowFrames(NamedTuple):
    """One window of one video, not preprocessed: ``frame_ids`` its clip frames (a padded
    window repeats the last), ``new`` the ``(clip frame, (H, W, 3) uint8)`` pairs that no
    earlier window of the video had."""

    window: Window
    frame_ids: list[int]
    new: list[tuple[int, np.ndarray]]


class ClipBatch(NamedTuple):
    """Windows of one or more videos, in each video's clip order.

    ``clips (B, C, T, H, W) float32`` (None with raw frames); ``video_ids``, ``windows``
    one per row; ``clip_indices (B,) int64`` (``windows[i].index``); ``is_last (B,)
    bool``: the row is its video's last window (the video is complete once that row is
    seen); ``failures``: videos that failed since the previous batch (discard what was
    received of them). With raw frames: ``frames`` (``uint8 (N, H, W, 3)``, one per frame
    size), ``frame_index (B, T) int64``, ``keep (K,) int64`` and ``worker``, as the module
    docstring says.
    """

    clips: Tensor | None
    video_ids: tuple[str, ...]
    clip_indices: Tensor
    is_last: Tensor
    windows: tuple[Window, ...]
    failures: tuple[VideoFailure, ...]
    frames: tuple[Tensor, ...] = ()
    frame_index: Tensor | None = None
    keep: Tensor | None = None
    worker: int = 0


def clip_rate_frames(video: VideoInput, sampler: ClipSampler, prep: Preprocess, *,
                     backend: str | None = "auto") -> Iterator[np.ndarray]:
    """The video's frames at the clip rate, ``(H, W, 3) uint8``: clip frame 0, 1, ...

    For an optical-flow encoder (``prep.is_flow``) ``video.path`` is the video's flow file
    (:mod:`tspipe.data.flow`, made at the clip rate) and its frames are ``(H, W, 2)``
    flow in pixels, float32."""
    if prep.is_flow:
        yield from iter_flow(video.path, fps=float(sampler.fps), video_id=video.video_id)
        return
    if prep.mode == "fast":
        for item in decode(video.path, fps=float(sampler.fps), size=prep.decode_size,
                           backend=backend, video_id=video.video_id):
            yield item.frame
        return
    with open_reader(video.path, backend, video_id=video.video_id) as reader:
        source_fps = reader.header.fps
        if not source_fps:
            raise VideoError(video.path, "reference preprocessing picks frames by index from "
                             "the stream's frame rate, and the header gives none (use "
                             "mode 'fast', or standardize the video first)",
                             video_id=video.video_id)
        ratio = as_fraction(source_fps) / sampler.fps
        if ratio.denominator != 1:
            # The reference restarts floor(j * step) at each clip's first frame; the one
            # grid of ClipSampler does not, so they agree only for whole steps (30 -> 15).
            log.warning("%s: %.3f fps is not a whole multiple of the clip rate %s; "
                        "reference mode then picks frames on ClipSampler's grid, not "
                        "exactly as TSP's per-clip resampling would", video.video_id,
                        source_fps, sampler.fps)
        wanted = _source_indices(sampler, source_fps)
        source = next(wanted)
        timed, _timeline = timed_frames(reader, None)
        for i, (_t, frame) in enumerate(timed):
            if source != i:
                continue
            rgb = reader.to_rgb(frame.image, None)
            while source == i:  # a source frame may serve several clip frames (upsampling)
                yield rgb
                source = next(wanted)


def _source_indices(sampler: ClipSampler, source_fps: float) -> Iterator[int]:
    """The source frame of clip frame ``k = 0, 1, ...`` (endless), one clip's worth of
    ``ClipSampler.source_indices`` at a time."""
    start = 0
    while True:
        yield from sampler.source_indices(sampler.window(start), source_fps).tolist()
        start += sampler.frames


def video_windows(video: VideoInput, sampler: ClipSampler, prep: Preprocess, *,
                  backend: str | None = "auto") -> Iterator[WindowFrames]:
    """Every window of the video in order, with the raw frames it is the first to need,
    from one decode."""
    frames, stride = sampler.frames, sampler.stride
    raw: list[tuple[int, np.ndarray]] = []  # decoded, in no window yielded yet
    emitted: list[Window] = []
    n = 0
    for k, image in enumerate(clip_rate_frames(video, sampler, prep, backend=backend)):
        n = k + 1
        if k % stride < frames:  # frames between windows (stride > frames) are not needed
            raw.append((k, image))
        start = len(emitted) * stride
        if k == start + frames - 1:
            window = sampler.window(start, index=len(emitted))
            new, raw = raw, []
            yield WindowFrames(window, list(range(start, k + 1)), new)
            emitted.append(window)
    windows = sampler.windows(n)
    if not windows:
        raise VideoError(video.path, "no frame at the clip rate", video_id=video.video_id)
    if windows[:len(emitted)] != emitted:
        raise StageError(f"video {video.video_id!r}: streamed windows disagree with "
                         f"ClipSampler.windows({n})")
    for window in windows[len(emitted):]:  # only a padded window of a short video
        idx = list(range(window.start_frame, window.end_frame))
        new, raw = raw, []
        yield WindowFrames(window, idx + idx[-1:] * window.padded_frames, new)


def video_clips(video: VideoInput, sampler: ClipSampler, prep: Preprocess, *,
                backend: str | None = "auto") -> Iterator[VideoClip]:
    """Every window of the video in order, each ``(C, T, crop, crop)``, from one decode;
    every frame preprocessed once."""
    ready: dict[int, Tensor] = {}  # preprocessed clip frames a window still needs
    for item in video_windows(video, sampler, prep, backend=backend):
        if item.new:
            clip = prep([image for _, image in item.new])  # (C, N, h, w)
            ready.update(zip((k for k, _ in item.new), clip.unbind(1), strict=True))
        yield VideoClip(item.window, torch.stack([ready[f] for f in item.frame_ids], 1))
        needed_from = (item.window.index + 1) * sampler.stride
        for f in [f for f in ready if f < needed_from]:
            del ready[f]


class _ClipRows:
    """Rows of a host-path batch: preprocessed clips."""

    def __init__(self) -> None:
        self.rows: list[tuple[str, VideoClip, bool]] = []

    def __len__(self) -> int:
        return len(self.rows)

    def add(self, video_id: str, item: VideoClip, last: bool) -> None:
        self.rows.append((video_id, item, last))

    def drop(self, video_id: str) -> None:
        self.rows = [row for row in self.rows if row[0] != video_id]

    def emit(self, failures: list[VideoFailure]) -> ClipBatch:
        rows, self.rows = self.rows, []
        # default_collate stacks straight into shared memory inside a DataLoader worker:
        # the batch then crosses to the main process without another copy.
        clips = (default_collate([item.clip for _, item, _ in rows]) if rows
                 else torch.empty(0))
        return _record(clips, [(vid, item.window, last) for vid, item, last in rows],
                       failures)


class _FrameRows:
    """Rows of a raw-frame batch: windows as frame numbers, each frame sent once."""

    def __init__(self, stride: int, worker: int) -> None:
        self.stride, self.worker = stride, worker
        self.rows: list[tuple[str, Window, list[int], bool]] = []
        self.unsent: dict[tuple[str, int], np.ndarray] = {}  # (video, clip frame) -> RGB
        self.carried: list[tuple[str, int]] = []  # pool[:K] of the next batch

    def __len__(self) -> int:
        return len(self.rows)

    def add(self, video_id: str, item: WindowFrames, last: bool) -> None:
        self.unsent.update(((video_id, k), image) for k, image in item.new)
        self.rows.append((video_id, item.window, item.frame_ids, last))

    def drop(self, video_id: str) -> None:
        self.rows = [row for row in self.rows if row[0] != video_id]
        self.unsent = {key: v for key, v in self.unsent.items() if key[0] != video_id}

    def emit(self, failures: list[VideoFailure]) -> ClipBatch:
        rows, self.rows = self.rows, []
        groups: dict[tuple[int, ...], list[tuple[str, int]]] = {}  # frame shape -> frames
        for key in dict.fromkeys((vid, k) for vid, _, ids, _ in rows for k in ids):
            if key in self.unsent:  # else carried
                groups.setdefault(self.unsent[key].shape, []).append(key)
        # pool order: the carried frames, then group by group
        order = [*self.carried, *(key for keys in groups.values() for key in keys)]
        pos = {key: i for i, key in enumerate(order)}
        # default_collate stacks into shared memory inside a worker, as for clips (it
        # copies: the decoder's read-only arrays are never written through these views)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "The given NumPy array is not writable")
            frames = tuple(default_collate([torch.from_numpy(self.unsent.pop(key))
                                            for key in keys]) for keys in groups.values())
        index = (torch.tensor([[pos[(vid, k)] for k in ids] for vid, _, ids, _ in rows],
                              dtype=torch.int64) if rows else torch.zeros(0, 0, dtype=torch.int64))
        # The next batch may need frames of the last row's video, if it goes on there.
        self.carried = []
        if rows and not rows[-1][3]:
            vid, window = rows[-1][0], rows[-1][1]
            needed_from = (window.index + 1) * self.stride
            self.carried = [key for key in pos if key[0] == vid and key[1] >= needed_from]
        keep = torch.tensor([pos[key] for key in self.carried], dtype=torch.int64)
        return _record(None, [(vid, w, last) for vid, w, _, last in rows], failures)._replace(
            frames=frames, frame_index=index, keep=keep,
            worker=self.worker)


def pack_batches(videos: Sequence[VideoInput], sampler: ClipSampler, prep: Preprocess,
                 batch_size: int, *, backend: str | None = "auto", raw_frames: bool = False,
                 worker: int = 0) -> Iterator[ClipBatch]:
    """Windows of ``videos`` (in order) packed into batches of ``batch_size``: clips, or
    raw frames for the consumer to preprocess (``worker`` names the batches' source)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    rows: _ClipRows | _FrameRows = (_FrameRows(sampler.stride, worker) if raw_frames
                                    else _ClipRows())
    items = video_windows if raw_frames else video_clips
    failures: list[VideoFailure] = []
    for video in videos:
        held: VideoClip | WindowFrames | None = None  # held back: is it the last one?
        try:
            for item in items(video, sampler, prep, backend=backend):
                if held is not None:
                    rows.add(video.video_id, held, False)  # type: ignore[arg-type]
                    if len(rows) == batch_size:
                        yield rows.emit(failures)
                        failures = []
                held = item
        except VideoError as exc:
            log.warning("skipping video %r: %s", video.video_id, exc)
            rows.drop(video.video_id)
            failures.append(VideoFailure(video.video_id, str(video.path), str(exc)))
            continue
        assert held is not None  # video_windows raises rather than yield nothing
        rows.add(video.video_id, held, True)  # type: ignore[arg-type]
        if len(rows) == batch_size:
            yield rows.emit(failures)
            failures = []
    if len(rows) or failures:
        yield rows.emit(failures)


def _record(clips: Tensor | None, rows: list[tuple[str, Window, bool]],
            failures: list[VideoFailure]) -> ClipBatch:
    return ClipBatch(
        clips=clips,
        video_ids=tuple(vid for vid, _, _ in rows),
        clip_indices=torch.tensor([w.index for _, w, _ in rows], dtype=torch.int64),
        is_last=torch.tensor([last for _, _, last in rows], dtype=torch.bool),
        windows=tuple(w for _, w, _ in rows),
        failures=tuple(failures),
    )


class WindowDataset(IterableDataset[ClipBatch]):
    """Yields :class:`ClipBatch` records; each DataLoader worker takes every
    ``num_workers``-th video and decodes it whole. Use with ``batch_size=None``."""

    def __init__(self, videos: Sequence[VideoInput], sampler: ClipSampler, prep: Preprocess,
                 batch_size: int, *, backend: str | None = "auto",
                 raw_frames: bool = False) -> None:
        self.videos = list(videos)
        self.sampler, self.prep = sampler, prep
        self.batch_size, self.backend, self.raw_frames = batch_size, backend, raw_frames

    def shard(self) -> list[VideoInput]:
        """The videos of the calling worker (all of them in the main process)."""
        info = get_worker_info()
        if info is None:
            return self.videos
        return self.videos[info.id::info.num_workers]

    def __iter__(self) -> Iterator[ClipBatch]:
        info = get_worker_info()
        return pack_batches(self.shard(), self.sampler, self.prep, self.batch_size,
                            backend=self.backend, raw_frames=self.raw_frames,
                            worker=info.id if info is not None else 0)


def _worker_init(worker_id: int) -> None:
    # Workers decode (FFmpeg has its own threads) and resize small tensors: one intra-op
    # thread each keeps them from fighting the model's threads for the cores.
    torch.set_num_threads(1)


def make_loader(videos: Sequence[VideoInput], sampler: ClipSampler, prep: Preprocess, *,
                batch_size: int, workers: int, device: torch.device,
                backend: str | None = "auto", raw_frames: bool = False
                ) -> DataLoader[ClipBatch]:
    """A DataLoader of :class:`ClipBatch` (clips, or ``raw_frames``); pinned memory on
    CUDA; never more workers than videos."""
    workers = max(0, min(workers, len(videos)))
    dataset = WindowDataset(videos, sampler, prep, batch_size, backend=backend,
                            raw_frames=raw_frames)
    # Workers are started fresh ("spawn"), never forked: the parent may be a Prefect flow
    # or hold MLflow/Ray threads, and a forked copy of a threaded process can die or hang
    # (seen: workers exiting with code 1 after the Prefect tests in the same process).
    return DataLoader(dataset, batch_size=None, num_workers=workers,
                      pin_memory=device.type == "cuda",
                      worker_init_fn=_worker_init if workers else None,
                      prefetch_factor=2 if workers else None,
                      multiprocessing_context="spawn" if workers else None,
                      persistent_workers=False)
