"""The evaluate stage's data path at ActivityNet size, part by part, on this machine's CPU.

    python benchmarks/evaluate_scale.py [--sizes 1000,2500,full] [--workdir DIR]
                                        [--model-sizes small,reference] [--model-steps 1]
                                        [--threads N]

Data: the real ActivityNet v1.3 ground truth (TSP's train and valid CSVs with their
metadata: 10,024 training and 4,926 validation videos, read with
``tspipe.data.annotations``), written as tspipe's ActivityNet JSON
(``data/annotations/annotations.json``), and random float32 features, 512 wide like TSP's
R(2+1)D-34, one clip per 16 frames at 15 fps (``floor((floor(duration * 15) - 16) / 16) + 1``
clips, about duration * 15 / 16), written in the extract stage's layout:
``features/<version>/shard-*.h5`` (500 videos a shard, one gzip dataset per video with
the clip ``t_start``/``t_end`` attributes, as ``H5FeatureWriter`` writes them),
``index.json`` and ``features/current.json``. The shards are written once under
``--workdir`` (kept for reruns); each size is a run directory whose version index lists
its videos (a seeded sample, each size's videos within the next's, validation and
training in ActivityNet's ratio; ``full`` is every video). The feature files sit in the
page cache after writing: loading is timed warm.

Each size runs in a fresh process (so peak RSS is that size's) through the stage's own
functions (``tspipe.stages.evaluate``), at ``temporal_scale`` 100, each part timed apart:

- ``annotations``: ``read_activitynet``; ``features``: ``load_features(whole=True)``;
- ``build_data``: ``build_data`` for training and validation (rescaling to 100 positions,
  BMN targets) and the metrics' ground-truth document;
- ``classifier``: the video-level classifier trained on the training videos, and scores;
- ``postprocess[m]``: ``predict`` with the model replaced by one returning random maps
  of the model's shape (candidates, soft-NMS, seconds): everything but the network;
- ``results[m]``: proposals and detections (top-2 classes) as result JSON, written;
- ``metrics[m]``: AR@AN / AUC and detection mAP, the official protocol (tIoU 0.5:0.95);
  ``m`` is bmn, gtad and the stage's uniform baseline.

The model's share is measured once, after the sizes, per model size: seconds per
training step (batch 16, forward, BMN loss, backward, Adam; after one warm-up step) and
per inference batch of 16, and projected to the recipes (BMN 9 epochs, G-TAD 10, 627
steps an epoch at full size) and to the validation set.
Peak RSS: ``resource.getrusage(RUSAGE_SELF).ru_maxrss``, the process's high-water mark
after each part, and how much the part raised it (0: it fitted under an earlier peak).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch
from torch import nn

from tspipe.config import LocalizeConfig
from tspipe.data.annotations import Annotations, read_activitynet
from tspipe.data.annotations.activitynet import write_activitynet
from tspipe.data.annotations.tsp_csv import read_tsp_groundtruth
from tspipe.io import atomic_write_json
from tspipe.localize import evaluate_detection, evaluate_proposals
from tspipe.localize.feature_files import load_features
from tspipe.localize.losses import bmn_loss
from tspipe.localize.outputs import MapOutput
from tspipe.localize.postprocess import combine_with_classes, results_json
from tspipe.localize.targets import BMNTargets
from tspipe.localize.train import RECIPES, build_data, make_model, model_targets, predict
from tspipe.paths import RunPaths
from tspipe.stages import evaluate as stage

TSP_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "annotations" / "tsp"
SUBSETS = {"training": "train", "validation": "valid"}
FPS, STRIDE, FRAMES, DIM, SCALE, SHARD = 15.0, 16, 16, 512, 100, 500
VERSION = "random-512"
METHODS = ("bmn", "gtad")


# --- setup: annotations and features, written once ---------------------------------------

def read_ground_truth() -> Annotations:
    """ActivityNet v1.3 training + validation from TSP's CSVs (durations from metadata)."""
    parts = [read_tsp_groundtruth(TSP_DIR / f"activitynet_v1-3_{tag}_tsp_groundtruth.csv",
                                  subset=subset,
                                  metadata_csv=TSP_DIR / f"activitynet_v1-3_{tag}_metadata.csv")
             for subset, tag in SUBSETS.items()]
    classes = sorted({c for p in parts for c in p.classes})
    return Annotations(videos={k: v for p in parts for k, v in p.videos.items()},
                       classes=classes, version="VERSION 1.3")


