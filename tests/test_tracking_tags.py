"""MLflow tags that name what a run computed: the params hash covers what changes numbers."""

from __future__ import annotations

from tspipe.config import load_params
from tspipe.stages import STAGES
from tspipe.tracking import numbers_hash


def test_params_hash_ignores_where_results_are_recorded(repo_root, monkeypatch):
    plain = load_params(repo_root / "params.yaml")
    monkeypatch.setenv("TSPIPE_CATALOG_URL", "postgresql+psycopg://tspipe@127.0.0.1:5432/c")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    elsewhere = load_params(repo_root / "params.yaml")
    assert elsewhere.catalog.url != plain.catalog.url  # the overrides did apply
    assert numbers_hash(elsewhere) == numbers_hash(plain)
    for stage in STAGES.values():
        assert numbers_hash(elsewhere, stage.sections) == numbers_hash(plain, stage.sections)
    reseeded = plain.model_copy(update={"localize": plain.localize.model_copy(
        update={"seed": plain.localize.seed + 1})})
    assert numbers_hash(reseeded) != numbers_hash(plain)
    evaluate = STAGES["evaluate"].sections
    assert numbers_hash(reseeded, evaluate) != numbers_hash(plain, evaluate)
    assert numbers_hash(reseeded, STAGES["ingest"].sections) == \
        numbers_hash(plain, STAGES["ingest"].sections)
