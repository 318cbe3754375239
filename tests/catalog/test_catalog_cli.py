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
    assert "revision 0004" in upgraded.stdout
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


def test_scores_are_chosen_by_params(catalog_url: str) -> None:
    """`show` prints the params behind each score; `best` / `show` / `compare` take the
    latest evaluation, one params hash, or all of them."""
    runner.invoke(app, ["upgrade", "--url", catalog_url])
    url = ("--url", catalog_url)
    with Catalog(catalog_url) as catalog:
        filled = fill(catalog)
        catalog.record_evaluations(filled.official.id, method="bmn", subset="validation",
                                   metrics={"auc": 0.75}, params={"localize": {"seed": 1}},
                                   params_hash="5eed" * 16, code_version="c" * 64)
    shown = runner.invoke(app, ["show", filled.official.id[:8], *url], env={"COLUMNS": "250"})
    assert shown.exit_code == 0, shown.output
    assert "5eed5eed5eed" in shown.stdout and '{"localize": {"seed": 1}}' in shown.stdout
    assert "(not recorded)" in shown.stdout  # the gtad score kept from before params were
    assert _json("best", "--metric", "bmn.auc", *url, "--json")["evaluation"]["value"] == 0.75
    legacy = _json("show", filled.official.id, "--params-hash", "5eed", *url, "--json")
    assert [e["metric"] for e in legacy["evaluations"]] == ["auc"]
    every = _json("show", filled.official.id, "--all", *url, "--json")
    assert sorted(e["value"] for e in every["evaluations"] if e["metric"] == "auc") == [
        0.6712, 0.75]
    compared = _json("compare", filled.official.id, filled.tsp.id, "--all", *url, "--json")
    assert len([r for r in compared["rows"] if r["metric"] == "auc"]) == 2
    both = runner.invoke(app, ["best", "--metric", "bmn.auc", "--all", "--params-hash",
                               "5eed", *url])
    assert both.exit_code == 2 and "not both" in both.stderr


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
