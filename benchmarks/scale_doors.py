"""The download and decode stages' per-batch bookkeeping at full size, without the videos.

    python benchmarks/scale_doors.py [--videos 1000 5000 19994] [--batches 5]

What :mod:`scale` finds growing with the number of videos, isolated: a run directory
with N of the real ActivityNet ids (:mod:`scale_setup`), each already downloaded (a tiny
file and its manifest entry) and decoded (a per-video decode report), so that a stage
run does only its bookkeeping. Timed per size: reading the annotations, planning each
stage (which batches are done), and ``--batches`` batches of each stage's ``run_batch``
(every video skipped), extrapolated to all of its batches. Run it with
``PYTHONPATH=<an older checkout>/src`` to time that code on the same files.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def build(root: Path, n: int) -> tuple:
    import scale_setup
    import yaml

    from tspipe.config import load_params
    from tspipe.data.annotations import write_activitynet
    from tspipe.data.download import ManifestEntry, write_manifest
    from tspipe.io import atomic_write_json, sha256_file
    from tspipe.paths import RunPaths
    from tspipe.stages.decode import CHECKS, decode_settings

    ann = scale_setup.select(scale_setup.all_videos(), n)
    root.mkdir(parents=True)
    raw = yaml.safe_load((scale_setup.REPO / "params.yaml").read_text())
    raw["dataset"].update(scale_setup.PARAMS["dataset"], annotations="data/annotations/"
                          "annotations.json")
    raw["download"]["mirror"] = "http://127.0.0.1:9/"
    (root / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    params, paths = load_params(root / "params.yaml"), RunPaths.at(root)
    write_activitynet(ann, paths.annotations)
    paths.videos.mkdir(parents=True, exist_ok=True)
    reports = paths.decode_report.parent / "decode"
    reports.mkdir(parents=True, exist_ok=True)
    entries = {}
    for vid in ann.videos:
        f = paths.videos / f"{vid}.mp4"
        f.write_bytes(vid.encode() * 8)
        sha = sha256_file(f)
        entries[vid] = ManifestEntry(vid, f"http://127.0.0.1:9/{vid}.mp4", f"../videos/{vid}.mp4",
                                     f.stat().st_size, sha, "ok", "", 1)
        atomic_write_json(reports / f"{vid}.json", {
            "video_id": vid, "status": "failed", "reason": "stand-in", "source_sha256": sha,
            "settings": decode_settings(params), "checks": CHECKS})
    write_manifest(paths.manifest, entries)
    return params, paths


def timed(fn, *args) -> tuple[float, object]:
    t0 = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - t0, out


def measure(root: Path, n: int, batches: int) -> dict[str, float]:
    from tspipe.data.annotations import read_activitynet
    from tspipe.reporting import NullReporter
    from tspipe.stages import STAGES

    params, paths = build(root, n)
    out = {"read annotations": timed(read_activitynet, paths.annotations)[0]}
    for name in ("download", "decode"):
        batching = STAGES[name].batching
        seconds, plan = timed(batching.plan, params, paths)
        out[f"{name}: plan"] = seconds
        assert all(done for _, done in plan), f"{name}: not every batch is done"
        some = [b for b, _ in plan][:batches]
        t0 = time.perf_counter()
        for b in some:
            batching.run_batch(params, paths, b, NullReporter())
        out[f"{name}: run_batch, all"] = (time.perf_counter() - t0) / len(some) \
            * len(plan)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, nargs="+", default=[1000, 5000, 19994])
    parser.add_argument("--batches", type=int, default=5, help="batches timed per stage")
    args = parser.parse_args(argv)
    logging.disable(logging.WARNING)
    rows: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="tspipe-scale-doors-") as tmp:
        for n in args.videos:
            for key, seconds in measure(Path(tmp) / f"n{n}", n, args.batches).items():
                rows.setdefault(key, []).append(seconds)
    from scale import _slope

    print(f"{'seconds (ms/video)':28s} " + " ".join(f"{n:>17d}" for n in args.videos)
          + f" {'b':>6s}")
    for key, values in rows.items():
        cells = " ".join(f"{s:8.2f} ({1000 * s / n:6.2f})" for s, n in zip(values, args.videos,
                                                                         strict=True))
        b = _slope(list(zip(args.videos, values, strict=True)))
        print(f"{key:28s} {cells} {b if b is not None else float('nan'):6.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
