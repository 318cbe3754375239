"""Which clips an epoch trains and validates on, and which of them each process reads.

- :func:`select_segments`: the ground-truth rows of some subsets that hold a clip
  (``trainable_segments``, TSP's rule) and whose video was decoded; TAC keeps the
  foreground rows only. What was left out is counted. :func:`select_splits`: a run's
  training and validation segments, read from the ground-truth table.
- :func:`train_plan`: ``clips_per_segment`` clips per segment, each starting at a frame
  drawn uniformly inside its segment (``ClipSampler.start_range``; ``pretrain.jitter`` < 1
  narrows the draw to the range's centre), in a shuffled order.
  All of it comes from ``SeedSequence([seed, epoch])``: every epoch draws anew, every
  process computes the same plan and reads its own share (the reference jittered with one
  RNG state copied into every worker, rank and epoch). Each clip also gets its own
  augmentation seed, so a clip's crop and flip do not depend on which worker reads it.
- :func:`valid_plan`: the same number of clips per segment at the reference's fixed
  positions (``ClipSampler.valid_clip_starts``).
- :class:`BatchPlan`: a batch sampler yielding this process's micro-batches of an epoch's
  plan from a given optimizer step, so an interrupted epoch resumes where it stopped.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tspipe.config import PretrainConfig
from tspipe.data.clips import GROUNDTRUTH_SCHEMA, ClipSampler, read_table, trainable_segments
from tspipe.errors import ConfigError

log = logging.getLogger(__name__)

TRAIN, VALID = 0, 1  # SampleKey.split
_JITTER, _ORDER, _AUGMENT = 0, 1, 2  # child streams of an epoch's SeedSequence
_SHUFFLED_REGION = 7  # stream of the control's label permutation


class SampleKey(NamedTuple):
    """One clip to read: ``segment`` indexes the split's :class:`Segments`, the clip starts
    at clip-rate frame ``start_frame``; ``seed`` seeds its random crop and flip (-1: no
    augmentation, the centre crop of validation)."""

    split: int
    segment: int
    start_frame: int
    seed: int


@dataclass(frozen=True)
class Segments:
    """Trainable segments, one entry per row: ``video (S,)`` indexes ``paths`` and
    ``video_ids``; seconds ``t_start``/``t_end``; ``action (S,)`` (-1 background) and
    ``region (S,)`` labels; ``fps``/``frames`` of the decoded file (NaN / -1 if unknown);
    ``first``/``last``: the first and last start frame of a clip inside the segment."""

    video_ids: tuple[str, ...]
    paths: tuple[Path, ...]
    video: np.ndarray
    t_start: np.ndarray
    t_end: np.ndarray
    action: np.ndarray
    region: np.ndarray
    fps: np.ndarray
    frames: np.ndarray
    first: np.ndarray
    last: np.ndarray

    def __len__(self) -> int:
        return len(self.video)

    def video_id(self, segment: int) -> str:
        return self.video_ids[int(self.video[segment])]


class Selection(NamedTuple):
    segments: Segments
    counts: dict[str, int]


def select_segments(table: pa.Table, sampler: ClipSampler, videos: Mapping[str, Path], *,
                    subsets: Sequence[str], mode: str) -> Selection:
    """Rows of ``subsets`` to sample clips from. ``counts``: ``rows`` (in the subsets),
    ``no_video`` (video not decoded), ``background_unused`` (TAC), ``dropped_action`` /
    ``dropped_background`` (shorter than a clip), ``segments`` (kept), and ``videos``."""
    rows = table.filter(pc.is_in(table["subset"], pa.array(list(subsets), pa.string())))
    counts = {"rows": rows.num_rows}
    decoded = pc.is_in(rows["video_id"], pa.array(sorted(videos), pa.string()))
    counts["no_video"] = rows.num_rows - int(pc.sum(decoded).as_py() or 0)
    rows = rows.filter(decoded)
    if mode == "tac":
        foreground = pc.greater_equal(rows["action_index"], 0)
        counts["background_unused"] = rows.num_rows - int(pc.sum(foreground).as_py() or 0)
        rows = rows.filter(foreground)
    else:
        counts["background_unused"] = 0
    kept = trainable_segments(rows, sampler)
    rows = kept.table
    counts["dropped_action"] = kept.dropped_action
    counts["dropped_background"] = kept.dropped_background
    counts["segments"] = rows.num_rows
    if counts["no_video"]:
        log.warning("%d segment rows of subsets %s have no decoded video and are left out",
                    counts["no_video"], list(subsets))

    ids = rows["video_id"].to_pylist()
    video_ids = tuple(sorted(set(ids)))
    counts["videos"] = len(video_ids)
    index = {v: i for i, v in enumerate(video_ids)}
    t_start = rows["t_start"].to_numpy().astype(np.float64)
    t_end = rows["t_end"].to_numpy().astype(np.float64)
    bounds = [sampler.start_range(a, b) for a, b in zip(t_start.tolist(), t_end.tolist(),
                                                        strict=True)]
    fps = rows["fps"].to_numpy(zero_copy_only=False).astype(np.float64)  # None -> NaN
    frames = rows["video_frames"].fill_null(-1).to_numpy().astype(np.int64)
    segments = Segments(
        video_ids=video_ids, paths=tuple(Path(videos[v]) for v in video_ids),
        video=np.asarray([index[v] for v in ids], dtype=np.int64),
        t_start=t_start, t_end=t_end,
        action=rows["action_index"].to_numpy().astype(np.int64),
        region=rows["region_index"].to_numpy().astype(np.int64),
        fps=fps, frames=frames,
        first=np.asarray([b[0] for b in bounds], dtype=np.int64).reshape(-1),
        last=np.asarray([b[1] for b in bounds], dtype=np.int64).reshape(-1))
    return Selection(segments, counts)


def num_classes_of(table: pa.Table) -> int:
    """Action classes a table names: its largest ``action_index`` + 1."""
    top = pc.max(table["action_index"]).as_py()
    if top is None or top < 0:
        raise ConfigError("the ground-truth table has no action segment: nothing to learn")
    return int(top) + 1


class Splits(NamedTuple):
    """A run's data: the size of the taxonomy, the segments of the training and of the
    validation subsets, the fixed validation plan, and the counts the run reports
    (``train_*`` / ``valid_*``: :func:`select_segments`'s, and the clips per epoch)."""

    num_classes: int
    train: Segments
    valid: Segments
    valid_keys: list[SampleKey]
    counts: dict[str, int]


def select_splits(cfg: PretrainConfig, sampler: ClipSampler, groundtruth: Path,
                  videos: Mapping[str, Path], num_classes: int | None = None) -> Splits:
    """The ground-truth table's segments of ``cfg.train_subsets`` and ``cfg.valid_subsets``;
    ``num_classes`` defaults to the table's (:func:`num_classes_of`)."""
    table = read_table(groundtruth, schema=GROUNDTRUTH_SCHEMA)
    n_classes = num_classes or num_classes_of(table)
    train = select_segments(table, sampler, videos, subsets=cfg.train_subsets, mode=cfg.mode)
    valid = select_segments(table, sampler, videos, subsets=cfg.valid_subsets, mode=cfg.mode)
    if not len(train.segments):
        raise ConfigError(f"{groundtruth}: no trainable segment in subsets {cfg.train_subsets} "
                          f"(counts: {train.counts})")
    segments = train.segments
    if cfg.region_labels == "shuffled":  # the broken-TSP control (PretrainConfig)
        order = np.random.default_rng([cfg.seed, _SHUFFLED_REGION]).permutation(len(segments))
        segments = replace(segments, region=segments.region[order])
    counts = {**{f"train_{k}": v for k, v in train.counts.items()},
              **{f"valid_{k}": v for k, v in valid.counts.items()}}
    counts.update(train_clips=len(train.segments) * cfg.clips_per_segment,
                  valid_clips=len(valid.segments) * cfg.clips_per_segment)
    return Splits(n_classes, segments, valid.segments,
                  valid_plan(valid.segments, sampler, cfg.clips_per_segment), counts)


def train_plan(segments: Segments, clips_per_segment: int, seed: int, epoch: int,
               jitter: float = 1.0) -> list[SampleKey]:
    """Epoch ``epoch``'s training clips, shuffled: ``clips_per_segment`` per segment, each
    starting uniformly in ``[first, last]`` of its segment (``jitter`` 1: TSP's rule, the
    same draws as before the option existed), or in the centred ``jitter`` share of that
    range (0: the middle start, the same window every epoch)."""
    if not 0.0 <= jitter <= 1.0:
        raise ValueError(f"jitter must be in [0, 1], got {jitter}")
    draw, order, augment = np.random.SeedSequence([seed, epoch]).spawn(3)
    seg = np.repeat(np.arange(len(segments), dtype=np.int64), clips_per_segment)
    first, last = segments.first[seg], segments.last[seg]
    trim = np.floor((1.0 - jitter) * (last - first) / 2).astype(np.int64)
    first, last = first + trim, last - trim
    start = first + np.random.default_rng(draw).integers(0, last - first + 1)
    perm = np.random.default_rng(order).permutation(len(seg))
    # 63-bit seeds, one per position of the shuffled list.
    seeds = augment.generate_state(len(seg), dtype=np.uint64) >> np.uint64(1)
    return [SampleKey(TRAIN, s, f, a) for s, f, a in
            zip(seg[perm].tolist(), start[perm].tolist(), seeds.tolist(), strict=True)]


def valid_plan(segments: Segments, sampler: ClipSampler, clips_per_segment: int
               ) -> list[SampleKey]:
    """``clips_per_segment`` clips per segment at ``valid_clip_starts`` (no augmentation),
    in segment order."""
    keys = []
    for s in range(len(segments)):
        windows = sampler.valid_clip_starts(float(segments.t_start[s]),
                                            float(segments.t_end[s]), clips_per_segment)
        keys += [SampleKey(VALID, s, w.start_frame, -1) for w in windows]
    return keys


def steps_per_epoch(num_clips: int, global_batch: int) -> int:
    """Optimizer steps of an epoch: the plan is padded (wrapping around) to whole batches."""
    return max(1, math.ceil(num_clips / global_batch))


class BatchPlan:
    """A batch sampler of this process's micro-batches; set what to serve with
    :meth:`set_train` or :meth:`set_valid` before each ``iter(loader)`` (it works with
    persistent DataLoader workers: only the main process iterates it).

    Training: the plan is padded to ``steps * global_batch`` clips by wrapping around (as
    ``DistributedSampler`` pads); step ``t`` owns clips ``[t B, (t+1) B)``, cut into
    ``world_size * accum`` micro-batches of ``B / (world_size * accum)``; this rank reads
    micro-batch ``a * world_size + rank`` for ``a = 0 .. accum - 1``, in that order.
    Validation: this rank's clips ``keys[rank::world_size]``, in batches of ``batch``.
    """

    def __init__(self, global_batch: int, *, world_size: int = 1, rank: int = 0,
                 accum: int = 1) -> None:
        if global_batch % (world_size * accum):
            raise ConfigError(
                f"pretrain.batch_size {global_batch} must be a multiple of world_size "
                f"({world_size}) x grad_accum_steps ({accum}): each micro-batch holds "
                "batch_size / (world_size x grad_accum_steps) clips")
        self.global_batch, self.world_size, self.rank, self.accum = (
            global_batch, world_size, rank, accum)
        self.micro = global_batch // (world_size * accum)
        self._batches: list[list[SampleKey]] = []
        self._padded: list[SampleKey] = []

    def padded(self, keys: Sequence[SampleKey]) -> list[SampleKey]:
        """``keys`` wrapped around to whole steps."""
        total = steps_per_epoch(len(keys), self.global_batch) * self.global_batch
        return [keys[i % len(keys)] for i in range(total)] if keys else []

    def step_keys(self, step: int) -> list[SampleKey]:
        """The global batch of optimizer step ``step`` of the plan set by :meth:`set_train`
        (all ranks' clips)."""
        return self._padded[step * self.global_batch:(step + 1) * self.global_batch]

    def set_train(self, keys: Sequence[SampleKey], start_step: int = 0) -> None:
        self._padded = padded = self.padded(keys)
        batches = []
        for step in range(start_step, len(padded) // self.global_batch):
            chunk = padded[step * self.global_batch:(step + 1) * self.global_batch]
            for a in range(self.accum):
                at = (a * self.world_size + self.rank) * self.micro
                batches.append(chunk[at:at + self.micro])
        self._batches = batches

    def set_valid(self, keys: Sequence[SampleKey], batch: int) -> None:
        mine = list(keys[self.rank::self.world_size])
        self._batches = [mine[i:i + batch] for i in range(0, len(mine), batch)]

    def __iter__(self) -> Iterator[list[SampleKey]]:
        return iter(list(self._batches))

    def __len__(self) -> int:
        return len(self._batches)
