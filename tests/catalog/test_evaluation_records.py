"""Evaluations are append-only records (revision 0004): other localize params add rows,
the same ones add nothing, queries choose among them; on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from alembic import command
from catalog_helpers import count_rows, fill

from tspipe.catalog import Catalog, make_engine, upgrade
from tspipe.catalog.migrate import alembic_config
from tspipe.errors import CatalogError

H0, H1 = "a0" * 32, "b1" * 32


def _evaluate(catalog: Catalog, fid: str, seed: int, auc: float, run: str) -> None:
    catalog.record_evaluations(fid, method="bmn", subset="validation",
                               metrics={"auc": auc, "ar@100": auc + 0.125},
                               params={"seed": seed, "epochs": 9}, params_hash=(H0, H1)[seed],
                               code_version="eval-1", mlflow_run_id=run)


def _downgrade(url: str, revision: str) -> None:
    engine = make_engine(url)
    try:
        with engine.begin() as connection:
            command.downgrade(alembic_config(connection), revision)
    finally:
        engine.dispose()


def test_rerun_with_other_params_adds_rows_and_queries_choose(catalog: Catalog,
                                                            catalog_url: str) -> None:
    filled = fill(catalog)
    tsp, official = filled.tsp.id, filled.official.id
    before = count_rows(catalog_url, "evaluations")
    _evaluate(catalog, tsp, 0, 0.5, "run-seed0")
    _evaluate(catalog, official, 0, 0.625, "run-k-seed0")
    _evaluate(catalog, tsp, 1, 0.75, "run-seed1")
    assert count_rows(catalog_url, "evaluations") == before + 6
    _evaluate(catalog, tsp, 0, 0.875, "run-seed0-again")  # same params and code: same fact
    assert count_rows(catalog_url, "evaluations") == before + 6

    # Default: the latest record of each (version, method, subset).
    latest = [e for e in catalog.show(tsp).evaluations if e.method == "bmn"]
    assert {(e.metric, e.value, e.params_hash) for e in latest} == {
        ("auc", 0.75, H1), ("ar@100", 0.875, H1)}
    assert latest[0].params == {"seed": 1, "epochs": 9} and latest[0].code_version == "eval-1"
    seed0 = [e for e in catalog.show(tsp, params_hash=H0[:8]).evaluations]
    assert {(e.metric, e.value, e.mlflow_run_id) for e in seed0} == {
        ("auc", 0.5, "run-seed0"), ("ar@100", 0.625, "run-seed0")}
    every = catalog.show(tsp, every=True)
    assert sorted(e.params_hash for e in every.evaluations if e.metric == "auc") == ["", H0, H1]
    assert "run-seed0" in every.mlflow_run_ids and "run-seed1" in every.mlflow_run_ids

    # best: the latest of each version (tsp 0.75 beats official 0.625); by params hash, the
    # seed-0 records (official 0.625 beats tsp 0.5); --all: the best record ever.
    assert catalog.best("bmn.auc").feature.id == tsp
    assert catalog.best("bmn.auc", params_hash=H0).feature.id == official
    top = catalog.best("bmn.auc", every=True)
    assert (top.feature.id, top.evaluation.value, top.evaluation.params_hash) == (tsp, 0.75, H1)
    assert catalog.best("bmn.auc", params_hash="ffff") is None
    with pytest.raises(CatalogError, match="not both"):
        catalog.best("bmn.auc", params_hash=H0, every=True)
    with pytest.raises(CatalogError, match="at least 4 hex digits"):
        catalog.show(tsp, params_hash="a0")
    with pytest.raises(CatalogError, match="params given without their params_hash"):
        catalog.record_evaluations(tsp, method="bmn", subset="validation",
                                   metrics={"auc": 0.5}, params={"seed": 3})
    # Same params hash on both sides: a comparison at equal params.
    pair = catalog.compare(official, tsp, params_hash=H0)
    assert [(r.metric, r.value_a, r.value_b) for r in pair.rows if r.method == "bmn"] == [
        ("ar@100", 0.75, 0.625), ("auc", 0.625, 0.5)]


def test_migration_keeps_old_rows_and_downgrade_keeps_the_newest(catalog_url: str) -> None:
    upgrade(catalog_url)
    with Catalog(catalog_url) as catalog:
        filled = fill(catalog)
    rows = count_rows(catalog_url, "evaluations")
    _downgrade(catalog_url, "0003")
    assert count_rows(catalog_url, "evaluations") == rows
    upgrade(catalog_url)
    with Catalog(catalog_url) as catalog:
        old = catalog.show(filled.tsp.id).evaluations
        assert {(e.metric, e.value, e.params_hash, e.code_version, e.params) for e in old} == {
            ("average_map", 0.3585, "", "", None), ("ar@100", 0.7512, "", "", None),
            ("auc", 0.6890, "", "", None)}
        _evaluate(catalog, filled.tsp.id, 0, 0.5, "r0")
        _evaluate(catalog, filled.tsp.id, 1, 0.75, "r1")
    assert count_rows(catalog_url, "evaluations") == rows + 4
    # The old key holds one row per metric: the newest stays (seed 1's); bmn's ar@100 is
    # a new metric.
    _downgrade(catalog_url, "0003")
    assert count_rows(catalog_url, "evaluations") == rows + 1
    upgrade(catalog_url)
    with Catalog(catalog_url) as catalog:
        kept = {e.metric: e.value for e in catalog.show(filled.tsp.id).evaluations
                if e.method == "bmn"}
    assert kept == {"auc": 0.75, "ar@100": 0.875}