def num_clips(duration: float) -> int:
    """TSP's clips of a video: 16 frames every 16 at 15 fps (at least one)."""
    return max(1, (math.floor(duration * FPS) - FRAMES) // STRIDE + 1)


def write_shards(ann: Annotations, ids: list[str], folder: Path, seed: int
                 ) -> dict[str, dict[str, Any]]:
    """Random features of ``ids`` in new ``folder/shard-*.h5``; video id -> index entry."""
    folder.mkdir(parents=True, exist_ok=True)
    done = len(list(folder.glob("shard-*.h5")))
    rng = np.random.default_rng([seed, done])
    attrs = {"fps": FPS, "stride": STRIDE, "frames": FRAMES, "encoder": "r2plus1d_34",
             "checkpoint_sha256": "0" * 64, "feature_version": VERSION,
             "preprocessing": "random", "dtype": "float32"}
    entries = {}
    for first in range(0, len(ids), SHARD):
        name = f"shard-{done + first // SHARD:05d}.h5"
        tmp = folder / f".{name}.tmp"
        with h5py.File(tmp, "w") as f:
            f.attrs.update(attrs)
            for vid in ids[first:first + SHARD]:
                n = num_clips(float(ann.videos[vid].duration or 1.0))
                ds = f.create_dataset(vid, data=rng.standard_normal((n, DIM), np.float32),
                                      compression="gzip")
                ds.attrs.update(attrs)
                t_start = np.arange(n) * STRIDE / FPS
                ds.attrs["t_start"], ds.attrs["t_end"] = t_start, t_start + FRAMES / FPS
                entries[vid] = {"status": "ok", "shard": name, "num_clips": n}
        tmp.rename(folder / name)
    return entries


def sample(ann: Annotations, size: int | None, seed: int) -> list[str]:
    """``size`` validation videos and training videos in ActivityNet's ratio (None: all);
    a seeded order, so each size's videos are within the next size's."""
    by = {s: sorted(v for v, x in ann.videos.items() if x.subset == s) for s in SUBSETS}
    rng = np.random.default_rng(seed)
    out = []
    for ids in by.values():
        order = [ids[i] for i in rng.permutation(len(ids))]
        n = len(ids) if size is None else round(size * len(ids) / len(by["validation"]))
        out += order[:n]
    return out


def prepare(workdir: Path, size: int | None, seed: int) -> Path:
    """The run directory of one size (annotations, index, current.json); shards once."""
    shards = workdir / "shards"
    ann = read_ground_truth()
    ids = sample(ann, size, seed)
    index_file = shards / "entries.json"
    entries = json.loads(index_file.read_text()) if index_file.exists() else {}
    todo = [v for v in ids if v not in entries]
    if todo:
        t0 = time.perf_counter()
        entries.update(write_shards(ann, sorted(todo), shards, seed))
        atomic_write_json(index_file, entries)
        print(f"setup: wrote features of {len(todo)} videos in "
              f"{time.perf_counter() - t0:.0f} s", flush=True)
    root = workdir / f"run-{size or 'full'}"
    paths = RunPaths.at(root)
    version_dir = paths.features_dir(VERSION)
    version_dir.mkdir(parents=True, exist_ok=True)
    for shard in sorted(shards.glob("shard-*.h5")):
        link = version_dir / shard.name
        if not link.exists():
            link.symlink_to(shard.resolve())
    atomic_write_json(version_dir / "index.json", {
        "feature_version": VERSION, "feature_dim": DIM,
        "videos": {v: entries[v] for v in ids}})
    atomic_write_json(paths.features_current, {
        "feature_version": VERSION, "dir": str(version_dir.relative_to(paths.root))})
    keep = set(ids)
    write_activitynet(Annotations(videos={k: v for k, v in ann.videos.items() if k in keep},
                                  classes=ann.classes, version=ann.version), paths.annotations)
    return root


# --- one size, in its own process --------------------------------------------------------

class RandomMaps(nn.Module):
    """Stands in for BMN / G-TAD in ``predict``: random maps of the model's shape."""

    def __init__(self, scale: int) -> None:
        super().__init__()
        self.scale = scale
        self.gen = torch.Generator().manual_seed(0)

    def forward(self, x: torch.Tensor) -> MapOutput:
        n, t = x.shape[0], self.scale
        return MapOutput(torch.rand(n, 2, t, t, generator=self.gen),
                         torch.rand(n, t, generator=self.gen),
                         torch.rand(n, t, generator=self.gen))


def _maxrss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def measure_size(root: Path) -> dict[str, Any]:
    """Every data-path part of the evaluate stage on the run directory ``root``."""
    paths, cfg = RunPaths.at(root), LocalizeConfig(temporal_scale=SCALE)
    rows: list[dict[str, Any]] = []
    count: dict[str, int] = {}

    def part(name: str, videos: str, fn: Callable[[], Any]) -> Any:
        before, t0 = _maxrss_mb(), time.perf_counter()
        out = fn()
        seconds, peak = time.perf_counter() - t0, _maxrss_mb()
        rows.append({"part": name, "seconds": seconds, "videos": count[videos],
                     "peak_mb": peak, "raised_mb": peak - before})
        return out

    t0 = time.perf_counter()
    ann = read_activitynet(paths.annotations)
    count["all"] = len(ann.videos)
    for subset in (cfg.train_subset, cfg.eval_subset):
        count[subset] = sum(v.subset == subset for v in ann.videos.values())
    rows.append({"part": "annotations", "seconds": time.perf_counter() - t0,
                 "videos": count["all"], "peak_mb": _maxrss_mb(), "raised_mb": 0.0})
    current = json.loads(paths.features_current.read_text())
    feats = part("features", "all", lambda: load_features(paths.resolve(current["dir"]),
                                                          whole=True))
    state: dict[str, Any] = {}

    def data() -> Any:
        state["train"] = build_data(ann, feats, subset=cfg.train_subset, scale=SCALE)
        state["val"] = build_data(ann, feats, subset=cfg.eval_subset, scale=SCALE)
        return stage._ground_truth(ann, state["val"])

    gt = part("build_data", "all", data)
    train, val = state["train"], state["val"]
    scores = part("classifier", cfg.train_subset,
                  lambda: stage._class_scores(cfg, paths, ann, feats, train, val))
    board = stage._Scoreboard(gt, tuple(cfg.tiou_thresholds), scores, frozenset())
    gt_classes = {a["label"] for e in gt["database"].values() for a in e["annotations"]}
    for method in (stage.BASELINE, *METHODS):
        folder = paths.results_dir(VERSION, method)
        if method == stage.BASELINE:
            by_video = part(f"postprocess[{method}]", cfg.eval_subset, lambda: stage._baseline(val))
        else:
            by_video = part(f"postprocess[{method}]", cfg.eval_subset, lambda m=method: predict(
                m, RandomMaps(SCALE), val, device=torch.device("cpu"), amp=False))

        def results(by_video: Any = by_video, folder: Path = folder) -> tuple[Any, Any]:
            doc = results_json(by_video)
            atomic_write_json(folder / "proposals.json", doc, indent=None)
            dets = results_json({v: stage._known(combine_with_classes(p, scores.get(v, {})),
                                                 gt_classes) for v, p in by_video.items()})
            atomic_write_json(folder / "detections.json", dets, indent=None)
            return doc, dets

        doc, dets = part(f"results[{method}]", cfg.eval_subset, results)
        part(f"metrics[{method}]", cfg.eval_subset, lambda doc=doc, dets=dets: (
            evaluate_proposals(gt, doc, tiou=board.tiou),
            evaluate_detection(gt, dets, tiou=board.tiou)))
    return {"train_videos": count[cfg.train_subset], "val_videos": count[cfg.eval_subset],
            "rows": rows}


def measure_model(method: str, size: str, steps: int, batch: int = 16) -> dict[str, float]:
    """Seconds per training step and per inference batch (each after one warm-up)."""
    torch.manual_seed(0)
    model = make_model(method, DIM, SCALE, size)
    x = torch.randn(batch, DIM, SCALE)
    iou = torch.rand(batch, SCALE, SCALE)
    t = BMNTargets(torch.triu(iou), torch.rand(batch, SCALE), torch.rand(batch, SCALE))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=1e-4)
    gen = torch.Generator().manual_seed(0)

    def step() -> None:
        out = model(x)
        tt, mask = model_targets(method, out, t, SCALE)
        loss = bmn_loss(out, tt, mask, generator=gen).total
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def infer() -> None:
        with torch.inference_mode():
            model(x)

    timed = {}
    for name, fn in (("train_step", step), ("infer_batch", infer)):
        model.train(name == "train_step")
        fn()
        t0 = time.perf_counter()
        for _ in range(steps):
            fn()
        timed[name] = (time.perf_counter() - t0) / steps
    return timed


