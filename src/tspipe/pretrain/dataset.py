"""One training or validation clip, read from its decoded video: frames, labels, GVF.

Frames come through the one decoder path (:func:`tspipe.data.video.open_reader`,
``reader.read``: PyAV seeks to the keyframe before the clip and decodes only what it
needs) at the source size; the clip's source frames are ``ClipSampler.source_indices``
(30 -> 15 fps: every 2nd frame, as extraction). A clip that runs past the video's end
(a segment clamped to a duration the stream does not quite fill) repeats the last frame
the file has, as extraction pads a short video, instead of raising as the reference did.

Transforms are TSP's, on the encoder's :class:`~tspipe.models.spec.InputSpec`:
validation is extraction's ``reference`` :class:`~tspipe.extract.preprocess.Preprocess`
(float, bilinear resize without antialiasing, centre crop, normalize); training is the
same with a random crop and a random horizontal flip (p = 0.5) drawn from the clip's own
seed (:class:`~tspipe.pretrain.samples.SampleKey`), so the numbers do not depend on the
number of DataLoader workers.

Open readers are kept per process (:class:`ReaderCache`, at most ``max_readers``, least
recently used closed first; never pickled to the workers). Opening a file (container,
threaded decoder) and scanning its packet index cost twice what decoding the clip does at
the demo's sizes: a fresh reader per clip, as the reference read, gives 49 clips/s on one
core, kept readers 149 (``benchmarks/pretrain_loader.py``, SynthActions 128x96, 2-core
CPU). A kept reader gives the same frames: every ``read`` seeks (PyAV flushes the
decoder) before it decodes.

The GVF file is opened once per process, on the first clip that needs it (never in the
parent, never per clip), and each video's vector is kept once read. :func:`make_loader`
serves the dataset to the training loop.
"""

from __future__ import annotations

import signal
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import h5py
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from tspipe.data.clip_sampler import ClipSampler
from tspipe.data.video import VideoReader, get_backend, open_reader
from tspipe.errors import ConfigError, VideoError
from tspipe.extract.preprocess import Preprocess
from tspipe.pretrain.samples import BatchPlan, SampleKey, Segments

_EMPTY = torch.empty(0, dtype=torch.float32)
#: Readers a process keeps open by default: every video of the demo set (12) and of the
#: base stage's synth corpus (48 files), so a DataLoader worker opens each file once; a
#: larger set cycles through them (an open reader holds a threaded decoder's frames: 2.5 MB
#: at 128x96, more for larger frames). On the corpus, 64 kept readers instead of 16 read
#: a training clip in 19.4 ms instead of 32.7 (one process, 300 clips, busy 2-core CPU).
MAX_OPEN_READERS = 64


class Sample(NamedTuple):
    """``clip (3, T, crop, crop) float32`` normalized; ``action`` class (-1 background),
    ``region`` (0 Action, 1 No action) int64 scalars; ``gvf (F,)`` float32, or ``(0,)``
    when the model reads none. ``default_collate`` stacks them into a batch of the same
    fields."""

    clip: Tensor
    action: Tensor
    region: Tensor
    gvf: Tensor


class ReaderCache:
    """Open video readers of one process by path, at most ``size``: the least recently used
    is closed when another file is needed. :meth:`read` is ``reader.read`` on a kept
    reader (the same frames as a fresh one: every read seeks, which flushes the decoder);
    a reader whose read raised is closed and dropped, so the next read opens the file anew,
    as a fresh reader per clip would."""

    def __init__(self, size: int = MAX_OPEN_READERS, backend: str | None = "auto") -> None:
        if size < 1:
            raise ValueError(f"ReaderCache size must be >= 1, not {size}")
        self.size, self.backend = size, backend
        self._readers: OrderedDict[Path, VideoReader] = OrderedDict()

    def __len__(self) -> int:
        return len(self._readers)

    def get(self, path: Path, *, video_id: str | None = None) -> VideoReader:
        """The open reader of ``path``, opened (closing the least recently used one if
        ``size`` are open) if it is not kept yet."""
        reader = self._readers.get(path)
        if reader is not None:
            self._readers.move_to_end(path)
            return reader
        while len(self._readers) >= self.size:
            self._readers.popitem(last=False)[1].close()
        reader = get_backend(self.backend).open(path, video_id=video_id)
        self._readers[path] = reader
        return reader

    def read(self, path: Path, indices: Sequence[int], *, video_id: str | None = None
             ) -> dict[int, np.ndarray]:
        """``reader.read(indices, None)`` (source size) on the kept reader of ``path``."""
        reader = self.get(path, video_id=video_id)
        try:
            return reader.read(indices, None)
        except BaseException:
            self.discard(path)
            raise

    def discard(self, path: Path) -> None:
        """Close and drop the reader of ``path``, if kept."""
        reader = self._readers.pop(path, None)
        if reader is not None:
            reader.close()

    def close(self) -> None:
        """Close every kept reader (the cache stays usable: it opens files anew)."""
        while self._readers:
            self._readers.popitem(last=False)[1].close()


