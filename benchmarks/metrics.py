"""Metrics benchmark: tspipe's vectorised ActivityNet evaluation against a straightforward one.

    python benchmarks/metrics.py [--per-video 100] [--videos N] [--repeat 3] [--cpu 0]

Data: the real ActivityNet v1.3 validation ground truth (TSP's CSV, 4,926 videos, read
with ``tspipe.data.annotations``) and ``--per-video`` predictions per video built from it
deterministically (seed 0): jittered copies of each ground-truth segment (mostly with its
label), then random segments labelled with one of the video's classes or any class, scores
uniform, a few segments past the video's end and a few of zero length. Keys are the ground
truth's ids as given (no ``v_``), as the official evaluation needs.

Methods, on the same parsed arrays:

- ``tspipe``: ``tspipe.localize.metrics`` (detection: ``evaluate_detection`` on a
  ``GroundTruth`` and ``Predictions``; proposals: ``evaluate_proposals``).
- ``reference``: the definitions written out the obvious way (this file): for each class
  and threshold a Python loop over the class's sorted predictions, each walking its
  ground truth by tIoU; for proposals the official per-video, per-threshold, per-point
  loops. Ties broken by the same rule (stable sort, reversed).

Both must agree to 1e-9 (AP per class and threshold; recall per threshold and point, AUC).
The run is pinned to one core; times are the best of ``--repeat`` runs (the reference runs
once). Also printed, for tspipe: from the result document (entry checks and columns
included), from the result JSON file (parsing included) and, with every video, from both
files (the ground truth read from TSP's CSV as well).
Goal: tspipe / reference >= 10x, the whole detection evaluation < 2 s.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from tspipe.data.annotations import read_annotations
from tspipe.localize import (
    ACTIVITYNET_TIOU,
    GroundTruth,
    Predictions,
    evaluate_detection,
    evaluate_proposals,
    load_ground_truth,
    load_predictions,
    segment_tiou,
)

TSP_DIR_CANDIDATES = [Path(__file__).resolve().parents[1].parent / "shared" / "data"
                      / "annotations" / "tsp", Path("/work/shared/data/annotations/tsp")]
GT_CSV = "activitynet_v1-3_valid_tsp_groundtruth.csv"
LABEL_MAP = "activitynet_v1-3_action_label_mapping.json"
TOLERANCE = 1e-9


# --- the straightforward implementation ------------------------------------------------


def reference_detection(gt: GroundTruth, video: np.ndarray, label: np.ndarray,
                        t_start: np.ndarray, t_end: np.ndarray, score: np.ndarray,
                        thresholds: np.ndarray) -> np.ndarray:
    """AP ``(T, C)``: per class and threshold, a loop over the class's sorted predictions.
    ``video``: index into ``gt.video_ids`` (-1: none); ``label``: index into ``gt.classes``."""
    ap = np.zeros((len(thresholds), len(gt.classes)))
    for c in range(len(gt.classes)):
        gt_rows: dict[int, list[int]] = {}
        for row in np.flatnonzero(gt.label == c).tolist():
            gt_rows.setdefault(int(gt.video[row]), []).append(row)
        mine = np.flatnonzero(label == c)
        if len(mine) == 0:
            continue
        mine = mine[np.argsort(score[mine], kind="stable")[::-1]]
        # For each prediction, its video's ground truth of class c by tIoU, descending.
        visits: list[list[tuple[float, int]]] = []
        for p in mine.tolist():
            rows = gt_rows.get(int(video[p]), [])
            tiou = segment_tiou(t_start[p], t_end[p], gt.t_start[rows], gt.t_end[rows])
            visits.append([(float(tiou[j]), rows[j])
                           for j in np.argsort(tiou, kind="stable")[::-1].tolist()])
        n_pos = len(np.flatnonzero(gt.label == c))
        for i, threshold in enumerate(thresholds.tolist()):
            taken: set[int] = set()
            tp = np.zeros(len(mine))
            for n, visit in enumerate(visits):
                for value, row in visit:
                    if value < threshold:
                        break
                    if row in taken:
                        continue
                    taken.add(row)
                    tp[n] = 1
                    break
            tp_sum = np.cumsum(tp)
            fp_sum = np.cumsum(1 - tp)
            ap[i, c] = reference_interpolated_ap(tp_sum / (tp_sum + fp_sum), tp_sum / n_pos)
    return ap


def reference_interpolated_ap(precision: np.ndarray, recall: np.ndarray) -> float:
    """VOC 2011 all-point interpolation, written out."""
    mprec = [0.0, *precision.tolist(), 0.0]
    mrec = [0.0, *recall.tolist(), 1.0]
    for i in range(len(mprec) - 2, -1, -1):
        mprec[i] = max(mprec[i], mprec[i + 1])
    return float(sum((mrec[i] - mrec[i - 1]) * mprec[i]
                     for i in range(1, len(mrec)) if mrec[i] != mrec[i - 1]))


def reference_proposals(gt: GroundTruth, video: np.ndarray, t_start: np.ndarray,
                        t_end: np.ndarray, score: np.ndarray, thresholds: np.ndarray, *,
                        n_rows: int, max_avg: int = 100) -> tuple[np.ndarray, np.ndarray]:
    """Recall ``(T, 100)`` and proposals per video ``(100,)``, the official loops."""
    n_videos = len(gt.video_ids)
    ratio = max_avg * float(n_videos) / n_rows
    scores: list[np.ndarray] = []
    total = 0
    for v in range(n_videos):
        rows = np.flatnonzero(gt.video == v)
        mine = np.flatnonzero(video == v)
        if len(mine) == 0:
            scores.append(np.zeros((len(rows), 1)))
            continue
        mine = mine[np.argsort(score[mine], kind="stable")[::-1]]
        keep = min(int(len(mine) * ratio), len(mine))
        total += keep
        mine = mine[:keep]
        tiou = np.empty((len(rows), keep))
        for i, row in enumerate(rows.tolist()):
            tiou[i] = segment_tiou(gt.t_start[row], gt.t_end[row], t_start[mine], t_end[mine])
        scores.append(tiou)
    fraction = np.arange(1, 101) / 100.0 * (max_avg * float(n_videos) / total)
    recall = np.empty((len(thresholds), 100))
    for r, threshold in enumerate(thresholds.tolist()):
        matches = np.zeros(100)
        positives = 0
        for tiou in scores:
            positives += tiou.shape[0]
            hit = tiou >= threshold
            used = np.minimum((tiou.shape[1] * fraction).astype(int), tiou.shape[1])
            for j, n in enumerate(used.tolist()):
                matches[j] += np.count_nonzero(hit[:, :n].sum(axis=1))
        recall[r] = matches / positives
    return recall, fraction * (float(total) / n_videos)


def align(gt: GroundTruth, preds: Predictions) -> tuple[np.ndarray, np.ndarray | None]:
    """Each prediction's ground-truth video index (-1: none) and class index (None for
    proposals), the inputs of the reference functions."""
    index = {v: i for i, v in enumerate(gt.video_ids)}
    video = np.array([index.get(v, -1) for v in preds.video_ids], dtype=np.int64)[preds.video]
    if preds.labels is None or preds.label is None:
        return video, None
    classes = {c: i for i, c in enumerate(gt.classes)}
    label = np.array([classes[c] for c in preds.labels], dtype=np.int64)[preds.label]
    return video, label


# --- data ------------------------------------------------------------------------------


def ground_truth_csv() -> Path:
    tsp = next((d for d in TSP_DIR_CANDIDATES if (d / GT_CSV).is_file()), None)
    if tsp is None:
        sys.exit(f"no {GT_CSV} in {TSP_DIR_CANDIDATES}")
    return tsp / GT_CSV


def ground_truth(videos: int | None) -> GroundTruth:
    csv = ground_truth_csv()
    ann = read_annotations(csv, label_map=csv.parent / LABEL_MAP)
    if videos is not None:
        ann.videos = dict(list(ann.videos.items())[:videos])
    return load_ground_truth(ann, subset="validation")


def make_predictions(gt: GroundTruth, per_video: int, *, seed: int = 0) -> dict[str, Any]:
    """An ActivityNet result document with ``per_video`` detections per ground-truth video."""
    rng = np.random.default_rng(seed)
    results: dict[str, list[dict[str, Any]]] = {}
    end = np.zeros(len(gt.video_ids))
    np.maximum.at(end, gt.video, gt.t_end)
    for v, video_id in enumerate(gt.video_ids):
        rows = np.flatnonzero(gt.video == v)
        duration = float(end[v]) * 1.05 + 1.0
        copies = np.repeat(rows, 4)[:per_video]
        length = gt.t_end[copies] - gt.t_start[copies]
        start = gt.t_start[copies] + rng.normal(0, 0.08, len(copies)) * length
        stop = gt.t_end[copies] + rng.normal(0, 0.08, len(copies)) * length
        labels = np.where(rng.random(len(copies)) < 0.8, gt.label[copies],
                          rng.integers(0, len(gt.classes), len(copies)))
        n_random = per_video - len(copies)
        a, b = rng.uniform(0, duration, (2, n_random))
        own = gt.label[rows][rng.integers(0, len(rows), n_random)]
        start = np.concatenate([start, np.minimum(a, b)])
        stop = np.concatenate([stop, np.maximum(a, b) * rng.choice([1.0, 1.2], n_random,
                                                                    p=[0.95, 0.05])])
        stop = np.where(rng.random(per_video) < 0.01, start, np.maximum(stop, start))
        labels = np.concatenate([labels, np.where(rng.random(n_random) < 0.5, own,
                                                  rng.integers(0, len(gt.classes), n_random))])
        scores = rng.random(per_video)
        results[video_id] = [
            {"label": gt.classes[c], "score": s, "segment": [t0, t1]}
            for c, s, t0, t1 in zip(labels.tolist(), scores.tolist(), start.tolist(),
                                    stop.tolist(), strict=True)]
    return {"version": "VERSION 1.3", "external_data": {}, "results": results}


# --- timing ----------------------------------------------------------------------------


def best_time(fn: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    best, out = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-video", type=int, default=100, help="predictions per video")
    parser.add_argument("--videos", type=int, help="only the first N ground-truth videos")
    parser.add_argument("--repeat", type=int, default=3, help="tspipe runs; best kept")
    parser.add_argument("--cpu", type=int, default=None, help="core to pin to "
                        "(default: the first this process may use)")
    args = parser.parse_args(argv)
    if hasattr(os, "sched_setaffinity"):
        cpu = min(os.sched_getaffinity(0)) if args.cpu is None else args.cpu
        os.sched_setaffinity(0, {cpu})
    thresholds = np.asarray(ACTIVITYNET_TIOU)

    gt = ground_truth(args.videos)
    doc = make_predictions(gt, args.per_video)
    detections = load_predictions(doc, with_labels=True)
    proposals = load_predictions(doc, with_labels=False)
    video, label = align(gt, detections)
    assert label is not None
    print(f"{len(gt.video_ids)} videos, {len(gt)} ground-truth segments, {len(gt.classes)} "
          f"classes, {len(detections)} predictions ({args.per_video} per video)")

    with tempfile.TemporaryDirectory(prefix="tspipe-bench-") as tmp:
        path = Path(tmp) / "results.json"
        path.write_text(json.dumps(doc))
        # The whole evaluation from files needs the ground truth file to hold just these
        # videos: only with all of them.
        csv = ground_truth_csv() if args.videos is None else None
        rows = [
            bench("detection", args.repeat,
                  lambda: evaluate_detection(gt, detections),
                  lambda: evaluate_detection(gt, doc), lambda: evaluate_detection(gt, path),
                  (lambda: evaluate_detection(csv, path)) if csv else None,
                  lambda: reference_detection(gt, video, label, detections.t_start,
                                              detections.t_end, detections.score, thresholds),
                  lambda r: np.array(r.ap_per_class), lambda ref: ref),
            bench("proposals", args.repeat,
                  lambda: evaluate_proposals(gt, proposals),
                  lambda: evaluate_proposals(gt, doc), lambda: evaluate_proposals(gt, path),
                  (lambda: evaluate_proposals(csv, path)) if csv else None,
                  lambda: reference_proposals(gt, video, proposals.t_start, proposals.t_end,
                                              proposals.score, thresholds,
                                              n_rows=len(proposals)),
                  _proposal_numbers, _reference_proposal_numbers),
        ]
    print(f"\n{'task':<10} {'tspipe':>9} {'+entries':>9} {'+json':>9} {'+gt csv':>9} "
          f"{'reference':>10} {'ratio':>7}  max |diff|")
    for r in rows:
        whole = "-" if r["whole"] is None else f"{r['whole']:.3f}s"
        print(f"{r['task']:<10} {r['tspipe']:>8.3f}s {r['document']:>8.3f}s {r['file']:>8.3f}s "
              f"{whole:>9} {r['reference']:>9.2f}s {r['reference'] / r['tspipe']:>6.0f}x  "
              f"{r['diff']:.1e}")
    print("tspipe: on parsed arrays; +entries: from the result document (dict); +json: from "
          "the result file; +gt csv: the ground truth read from TSP's CSV too")
    ok = all(r["diff"] <= TOLERANCE for r in rows)
    print("agreement to 1e-9:", "yes" if ok else "NO")
    return 0 if ok else 1


def _proposal_numbers(result: Any) -> np.ndarray:
    return np.concatenate([np.ravel(result.recall), result.proposals_per_video, [result.auc]])


def _reference_proposal_numbers(ref: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    recall, per_video = ref
    avg = recall.mean(axis=0)
    auc = float(np.trapezoid(avg, per_video)) / per_video[-1]
    return np.concatenate([np.ravel(recall), per_video, [auc]])


def bench(task: str, repeat: int, ours: Callable[[], Any], from_doc: Callable[[], Any],
          from_file: Callable[[], Any], whole: Callable[[], Any] | None,
          reference: Callable[[], Any],
          numbers: Callable[[Any], np.ndarray],
          ref_numbers: Callable[[Any], np.ndarray]) -> dict[str, Any]:
    t_ours, result = best_time(ours, repeat)
    t_doc, _ = best_time(from_doc, repeat)
    t_file, _ = best_time(from_file, repeat)
    t_whole = None if whole is None else best_time(whole, repeat)[0]
    print(f"{task}: tspipe {t_ours:.3f} s; reference running ...", flush=True)
    t_ref, ref = best_time(reference, 1)
    diff = float(np.max(np.abs(numbers(result) - ref_numbers(ref))))
    return {"task": task, "tspipe": t_ours, "document": t_doc, "file": t_file,
            "whole": t_whole, "reference": t_ref, "diff": diff}


if __name__ == "__main__":
    sys.exit(main())
