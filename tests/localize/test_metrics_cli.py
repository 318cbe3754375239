"""``tspipe eval detection|proposals``: the Typer sub-app, mounted as the main CLI will."""

from __future__ import annotations

import json

import pytest
import typer
from metrics_helpers import ground_truth, results
from typer.testing import CliRunner

from tspipe.doors.cli_eval import app, parse_thresholds
from tspipe.localize import ACTIVITYNET_TIOU, PredictionError

runner = CliRunner()
root = typer.Typer()
root.add_typer(app, name="eval")


@pytest.fixture
def files(tmp_path):
    """Ground truth and results of the five-sixths case (detection) and the two-video case
    (proposals) of the hand-computed tests."""
    gt = tmp_path / "gt.json"
    gt.write_text(json.dumps(ground_truth({"a": [(0, 10, "A"), (20, 30, "A")],
                                           "b": [(0, 10, "A"), (50, 60, "A")]})))
    pred = tmp_path / "pred.json"
    pred.write_text(json.dumps(results({
        "a": [(0, 10, 0.9, "A"), (40, 50, 0.8, "A"), (21, 30, 0.7, "A")],
        "b": [(48, 60, 0.9, "A"), (0, 9, 0.3, "A")]})))
    return gt, pred


def invoke(*args: object) -> object:
    return runner.invoke(root, ["eval", *map(str, args)])


def test_detection_json(files) -> None:
    result = invoke("detection", *files, "--tiou", "0.5", "0.95", "--json")
    assert result.exit_code == 0, result.output
    # a: TP 0.9, FP 0.8, TP 0.7 (tIoU 0.9). b: (48, 60) on (50, 60) has tIoU 0.833, TP at
    # 0.5 (rank 1 overall, score 0.9 ties a's TP: the later entry, b's, first); (0, 9) 0.9.
    # At 0.50 four TPs and one FP: TP TP FP TP TP, precision 1, 1, 3/4, 4/5, best at or
    # after each TP 1, 1, 4/5, 4/5 -> 1/4 (1 + 1 + 4/5 + 4/5) = 0.9.
    # At 0.95: only a's (0, 10): FP TP FP FP FP -> 1/4 * 1/2.
    assert json.loads(result.stdout) == {
        "tiou_thresholds": [0.5, 0.95],
        "map_per_tiou": [pytest.approx(0.9, abs=1e-15), 0.125],
        "average_map": pytest.approx((0.9 + 0.125) / 2, abs=1e-15)}


def test_detection_table(files) -> None:
    result = invoke("detection", *files)
    assert result.exit_code == 0, result.output
    assert "0.90" in result.stdout and "average" in result.stdout
    assert "4 segments, 1 classes; 5 predictions" in result.stdout


def test_detection_plot(files, tmp_path) -> None:
    import matplotlib  # noqa: F401  (the plot extra; installed by make test)
    plot = tmp_path / "map.png"
    result = invoke("detection", *files, "--json", "--plot", plot)
    assert result.exit_code == 0, result.output
    assert plot.read_bytes().startswith(b"\x89PNG")


def test_proposals_json_table_and_plot(files, tmp_path) -> None:
    result = invoke("proposals", *files, "--json")
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert set(out) == {"ar_at", "auc", "avg_recall", "proposals_per_video"}
    assert set(out["ar_at"]) == {"1", "5", "10", "100"}
    assert len(out["avg_recall"]) == len(out["proposals_per_video"]) == 100
    # AR@100 uses every proposal: a's (0, 10) at 10 thresholds, a's (20, 30) and b's
    # (0, 10) by tIoU 0.9 at 9 (up to "0.90"), b's (50, 60) by 0.833 at 7: 35 / 40.
    assert out["ar_at"]["100"] == pytest.approx(35 / 40, abs=1e-15)
    result = invoke("proposals", *files)
    assert result.exit_code == 0, result.output
    assert "AR@100" in result.stdout and "87.50" in result.stdout and "AUC" in result.stdout
    import matplotlib  # noqa: F401
    result = invoke("proposals", *files, "--plot", tmp_path / "ar.png")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "ar.png").read_bytes().startswith(b"\x89PNG")


def test_blocked_and_subset(files, tmp_path) -> None:
    blocked = tmp_path / "blocked.json"
    blocked.write_text('["b"]')
    result = invoke("detection", *files, "--blocked", blocked, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["map_per_tiou"][0] == pytest.approx(5 / 6, abs=1e-15)
    result = invoke("detection", *files, "--subset", "testing", "--json")
    assert "no ground-truth segment in subset 'testing'" in str(result.exception)


def test_malformed_results_raise_a_named_error(files) -> None:
    gt, pred = files
    pred.write_text(json.dumps({"results": {"a": [{"segment": [0, 1], "score": 0.5}]}}))
    result = invoke("detection", gt, pred, "--json")
    assert isinstance(result.exception, PredictionError)  # tspipe's main prints it, exit 2
    assert "video 'a': entry 0: field 'label': missing" in str(result.exception)


@pytest.mark.parametrize(("values", "extra", "expected"), [
    (None, [], ACTIVITYNET_TIOU),
    (["0.5"], ["0.75"], (0.5, 0.75)),
    (["0.5", "0.75"], [], (0.5, 0.75)),
    (["0.3,0.5 0.7"], [], (0.3, 0.5, 0.7)),
    (["thumos14"], [], (0.3, 0.4, 0.5, 0.6, 0.7)),
    (["ActivityNet"], [], ACTIVITYNET_TIOU),
])
def test_parse_thresholds(values, extra, expected) -> None:
    assert parse_thresholds(values, extra) == expected


@pytest.mark.parametrize(("args", "message"), [
    (["--tiou", "half"], "neither a number nor a preset"),
    (["0.5"], "unexpected arguments"),
])
def test_bad_threshold_arguments(files, args, message) -> None:
    result = invoke("detection", *files, *args)
    assert result.exit_code == 2
    assert message in result.output