def read_clip_frames(path: Path, indices: np.ndarray, *, video_id: str,
                     backend: str | None = "auto", readers: ReaderCache | None = None
                     ) -> np.ndarray:
    """Source frames ``indices (T,)`` of a video, ``(T, H, W, 3) uint8``. An index past
    the frames the file holds gets the last frame before it. ``readers``: read through
    its kept reader of ``path`` (its backend, not ``backend``); None: open the file for
    this clip alone, as the reference did."""
    wanted = sorted(set(int(i) for i in indices))
    if readers is not None:
        got = readers.read(path, wanted, video_id=video_id)
    else:
        with open_reader(path, backend, video_id=video_id) as reader:
            got = reader.read(wanted, None)
    if not got:
        raise VideoError(path, f"no frame at or after source frame {wanted[0]} (the clip "
                         "starts past the video's end)", video_id=video_id)
    have = sorted(got)
    out = []
    for i in indices.tolist():
        if i not in got:  # past the end: the last frame before it (or the first one after)
            before = [k for k in have if k < i]
            i = before[-1] if before else have[0]
        out.append(got[i])
    return np.stack(out)


def train_transform(frames: np.ndarray, prep: Preprocess, rng: np.random.Generator) -> Tensor:
    """``(T, H, W, 3) uint8 -> (C, T, crop, crop) float32``: TSP's training transform
    (float [0, 1], resize, random horizontal flip, normalize, random crop; crop and flip
    commute with the per-pixel normalization, so they are done first, on less data)."""
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2)
    x = x.to(torch.float32).div_(255)
    x = F.interpolate(x, size=tuple(prep.resize), mode="bilinear", align_corners=False,
                      antialias=False)
    h, w, crop = x.shape[-2], x.shape[-1], prep.crop
    # torchvision 0.5's RandomCrop: random.randint(0, h - th), bounds included.
    i, j = int(rng.integers(0, h - crop + 1)), int(rng.integers(0, w - crop + 1))
    x = x[..., i:i + crop, j:j + crop]
    if rng.random() < 0.5:
        x = x.flip(-1)
    x = x.permute(1, 0, 2, 3).contiguous()  # (C, T, crop, crop)
    lo, hi = prep.spec.value_range
    if (lo, hi) != (0.0, 1.0):
        x = lo + (hi - lo) * x
    return prep.spec.normalize(x.unsqueeze(0))[0]


