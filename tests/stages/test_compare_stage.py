"""The compare stage's statistics over seeds: each run's files as the evaluate stage
writes them (scores, probes, scores by video), then the table, the over-seeds means, the
paired bootstrap differences and their verdicts, in every place they go."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tspipe.config import parse_params
from tspipe.doors.runner import run_stage
from tspipe.errors import StageError
from tspipe.localize.bootstrap import video_table
from tspipe.paths import RunPaths
from tspipe.reporting import NullReporter

TIOU = [0.5, 0.6, 0.7, 0.8, 0.9]


def _docs(rng: np.random.Generator, gt_rows: dict, quality: float):
    props, dets = {}, {}
    for vid, rows in gt_rows.items():
        p = []
        for _ in range(30):
            if rng.random() < quality:
                s, e, _ = rows[int(rng.integers(len(rows)))]
                s, e = s + rng.normal(0, 1.5), e + rng.normal(0, 1.5)
            else:
                s = rng.uniform(0, 90)
                e = s + rng.uniform(1, 20)
            p.append({"segment": [float(min(s, e)), float(max(s, e) + 0.1)],
                      "score": float(rng.random())})
        props[vid] = p
        dets[vid] = [{**x, "label": rows[0][2]} for x in p]
    wrap = {"version": "VERSION 1.3", "external_data": {}}
    return {**wrap, "results": props}, {**wrap, "results": dets}


def _write_run(paths: RunPaths, name: str, gt: dict, gt_rows: dict, quality: float,
               seed: int) -> dict:
    rng = np.random.default_rng(seed)
    vpaths = paths.for_variant(name)
    version = f"v-{name}"
    vpaths.features_current.parent.mkdir(parents=True, exist_ok=True)
    vpaths.features_current.write_text(json.dumps({"feature_version": version,
                                                   "dir": f"features/{name}/{version}"}))
    scores = {}
    for method in ("bmn", "gtad"):
        props, dets = _docs(rng, gt_rows, quality)
        folder = vpaths.results_dir(version, method)
        folder.mkdir(parents=True)
        table = video_table(gt, props, dets, tiou=TIOU)
        table.save(folder / "per_video.npz")
        scores[method] = table.scores()
    vpaths.metrics_dir.mkdir(parents=True, exist_ok=True)
    vpaths.metrics("localize").write_text(json.dumps(scores))
    vpaths.metrics("probe").write_text(json.dumps({
        "action": {"balanced_accuracy": 0.5 + quality / 3 + seed / 1000, "clips": 100.0,
                   "positives": 40.0},
        "boundary": {"balanced_accuracy": 0.5 + quality / 5, "clips": 100.0,
                     "positives": 10.0}}))
    return scores


def test_compare_over_seeds_with_paired_intervals(tmp_path):
    root = tmp_path / "run"
    root.mkdir()
    params = parse_params({"dataset": {"name": "toy"}, "localize": {"tiou_thresholds": TIOU},
                           "compare": {"seeds": [0, 1], "bootstrap": 300}}, env={})
    paths = RunPaths.at(root)
    rng = np.random.default_rng(0)
    gt_rows = {}
    for v in range(30):
        s = float(rng.uniform(0, 70))
        gt_rows[f"v{v:02d}"] = [(s, s + float(rng.uniform(5, 20)), "ab"[v % 2])]
    gt = {"version": "VERSION 1.3", "database": {
        vid: {"subset": "validation", "duration": 100.0,
              "annotations": [{"segment": [s, e], "label": c} for s, e, c in rows]}
        for vid, rows in gt_rows.items()}}
    written = {name: _write_run(paths, name, gt, gt_rows, quality, seed)
               for name, quality, seed in (("tsp", 0.9, 0), ("tsp-seed1", 0.85, 1),
                                           ("tac", 0.2, 2), ("tac-seed1", 0.25, 3))}

    result = run_stage("compare", params, paths, NullReporter(), track=False).result

    stats = json.loads(paths.metrics("compare_stats").read_text())
    assert stats["seeds"] == [0, 1] and stats["videos"] == 30
    auc = stats["over_seeds"]["tsp"]["bmn"]["auc"]
    values = [written[n]["bmn"]["auc"] for n in ("tsp", "tsp-seed1")]
    assert auc["mean"] == pytest.approx(np.mean(values))
    assert auc["sd"] == pytest.approx(np.std(values, ddof=1)) and auc["n"] == 2
    assert stats["over_seeds"]["tac"]["probe"]["action"]["mean"] == pytest.approx(
        0.5 + 0.225 / 3 + 0.0025)
    diffs = {(d["method"], d["metric"]): d for d in stats["differences"]}
    assert set(diffs) == {(m, k) for m in ("bmn", "gtad")
                          for k in ("auc", "ar_at_100", "average_map")}
    for d in diffs.values():
        assert (d["reference"], d["other"], d["verdict"]) == ("tsp", "tac", "beats")
        assert d["low"] <= d["value"] <= d["high"] and d["low"] > 0
    tac_auc = np.mean([written[n]["bmn"]["auc"] for n in ("tac", "tac-seed1")])
    assert diffs[("bmn", "auc")]["value"] == pytest.approx(auc["mean"] - tac_auc)

    # The report, the stage's metrics (MLflow) and its summary (Prefect) say the same.
    report = (paths.reports_dir / "compare.md").read_text()
    assert "## Over seeds" in report and "## Paired differences" in report
    assert "bmn: tsp beats tac on auc:" in report
    assert f"| tsp | bmn | {auc['mean'] * 100:.2f} ± {auc['sd'] * 100:.2f} |" in report
    metrics = result.metrics()
    assert metrics["diff.tsp-tac.bmn.auc.low"] == pytest.approx(diffs[("bmn", "auc")]["low"])
    assert metrics["tsp-seed1.bmn.auc"] == pytest.approx(written["tsp-seed1"]["bmn"]["auc"])
    assert "tsp beats tac" in result.summary_markdown()
    # Every run has its row in the per-run table.
    table = json.loads(paths.metrics("compare").read_text())
    assert set(table) == {"tsp", "tsp-seed1", "tac", "tac-seed1"}

    # A run whose scores by video are missing is named.
    (paths.for_variant("tac-seed1").results_dir("v-tac-seed1", "gtad") / "per_video.npz") \
        .unlink()
    with pytest.raises(StageError, match=r"tac-seed1/gtad/per_video\.npz missing"):
        run_stage("compare", params, paths, NullReporter(), track=False)
