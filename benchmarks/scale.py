"""Scale rehearsal: the real Prefect pipeline over the real ActivityNet ids, at full size.

    python benchmarks/scale.py [--videos 250 500 1000] [--add 500] [--work-dir DIR]
    python -m cProfile -o scale.prof benchmarks/scale.py --videos 1000 --add 0 --no-rerun

Opt-in (never in the test suite); ``--videos 19994`` is the whole of ActivityNet v1.3.
Per size N (:mod:`scale_setup`: annotations from the TSP CSVs, a 1 s stand-in video per
id over loopback HTTP, about 4% absent; tiny encoder, pretrain off, evaluation cut to one
BMN epoch), three runs of ``tspipe.doors.prefect_pipeline.tspipe_pipeline``:

1. ``first``: N videos from nothing;
2. ``add``: ``--add`` more videos (gvf and extraction must compute only those, copying
   the rest; at 19,994, the whole set, the first run holds ``--add`` fewer);
3. ``rerun``: nothing changed (everything cached, the same ids).

After 2 and 3 it checks that the catalog, MLflow and dvc.lock kept the earlier records
(:mod:`scale_records`). Printed per run: per stage, the wall time, ms per video and its
split into the stage's own code and each door (:mod:`scale_measure`: plan, params,
catalog, mlflow, dvc, prefect), the peak RSS and the Prefect task runs; then, over the
sizes, ms per video at each size and the exponent ``b`` of a log-log fit ``t ~ N^b`` of
each stage and door (1: linear; above ~1.2: grows faster than the videos).

The stand-in videos keep the model's share small but not negligible (gvf and extract are
most of the time); ``benchmarks/scale_doors.py`` times the download and decode stages'
bookkeeping alone at 1,000 / 5,000 / 19,994 videos, where what grows faster than the
videos shows. On 2 CPU cores: 108 ms per video at 1,000; 46 min for a first run of 19,994.
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

RUNS = ("first", "add", "rerun")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, nargs="+", default=[250, 500, 1000],
                        help="sizes N (at most 19994)")
    parser.add_argument("--add", type=int, default=500, help="videos the second run adds "
                        "(0: no second run)")
    parser.add_argument("--no-rerun", action="store_true", help="skip the unchanged rerun")
    parser.add_argument("--work-dir", type=Path, help="kept afterwards (default: a "
                        "temporary folder, removed)")
    args = parser.parse_args(argv)
    if args.work_dir:
        args.work_dir.mkdir(parents=True, exist_ok=True)
        return rehearse(args, args.work_dir)
    with tempfile.TemporaryDirectory(prefix="tspipe-scale-") as tmp:
        return rehearse(args, Path(tmp))


def rehearse(args: argparse.Namespace, work: Path) -> int:
    # Before Prefect is imported: a private API database, quiet logs.
    os.environ["PREFECT_HOME"] = str(work / "prefect-home")
    os.environ.pop("PREFECT_API_URL", None)
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    for var in ("MLFLOW_TRACKING_URI", "TSPIPE_CATALOG_URL", "TSPIPE_OPENLINEAGE_URL"):
        os.environ.pop(var, None)
    import scale_measure
    import scale_setup

    scale_measure.install()
    _warm_up()
    everything = scale_setup.all_videos()
    standin = scale_setup.standin_video(work)
    mirror = work / "mirror"
    server = scale_setup.MirrorServer(mirror)
    results: dict[int, dict[str, dict]] = {}
    failed = 0
    try:
        for n in args.videos:
            # Past the real ids there is nothing to add: at the top size the first run
            # holds ``add`` fewer videos and the add run brings it to N.
            top = min(n + args.add, len(everything.videos))
            first = top - args.add if args.add else n
            sizes = [("first", first)] + ([("add", top)] if args.add else []) \
                + ([] if args.no_rerun else [("rerun", top)])
            scale_setup.fill_mirror(mirror, standin,
                                    list(scale_setup.select(everything, sizes[-1][1]).videos))
            root = work / f"run-{n}"
            scale_setup.make_run_dir(root, server.url)
            results[n], before = {}, None
            for label, size in sizes:
                scale_setup.write_annotations(root, scale_setup.select(everything, size))
                results[n][label] = measured(root, size)
                print_run(n, label, results[n][label])
                after = _snapshot(root)
                if before is not None:
                    failed += print_checks(label, before, after)
                before = after
    finally:
        server.close()
    print_growth(results)
    return 1 if failed else 0


def _warm_up() -> None:
    """Start Prefect's ephemeral API server (tens of seconds, once per process) outside
    the measurements: the first size would carry it alone."""
    from prefect import flow

    flow(name="scale-warm-up")(lambda: None)()


def _snapshot(root: Path) -> dict:
    import scale_records

    return scale_records.snapshot(root)


def measured(root: Path, videos: int) -> dict:
    import scale_measure
    from scale_measure import CLOCK

    from tspipe.doors.prefect_pipeline import tspipe_pipeline

    since = dt.datetime.now(dt.UTC)
    CLOCK.reset()
    t0 = time.perf_counter()
    with scale_measure.RssSampler():
        summary = tspipe_pipeline(params_path="params.yaml", root=str(root))
        CLOCK.finish()
    wall = time.perf_counter() - t0
    counts = scale_measure.prefect_counts(since)
    stages: dict[str, dict[str, float]] = {}
    for (stage, bucket), seconds in CLOCK.totals.items():
        stages.setdefault(stage, {})[bucket] = seconds
    cached = {r["stage"]: r["cached"] for r in summary["stages"]}
    return {"videos": videos, "wall": wall, "stages": stages, "peak": dict(CLOCK.peak),
            "counts": counts, "cached": cached}


def print_run(n: int, label: str, res: dict) -> None:
    import scale_measure

    buckets = scale_measure.BUCKETS
    v = res["videos"]
    print(f"\n== N={n} run {label}: {v} videos, {res['wall']:.1f} s "
          f"({1000 * res['wall'] / v:.1f} ms/video); Prefect: {res['counts']['flow_runs']} "
          f"flow runs, {res['counts']['task_runs']} task runs")
    head = f"{'stage':16s} {'state':6s} {'total s':>8s} {'ms/vid':>7s} " + " ".join(
        f"{b:>8s}" for b in buckets) + f" {'RSS MB':>7s} {'tasks':>5s}"
    print(head)
    print("-" * len(head))
    sums = dict.fromkeys(buckets, 0.0)
    for stage, split in res["stages"].items():
        total = sum(split.values())
        for b in buckets:
            sums[b] += split.get(b, 0.0)
        state = {True: "cached", False: "ran"}.get(res["cached"].get(stage), "-")
        tasks = res["counts"]["per_stage"].get(stage, res["counts"]["per_stage"].get(
            f"pipeline {stage}", ""))
        print(f"{stage:16s} {state:6s} {total:8.2f} {1000 * total / v:7.2f} " + " ".join(
            f"{split.get(b, 0.0):8.2f}" for b in buckets)
            + f" {res['peak'].get(stage, 0) / 2**20:7.0f} {tasks!s:>5s}")
    total = sum(sums.values())
    print(f"{'all':16s} {'':6s} {total:8.2f} {1000 * total / v:7.2f} " + " ".join(
        f"{sums[b]:8.2f}" for b in buckets) + f" {max(res['peak'].values()) / 2**20:7.0f}")
    print(f"{'ms/video':16s} {'':6s} {'':8s} {'':7s} " + " ".join(
        f"{1000 * sums[b] / v:8.2f}" for b in buckets))


def print_checks(label: str, before: dict, after: dict) -> int:
    import scale_records

    rows = scale_records.compare(before, after, nothing_new=label == "rerun")
    print(f"-- records after run {label}:")
    for name, ok, detail in rows:
        print(f"   [{'ok' if ok else 'FAIL'}] {name}{': ' + detail if detail else ''}")
    return sum(not ok for _, ok, _ in rows)


def _slope(points: list[tuple[int, float]]) -> float | None:
    """Exponent b of t = a N^b, least squares in log-log space."""
    pts = [(math.log(n), math.log(t)) for n, t in points if t > 0]
    if len(pts) < 2:
        return None
    mx = sum(x for x, _ in pts) / len(pts)
    my = sum(y for _, y in pts) / len(pts)
    sxx = sum((x - mx) ** 2 for x, _ in pts)
    return sum((x - mx) * (y - my) for x, y in pts) / sxx if sxx else None


def print_growth(results: dict[int, dict[str, dict]]) -> None:
    import scale_measure

    sizes = sorted(results)
    if len(sizes) < 2:
        return
    for label in RUNS:
        runs = [(results[n][label]["videos"], results[n][label]) for n in sizes
                if label in results[n]]
        if len(runs) < 2:
            continue
        print(f"\n== growth, run {label}: ms per video at each size; b of t ~ N^b")
        print(f"{'':22s} " + " ".join(f"{v:>9d}" for v, _ in runs) + f" {'b':>6s}")
        rows: dict[str, list[tuple[int, float]]] = {}
        for v, res in runs:
            for stage, split in res["stages"].items():
                rows.setdefault(f"stage {stage}", []).append((v, sum(split.values())))
            for b in scale_measure.BUCKETS:
                rows.setdefault(f"door {b}", []).append(
                    (v, sum(s.get(b, 0.0) for s in res["stages"].values())))
            rows.setdefault("wall", []).append((v, res["wall"]))
        for name, pts in rows.items():
            b = _slope(pts)
            print(f"{name:22s} " + " ".join(f"{1000 * t / v:9.2f}" for v, t in pts)
                  + f" {b if b is not None else float('nan'):6.2f}")
        peak = [(v, max(res["peak"].values()) / 2**20) for v, res in runs]
        print(f"{'peak RSS, MB':22s} " + " ".join(f"{mb:9.0f}" for _, mb in peak)
              + f" {_slope(peak) or float('nan'):6.2f}")


if __name__ == "__main__":
    sys.exit(main())