class ClipDataset(Dataset[Sample]):
    """Map-style: ``dataset[SampleKey]`` -> :class:`Sample`. ``splits[key.split]`` are the
    segments the key indexes (training, validation). ``max_readers``: video readers each
    process keeps open (:class:`ReaderCache`; 0: none, a fresh reader per clip as the
    reference); :meth:`close` closes them and the GVF file."""

    def __init__(self, splits: tuple[Segments, ...], sampler: ClipSampler, prep: Preprocess,
                 *, gvf_path: Path | None = None, backend: str | None = "auto",
                 max_readers: int = MAX_OPEN_READERS) -> None:
        self.splits, self.sampler, self.prep = splits, sampler, prep
        self.gvf_path, self.backend = gvf_path, backend
        self._h5: h5py.File | None = None
        self._gvf: dict[str, Tensor] = {}
        self.max_readers = max_readers
        self._readers = ReaderCache(max_readers, backend) if max_readers > 0 else None

    def __getstate__(self) -> dict[str, Any]:
        # Workers get the description, not the parent's open files or caches.
        readers = ReaderCache(self.max_readers, self.backend) if self.max_readers > 0 else None
        return {**self.__dict__, "_h5": None, "_gvf": {}, "_readers": readers}

    def __getitem__(self, key: SampleKey) -> Sample:  # type: ignore[override]
        seg = self.splits[key.split]
        s = key.segment
        video_id, path = seg.video_id(s), seg.paths[int(seg.video[s])]
        fps = float(seg.fps[s])
        frames = int(seg.frames[s])
        indices = self.sampler.source_indices(
            self.sampler.window(key.start_frame), fps if fps > 0 else self._header_fps(
                path, video_id), num_source_frames=frames if frames > 0 else None)
        images = read_clip_frames(path, indices, video_id=video_id, backend=self.backend,
                                  readers=self._readers)
        # One intra-op thread, as in a DataLoader worker: the resize's numbers depend on
        # the thread count, and the clip must not depend on where it was read.
        threads = torch.get_num_threads()
        if threads != 1:
            torch.set_num_threads(1)
        try:
            if key.seed < 0:
                clip = self.prep(images)
            else:
                clip = train_transform(images, self.prep, np.random.default_rng(key.seed))
        finally:
            if threads != 1:
                torch.set_num_threads(threads)
        gvf = self.gvf(video_id) if self.gvf_path is not None else _EMPTY
        return Sample(clip, torch.tensor(int(seg.action[s])), torch.tensor(int(seg.region[s])),
                      gvf)

    def gvf(self, video_id: str) -> Tensor:
        """The video's GVF ``(F,)`` float32 (the file opened on first use, in this process)."""
        vec = self._gvf.get(video_id)
        if vec is None:
            if self._h5 is None:
                self._h5 = h5py.File(self.gvf_path, "r")
            if video_id not in self._h5:
                raise ConfigError(f"{self.gvf_path}: no GVF for video {video_id!r}")
            vec = torch.from_numpy(np.asarray(self._h5[video_id][()], dtype=np.float32))
            self._gvf[video_id] = vec
        return vec

    def _header_fps(self, path: Path, video_id: str) -> float:
        if self._readers is not None:
            fps = self._readers.get(path, video_id=video_id).header.fps
        else:
            with open_reader(path, self.backend, video_id=video_id) as reader:
                fps = reader.header.fps
        if not fps:
            raise VideoError(path, "neither the ground-truth table nor the header gives a "
                             "frame rate", video_id=video_id)
        return float(fps)

    def close(self) -> None:
        """Close the kept video readers and the GVF file (both reopen on the next clip)."""
        if self._readers is not None:
            self._readers.close()
        if self._h5 is not None:
            self._h5.close()
            self._h5 = None


def check_gvf(path: Path, video_ids: set[str], feature_dim: int) -> None:
    """Every video has a ``(feature_dim,)`` vector in the GVF file (read once, up front)."""
    with h5py.File(path, "r") as f:
        missing = sorted(v for v in video_ids if v not in f)
        if missing:
            raise ConfigError(f"{path}: no GVF for {len(missing)} training/validation videos "
                              f"(first: {', '.join(missing[:5])}); run the gvf stage")
        some = next(iter(sorted(video_ids)), None)
        if some is not None and f[some].shape != (feature_dim,):
            raise ConfigError(f"{path}: GVF of {some!r} has shape {f[some].shape}, the "
                              f"encoder's clip features are ({feature_dim},): the GVF must "
                              "come from the same architecture")


def worker_init(worker_id: int) -> None:
    """DataLoader workers: one intra-op thread each (they decode and resize small
    tensors), and signals left to the main process, which finishes its step, saves and
    then stops them (a Ctrl-C reaches the whole process group)."""
    torch.set_num_threads(1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def make_loader(dataset: ClipDataset, batches: BatchPlan, workers: int,
                device: torch.device) -> DataLoader:
    """The training loop's loader: ``batches`` picks what it serves (set before each
    ``iter``); ``workers`` spawned processes (one intra-op thread each, :func:`worker_init`)
    that persist across epochs and validation, so each keeps its open video readers and GVF
    file for the whole run; 0: read in this process."""
    return DataLoader(dataset, batch_sampler=batches, num_workers=workers,
                      pin_memory=device.type == "cuda",
                      worker_init_fn=worker_init if workers else None,
                      multiprocessing_context="spawn" if workers else None,
                      persistent_workers=workers > 0, prefetch_factor=2 if workers else None)
