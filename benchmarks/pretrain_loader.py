"""Training loader benchmark: a fresh video reader per clip against kept readers, one run.

    python benchmarks/pretrain_loader.py [--params params.yaml] [--run-dir .]
                                         [--stage pretrain@tsp] [--clips N] [--repeat 2]
                                         [--workers N] [--model-steps 2]

Reads the decode stage's outputs in the run directory (ground-truth table, decoded
videos; the gvf stage's file too when the training uses GVF): run the pipeline up to
``decode`` (and ``gvf``) first. The clips are those of the stage's first epoch: its
training plan (``--clips`` limits it) and then its validation plan, as ``train`` reads
them. Two ways to read them, measured in the same run:

- ``fresh``: ``ClipDataset(max_readers=0)``, the reference's way: every clip opens its
  file, scans its packet index, seeks and decodes.
- ``kept``: ``ClipDataset`` as ``train`` builds it: each process keeps its open readers
  (``ReaderCache``), so a file is opened and scanned once per DataLoader worker.

Per way: ``getitem``: ``dataset[key]`` in this process with one intra-op thread (what one
DataLoader worker does), clips/s best of ``--repeat`` passes; ``loader``: the DataLoader
``train`` builds (``make_loader``, ``pretrain.workers`` persistent workers), clips/s of
the first pass (workers starting, files opening) and of the best later pass. Both ways
must give the same batches (checked by hash). ``--model-steps``: forward + backward +
SGD step of the stage's encoder and heads on one batch with this process's threads (the
training loop's other half: the loader only has to keep ahead of it).
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from torch.utils.data import default_collate

from tspipe.config import load_params
from tspipe.data.clips import GROUNDTRUTH_SCHEMA, ClipSampler, read_table
from tspipe.paths import RunPaths
from tspipe.pretrain.dataset import ClipDataset, make_loader
from tspipe.pretrain.loss import tsp_loss
from tspipe.pretrain.model import build_model
from tspipe.pretrain.optim import build_optimizer
from tspipe.pretrain.samples import (
    BatchPlan,
    SampleKey,
    num_classes_of,
    select_segments,
    train_plan,
    valid_plan,
)
from tspipe.stages import bind
from tspipe.stages.decoded import decoded_videos

WAYS = {"fresh": 0, "kept": None}  # ClipDataset's max_readers (None: its default)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--run-dir", type=Path, default=Path())
    parser.add_argument("--stage", default=None, help="base or pretrain@VARIANT (default: "
                        "the first variant of compare.variants)")
    parser.add_argument("--clips", type=int, default=0, help="training clips read (0: the "
                        "whole first epoch)")
    parser.add_argument("--repeat", type=int, default=2, help="passes per measurement")
    parser.add_argument("--workers", type=int, default=None,
                        help="DataLoader workers (default: pretrain.workers)")
    parser.add_argument("--model-steps", type=int, default=2, help="timed model steps (0: "
                        "none)")
    args = parser.parse_args(argv)

    params = load_params(args.params)
    stage = args.stage or f"pretrain@{next(iter(params.compare.variants))}"
    _, params, paths = bind(stage, params, RunPaths.at(args.run_dir))
    cfg, clip = params.pretrain, params.clip
    videos = {v.video_id: v.path for v in decoded_videos(paths)}
    sampler = ClipSampler.from_config(clip)
    table = read_table(paths.groundtruth_table, schema=GROUNDTRUTH_SCHEMA)
    train_sel, valid_sel = (select_segments(table, sampler, videos, subsets=s, mode=cfg.mode)
                            for s in (cfg.train_subsets, cfg.valid_subsets))
    init = paths.resolve(cfg.init_checkpoint) if cfg.init_checkpoint else None
    built = build_model(cfg, clip, num_classes_of(table),
                        init_checkpoint=init if init is not None and init.exists() else None)
    gvf = paths.gvf_file if cfg.mode == "tsp" and cfg.use_gvf else None
    if gvf is not None and not gvf.exists():
        print(f"no GVF file at {gvf}: clips are read without GVF")
        gvf = None
    splits = (train_sel.segments, valid_sel.segments)
    keys = train_plan(train_sel.segments, cfg.clips_per_segment, cfg.seed, 0)
    keys = keys[:args.clips] if args.clips else keys
    valid = valid_plan(valid_sel.segments, sampler, cfg.clips_per_segment)
    workers = cfg.workers if args.workers is None else args.workers
    print(f"{stage}: {len(videos)} videos, {len(keys)} training + {len(valid)} validation "
          f"clips of {clip.frames} frames, batch {cfg.batch_size}, {workers} workers, "
          f"encoder {cfg.encoder} (input {built.prep.crop}x{built.prep.crop})")

    def dataset(way: str) -> ClipDataset:
        size = WAYS[way]
        extra = {} if size is None else {"max_readers": size}
        return ClipDataset(splits, sampler, built.prep, gvf_path=gvf, **extra)

    rates: dict[str, dict[str, float]] = {}
    hashes: dict[str, list[str]] = {}
    for way in WAYS:
        got = getitem_rate(dataset(way), keys + valid, args.repeat)
        first, steady, hashes[way] = loader_rates(dataset(way), keys, valid, cfg.batch_size,
                                                  workers, args.repeat)
        rates[way] = {"getitem": got, "first": first, "steady": steady}
        print(f"{way:<6} getitem {got:7.1f} clips/s (1 thread)   loader: first pass "
              f"{first:6.1f} clips/s, then {steady:6.1f} clips/s", flush=True)
    same = hashes["fresh"] == hashes["kept"]
    print(f"same batches: {'yes' if same else 'NO'}")
    for what in ("getitem", "first", "steady"):
        print(f"kept / fresh {what:<8} = {rates['kept'][what] / rates['fresh'][what]:.2f}")
    if args.model_steps:
        step = model_rate(built.model, cfg, dataset("kept"), keys[:cfg.batch_size],
                          args.model_steps)
        print(f"model step (batch {cfg.batch_size}, {torch.get_num_threads()} threads): "
              f"{step:.1f} clips/s; kept loader / model step = "
              f"{rates['kept']['steady'] / step:.1f}")
    return 0 if same else 1


def getitem_rate(ds: ClipDataset, keys: Sequence[SampleKey], repeat: int) -> float:
    """Clips/s of ``ds[key]`` in this process on one intra-op thread (a worker's setting),
    best of ``repeat`` passes."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        best = float("inf")
        for _ in range(repeat):
            t0 = time.perf_counter()
            for key in keys:
                ds[key]
            best = min(best, time.perf_counter() - t0)
    finally:
        torch.set_num_threads(before)
        ds.close()
    return len(keys) / best


def loader_rates(ds: ClipDataset, keys: list[SampleKey], valid: list[SampleKey], batch: int,
                 workers: int, repeat: int) -> tuple[float, float, list[str]]:
    """Clips/s through ``train``'s DataLoader: the first pass (training clips, then
    validation clips) with the workers starting, and the best of ``repeat - 1`` more
    passes (at least one); the sha256 of each batch's clips (first pass)."""
    batches = BatchPlan(batch)
    loader = make_loader(ds, batches, workers, torch.device("cpu"))
    times, hashes, clips = [], [], 0
    for i in range(max(2, repeat)):
        t0, clips = time.perf_counter(), 0
        for plan in ("train", "valid"):
            if plan == "train":
                batches.set_train(keys)
            else:
                batches.set_valid(valid, batch)
            for b in loader:
                clips += len(b.clip)
                if i == 0:
                    hashes.append(hashlib.sha256(b.clip.numpy().tobytes()).hexdigest())
        times.append(time.perf_counter() - t0)
    del loader  # stops the workers
    ds.close()
    return clips / times[0], clips / min(times[1:]), hashes


def model_rate(model: torch.nn.Module, cfg: object, ds: ClipDataset,
               keys: Sequence[SampleKey], steps: int) -> float:
    """Clips/s of the training step (forward, loss, backward, SGD step) on one batch,
    best of ``steps`` after one warm-up step; the model's weights change (a copy's would
    do: it is not used afterwards)."""
    batch = default_collate([ds[k] for k in keys])
    ds.close()
    optimizer = build_optimizer(model, cfg, len(keys))  # type: ignore[arg-type]
    model.train()
    use_gvf = batch.gvf.numel() > 0
    best = float("inf")
    for i in range(steps + 1):
        t0 = time.perf_counter()
        out = model(batch.clip, batch.gvf if use_gvf else None)
        terms = tsp_loss(out, batch.action, batch.region if model.mode == "tsp" else None,
                         alpha_action=1.0, alpha_region=1.0, num_clips=len(keys),
                         num_foreground=int((batch.action >= 0).sum()))
        terms.total.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if i:
            best = min(best, time.perf_counter() - t0)
    return len(keys) / best


if __name__ == "__main__":
    sys.exit(main())
