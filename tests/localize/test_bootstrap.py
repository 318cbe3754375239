"""Per-video score tables and the paired bootstrap (tspipe.localize.bootstrap): with every
video once they give the official numbers; a resample with repeated videos gives what the
official evaluation gives on a document holding the copies under new ids."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from metrics_helpers import ground_truth, results

from tspipe.localize import evaluate_detection, evaluate_proposals
from tspipe.localize.bootstrap import VideoTable, paired_bootstrap, video_table

CLASSES = ("a", "b", "c")


def _synthetic(seed: int, videos: int = 12, quality: float = 0.5):
    """Ground truth, proposals and detections; ``quality`` is the share of proposals
    placed near an instance (the rest anywhere)."""
    rng = np.random.default_rng(seed)
    gt_rows, props, dets = {}, {}, {}
    for v in range(videos):
        vid = f"v{v:02d}"
        label = CLASSES[v % len(CLASSES)]
        starts = np.sort(rng.uniform(0, 80, int(rng.integers(1, 4))))
        rows = [(float(s), float(s + rng.uniform(3, 15)), label) for s in starts]
        gt_rows[vid] = rows
        p = []
        for _ in range(40):
            if rng.random() < quality:
                s, e, _ = rows[int(rng.integers(len(rows)))]
                s, e = s + rng.normal(0, 2), e + rng.normal(0, 2)
            else:
                s = rng.uniform(0, 90)
                e = s + rng.uniform(1, 20)
            p.append((float(min(s, e)), float(max(s, e) + 0.1), float(rng.random()), None))
        props[vid] = p
        other = CLASSES[(v + 1) % len(CLASSES)]
        dets[vid] = [(s, e, sc * w, lab) for s, e, sc, _ in p
                     for lab, w in ((label, 1.0), (other, 0.5))]
    return ground_truth(gt_rows), results(props), results(dets)


def test_every_video_once_gives_the_official_numbers() -> None:
    gt, props, dets = _synthetic(0)
    table = video_table(gt, props, dets, tiou=np.linspace(0.5, 0.95, 10))
    ours = table.scores()
    official_p = evaluate_proposals(gt, props)
    official_d = evaluate_detection(gt, dets)
    assert ours["auc"] == pytest.approx(official_p.auc, abs=1e-12)
    assert ours["ar_at_100"] == pytest.approx(official_p.ar_at[100], abs=1e-12)
    assert ours["average_map"] == pytest.approx(official_d.average_map, abs=1e-12)
    assert 0 < ours["auc"] < 1 and 0 < ours["average_map"] < 1


def _copied(doc: dict, key: str, weight: np.ndarray, ids: list[str]) -> dict:
    """``doc`` with video ``ids[v]`` present ``weight[v]`` times, as ``id#k``."""
    out = {k: v for k, v in doc.items() if k != key}
    out[key] = {f"{vid}#{k}": doc[key][vid] for vid, n in zip(ids, weight.tolist(), strict=True)
                for k in range(n)}
    return out


def test_a_resample_scores_as_the_official_evaluation_of_the_copies() -> None:
    gt, props, dets = _synthetic(1)
    table = video_table(gt, props, dets, tiou=np.linspace(0.5, 0.95, 10))
    ids = [str(v) for v in table.video_ids]
    rng = np.random.default_rng(5)
    for _ in range(3):
        weight = rng.multinomial(len(ids), np.full(len(ids), 1 / len(ids)))
        weight[:3] = np.maximum(weight[:3], 1)  # every class drawn: the official needs it
        ours = table.scores(weight)
        copy_gt = _copied(gt, "database", weight, ids)
        # Every video keeps all 40 of its proposals, as the full set's budget allows.
        official_p = evaluate_proposals(copy_gt, _copied(props, "results", weight, ids))
        official_d = evaluate_detection(copy_gt, _copied(dets, "results", weight, ids))
        assert ours["auc"] == pytest.approx(official_p.auc, abs=1e-12)
        assert ours["average_map"] == pytest.approx(official_d.average_map, abs=1e-12)


def test_tables_round_trip_through_their_file(tmp_path: Path) -> None:
    gt, props, dets = _synthetic(2)
    table = video_table(gt, props, dets, tiou=[0.5, 0.75])
    back = VideoTable.load(table.save(tmp_path / "t.npz"))
    assert back.scores() == table.scores()
    assert list(back.video_ids) == list(table.video_ids)


def test_paired_bootstrap_tells_better_from_equal() -> None:
    tiou = np.linspace(0.5, 0.95, 10)
    good = [video_table(*_synthetic(3, 40, quality=0.9), tiou=tiou)]
    bad = [video_table(*_synthetic(3, 40, quality=0.1), tiou=tiou)]
    diffs = {d.metric: d for d in paired_bootstrap({"good": good, "bad": bad}, "good",
                                                   draws=300)}
    assert set(diffs) == {"auc", "ar_at_100", "average_map"}
    for d in diffs.values():
        assert d.low <= d.value <= d.high
        assert d.verdict == "beats", d.sentence()
    # The same predictions twice: the difference is 0 in every draw, a tie.
    same = paired_bootstrap({"a": good, "b": good}, "a", draws=200)
    assert all(d.value == 0 and d.low == 0 == d.high and d.verdict == "ties with" for d in same)
    # Reversed: the worse one loses.
    rev = paired_bootstrap({"bad": bad, "good": good}, "bad", draws=200)
    assert all(d.verdict == "loses to" for d in rev), [d.sentence() for d in rev]


def test_seeds_widen_the_interval() -> None:
    tiou = [0.5, 0.7]
    one = [video_table(*_synthetic(4, 30, quality=0.5), tiou=tiou)]
    # Three seeds of the other variant that disagree with each other.
    spread = [video_table(*_synthetic(4, 30, quality=q), tiou=tiou) for q in (0.2, 0.5, 0.8)]
    fixed = [spread[1]] * 3
    width = {}
    for name, runs in (("spread", spread), ("fixed", fixed)):
        d = {x.metric: x for x in paired_bootstrap({"one": one, name: runs}, "one",
                                                   draws=400)}
        width[name] = d["auc"].high - d["auc"].low
    assert width["spread"] > width["fixed"]


def test_variants_on_different_videos_are_refused() -> None:
    a = video_table(*_synthetic(5, 10), tiou=[0.5])
    b = video_table(*_synthetic(5, 11), tiou=[0.5])
    with pytest.raises(ValueError, match="different videos"):
        paired_bootstrap({"a": [a], "b": [b]}, "a", draws=100)