# --- the report --------------------------------------------------------------------------

def table(label: str, result: dict[str, Any]) -> float:
    rows, total = result["rows"], sum(r["seconds"] for r in result["rows"])
    print(f"\n{label}: {result['val_videos']} validation + {result['train_videos']} training "
          f"videos (data path, model excluded)")
    print(f"{'part':<22}{'wall s':>9}{'videos':>8}{'ms/video':>10}{'peak RSS MB':>13}"
          f"{'raised MB':>11}{'share':>8}")
    for r in rows:
        per = 1e3 * r["seconds"] / max(r["videos"], 1)
        flag = "  <-- > 10 ms/video" if per > 10 else ""
        print(f"{r['part']:<22}{r['seconds']:9.2f}{r['videos']:8d}{per:10.2f}"
              f"{r['peak_mb']:13.0f}{r['raised_mb']:11.0f}{r['seconds'] / total:8.1%}{flag}")
    videos = result["val_videos"] + result["train_videos"]
    print(f"{'total':<22}{total:9.2f}{videos:8d}{1e3 * total / videos:10.2f}"
          f"{max(r['peak_mb'] for r in rows):13.0f}")
    return total


def growth(results: dict[str, dict[str, Any]]) -> None:
    labels = list(results)
    print("\nGrowth: ms per video at each size; log-log slope of wall time against videos "
          f"from {labels[0]} to {labels[-1]} (1 = linear)")
    print(f"{'part':<22}" + "".join(f"{lb:>12}" for lb in labels) + f"{'slope':>8}")
    for i, r0 in enumerate(results[labels[0]]["rows"]):
        rs = [results[lb]["rows"][i] for lb in labels]
        per = [1e3 * r["seconds"] / max(r["videos"], 1) for r in rs]
        n0, n1 = rs[0]["videos"], rs[-1]["videos"]
        slope = (math.log(rs[-1]["seconds"] / rs[0]["seconds"]) / math.log(n1 / n0)
                 if n1 > n0 and rs[0]["seconds"] > 0 else float("nan"))
        flag = "  <-- superlinear" if slope > 1.15 else ""
        print(f"{r0['part']:<22}" + "".join(f"{p:12.2f}" for p in per) + f"{slope:8.2f}{flag}")


