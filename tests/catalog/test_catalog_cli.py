"""`tspipe catalog ...` through Typer's CliRunner: JSON parsed and checked, errors on stderr."""

from __future__ import annotations

import json

import pytest
from catalog_helpers import fill, sha
from typer.testing import CliRunner

from tspipe.catalog import Catalog
from tspipe.doors.cli_catalog import app

runner = CliRunner()


def _json(*args: str) -> object:
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_every_command(catalog_url: str) -> None:
    upgraded = runner.invoke(app, ["upgrade", "--url", catalog_url])
    assert upgraded.exit_code == 0, upgraded.output
    assert "revision 0003" in upgraded.stdout
    with Catalog(catalog_url) as catalog:
        filled = fill(catalog)
    url = ("--url", catalog_url)

    listed = _json("list", *url, "--json")
    assert [v["id"] for v in listed] == [filled.official.id, filled.tsp.id]
    assert listed[1]["checkpoint_sha256"] == sha("f") and listed[1]["status"] == "pending"
    assert _json("list", *url, "--dataset", "thumos14", "--json") == []
    assert len(_json("list", *url, "--encoder", "r2plus1d_34", "--json")) == 2

    shown = _json("show", filled.tsp.id[:12], *url, "--json")
    assert shown["feature"]["id"] == filled.tsp.id
    assert [a["sha256"] for a in shown["ancestors"]] == [sha("e")]
    assert shown["checkpoint"]["params"] == {"epochs": 8, "lr": 0.01}
    assert {(e["method"], e["metric"]): e["value"] for e in shown["evaluations"]} == {
        ("bmn", "auc"): 0.689, ("gtad", "ar@100"): 0.7512, ("gtad", "average_map"): 0.3585}

    top = _json("best", "--metric", "gtad.average_map", *url, "--dataset", "anet", "--json")
    assert (top["feature"]["id"], top["evaluation"]["value"]) == (filled.tsp.id, 0.3585)

    compared = _json("compare", filled.official.id, filled.tsp.id, *url, "--json")
    rows = {(r["method"], r["metric"]): r for r in compared["rows"]}
    assert rows[("gtad", "average_map")]["difference"] == pytest.approx(0.0173)
    assert rows[("gtad", "ar@100")]["value_a"] is None

    missing = _json("videos", *url, "--status", "missing", "--json")
    assert [(v["video_id"], v["reason"]) for v in missing] == [("v3", "HTTP 404")]
    assert len(_json("videos", *url, "--dataset", "anet", "--json")) == 4

    [dataset] = _json("datasets", *url, "--json")
    assert (dataset["name"], dataset["num_videos"], dataset["counts"]) == (
        "anet", 4, {"training": 2, "validation": 2})

    for args in (["list"], ["show", filled.tsp.id[:8]], ["best", "--metric", "bmn.auc"],
                 ["compare", filled.official.id[:8], filled.tsp.id[:8]], ["videos"],
                 ["datasets"]):
        table = runner.invoke(app, [*args, *url])
        assert table.exit_code == 0, table.output
        assert "anet" in table.stdout or "auc" in table.stdout


def test_errors_go_to_stderr_with_exit_2(catalog_url: str,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TSPIPE_CATALOG_URL", catalog_url)  # the default --url
    refused = runner.invoke(app, ["list", "--json"])
    assert refused.exit_code == 2
    assert refused.stdout == ""
    assert "tspipe catalog upgrade" in refused.stderr
    if catalog_url.startswith("postgresql"):
        assert ":postgres@" not in refused.output

    assert runner.invoke(app, ["upgrade"]).exit_code == 0
    assert _json("list", "--json") == []
    nothing = runner.invoke(app, ["best", "--metric", "gtad.average_map", "--json"])
    assert (nothing.exit_code, json.loads(nothing.stdout)) == (1, None)
    assert "no evaluation recorded gtad.average_map" in nothing.stderr
    unknown = runner.invoke(app, ["show", "abcdef"])
    assert unknown.exit_code == 2 and "matches no feature version" in unknown.stderr
    bad = runner.invoke(app, ["videos", "--status", "lost"])
    assert bad.exit_code == 2 and "not one of ok, missing, failed, pending" in bad.stderr


def test_every_command_has_help() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("upgrade", "list", "show", "best", "compare", "videos", "feature-videos",
                    "datasets"):
        helped = runner.invoke(app, [command, "--help"])
        assert helped.exit_code == 0 and "--url" in helped.stdout
        info = next(c for c in app.registered_commands
                    if (c.name or c.callback.__name__) == command)
        assert info.callback.__doc__, command
