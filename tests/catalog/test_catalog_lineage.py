"""`tspipe catalog lineage ID`: the chain from annotations to every evaluation, as JSON and
as a tree, on SQLite and PostgreSQL."""

from __future__ import annotations

import json

from catalog_helpers import fill, sha
from typer.testing import CliRunner

from tspipe.catalog import Catalog, upgrade
from tspipe.doors.cli import app

runner = CliRunner()


def test_lineage_walks_from_annotations_to_every_evaluation(catalog_url: str) -> None:
    upgrade(catalog_url)
    with Catalog(catalog_url) as catalog:
        filled = fill(catalog)
        rgb, flow = filled.official, filled.tsp
        both = catalog.register_feature_version(
            dataset_id=filled.dataset_id, checkpoint_sha256=sha("f"), encoder="concat",
            params={"streams": ["rgb", "flow"]}, manifest_sha256=sha("d"),
            code_version="concat-1")
        catalog.record_feature_sources(both.id, [("rgb", rgb.id), ("flow", flow.id)])
        catalog.record_evaluations(filled.tsp.id, method="bmn", subset="validation",
                                   metrics={"auc": 0.75, "ar@100": 0.875},
                                   params={"localize": {"seed": 1}}, params_hash="5eed" * 16,
                                   code_version="eval-2", mlflow_run_id="run-seed1")
    url = ("--url", catalog_url)

    shown = runner.invoke(app, ["catalog", "lineage", filled.tsp.id[:10], *url, "--json"])
    assert shown.exit_code == 0, shown.output
    chain = json.loads(shown.stdout)
    assert chain["feature_version"]["id"] == filled.tsp.id
    assert chain["annotations"]["annotation_sha256"] == sha("a")
    assert chain["annotations"]["video_status"] == {"failed": 1, "missing": 1, "ok": 2}
    # The checkpoint, then what it started from, each with its params and dataset.
    assert [(c["sha256"], c["origin"]) for c in chain["checkpoints"]] == [
        (sha("f"), "pretrain"), (sha("e"), "official")]
    assert chain["checkpoints"][0]["params"] == {"epochs": 8, "lr": 0.01}
    assert chain["checkpoints"][0]["trained_on"]["name"] == "anet"
    # Every evaluation record, grouped, with the params behind it (old ones: none).
    records = {(e["method"], e["params_hash"]): e for e in chain["evaluations"]}
    assert set(records) == {("gtad", ""), ("bmn", ""), ("bmn", "5eed" * 16)}
    assert records[("bmn", "5eed" * 16)]["metrics"] == {"auc": 0.75, "ar@100": 0.875}
    assert records[("bmn", "5eed" * 16)]["params"] == {"localize": {"seed": 1}}
    assert records[("gtad", "")]["mlflow_run_id"] == "run-gtad-tsp"
    assert "run-seed1" in chain["mlflow_run_ids"]

    # A concatenation shows each source's own chain.
    concat = json.loads(runner.invoke(app, ["catalog", "lineage", both.id, *url,
                                            "--json"]).stdout)
    assert [(s["stream"], s["lineage"]["feature_version"]["id"]) for s in concat["sources"]] \
        == [("rgb", rgb.id), ("flow", flow.id)]

    tree = runner.invoke(app, ["catalog", "lineage", filled.tsp.id, *url],
                         env={"COLUMNS": "250"})
    assert tree.exit_code == 0, tree.output
    for text in (f"feature version {filled.tsp.id}", "annotations anet sha256 aaaaaaaaaaaa",
                 "started from eeeeeeeeeeee", '{"localize": {"seed": 1}}', "run-seed1",
                 "videos: 1 failed, 1 missing, 2 ok"):
        assert text in tree.stdout, text
    unknown = runner.invoke(app, ["catalog", "lineage", "ffff0000", *url])
    assert unknown.exit_code == 2 and "matches no feature version" in unknown.stderr