def project(models: dict[str, dict[str, float]], data_s: float, n_train: int, n_val: int
            ) -> None:
    print(f"\nModel share, projected to {n_val} validation + {n_train} training videos "
          "(reference recipes, batch 16):")
    print(f"{'model':<18}{'s/step':>8}{'s/batch':>9}{'train h':>9}{'infer min':>11}"
          f"{'stage h':>9}{'model share':>13}")
    for size in sorted({k.split(":")[1] for k in models}):
        train_s = infer_s = 0.0
        for method in METHODS:
            m = models.get(f"{method}:{size}")
            if m is None:
                continue
            recipe = RECIPES[method]
            tr = m["train_step"] * recipe.steps_per_epoch(n_train) * recipe.epochs
            inf = m["infer_batch"] * -(-n_val // 16)
            train_s, infer_s = train_s + tr, infer_s + inf
            print(f"{method + ' ' + size:<18}{m['train_step']:8.2f}{m['infer_batch']:9.2f}"
                  f"{tr / 3600:9.2f}{inf / 60:11.1f}")
        stage_s = train_s + infer_s + data_s
        print(f"{'stage, ' + size:<18}{'':8}{'':9}{train_s / 3600:9.2f}{infer_s / 60:11.1f}"
              f"{stage_s / 3600:9.2f}{(train_s + infer_s) / stage_s:13.1%}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,2500,full",
                        help="validation videos per run (training videos in proportion)")
    parser.add_argument("--workdir", type=Path,
                        default=Path(tempfile.gettempdir()) / "tspipe-evaluate-scale")
    parser.add_argument("--model-sizes", default="small,reference",
                        help="model sizes to time ('' to skip the model)")
    parser.add_argument("--model-steps", type=int, default=1,
                        help="timed steps per model (after one warm-up)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                        help="torch threads (default: one per core)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--one", type=Path, help=argparse.SUPPRESS)  # child: one run dir
    args = parser.parse_args(argv)
    # TSP's CSVs clamp ~1,700 segments to their video's end: known, not news here.
    logging.getLogger("tspipe.data.annotations").setLevel(logging.ERROR)
    torch.set_num_threads(args.threads)
    if args.one:
        print(json.dumps(measure_size(args.one)))
        return 0
    print(f"CPU, {torch.get_num_threads()} threads; features {DIM}-d float32, "
          f"temporal scale {SCALE}; workdir {args.workdir}", flush=True)
    results: dict[str, dict[str, Any]] = {}
    for token in [s.strip() for s in args.sizes.split(",") if s.strip()]:
        size = None if token == "full" else int(token)
        root = prepare(args.workdir, size, args.seed)
        child = subprocess.run([sys.executable, __file__, "--one", str(root),
                                "--threads", str(args.threads)], check=True,
                               stdout=subprocess.PIPE, text=True)
        results[token] = json.loads(child.stdout.strip().splitlines()[-1])
        table(token, results[token])
    if len(results) > 1:
        growth(results)
    models = {f"{m}:{s}": measure_model(m, s, args.model_steps)
              for s in args.model_sizes.split(",") if s for m in METHODS}
    if models:
        last = results[list(results)[-1]]
        data_s = sum(r["seconds"] for r in last["rows"])
        project(models, data_s, last["train_videos"], last["val_videos"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
