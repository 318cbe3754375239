"""Concatenated feature versions (table feature_version_sources, revision 0003), on SQLite
and PostgreSQL: recording the sources, lineage, validation, CLI, migration."""

from __future__ import annotations

import json

import pytest
from alembic import command
from catalog_helpers import EXTRACT, count_rows, fill, sha
from sqlalchemy import inspect
from typer.testing import CliRunner

from tspipe.catalog import Catalog, current_revision, make_engine, upgrade
from tspipe.catalog.migrate import alembic_config
from tspipe.doors.cli_catalog import app
from tspipe.errors import CatalogError

runner = CliRunner()


def _two_stream(catalog: Catalog):
    """The fixture's two versions as RGB and flow streams, and a version concatenating them."""
    filled = fill(catalog)
    rgb, flow = filled.official, filled.tsp
    both = catalog.register_feature_version(
        dataset_id=filled.dataset_id, checkpoint_sha256=rgb.checkpoint_sha256,
        encoder="i3d+i3d_flow", params={**EXTRACT, "concat": {"rgb": rgb.id, "flow": flow.id}},
        manifest_sha256=sha("d"), code_version="concat-1", feature_dim=4096)
    return rgb, flow, both


def test_sources_are_recorded_in_order_and_shown_in_the_lineage(catalog: Catalog) -> None:
    rgb, flow, both = _two_stream(catalog)
    assert catalog.record_feature_sources(both.id, [("rgb", rgb.id), ("flow", flow.id)]) == 2
    lineage = catalog.show(both.id[:10])
    assert [(s.position, s.stream, s.feature.id) for s in lineage.sources] == [
        (0, "rgb", rgb.id), (1, "flow", flow.id)]
    assert catalog.show(rgb.id).sources == ()
    # the same sources again: the same rows; other ones replace them
    catalog.record_feature_sources(both.id, [("rgb", rgb.id), ("flow", flow.id)])
    assert len(catalog.show(both.id).sources) == 2
    catalog.record_feature_sources(both.id, [("flow", flow.id), ("rgb", rgb.id)])
    assert [s.stream for s in catalog.show(both.id).sources] == ["flow", "rgb"]


def test_bad_sources_are_refused_and_nothing_is_written(catalog: Catalog) -> None:
    rgb, flow, both = _two_stream(catalog)
    with pytest.raises(CatalogError, match="at least two sources"):
        catalog.record_feature_sources(both.id, [("rgb", rgb.id)])
    with pytest.raises(CatalogError, match="its own source"):
        catalog.record_feature_sources(both.id, [("rgb", rgb.id), ("flow", both.id)])
    with pytest.raises(CatalogError, match="flow source"):
        catalog.record_feature_sources(both.id, [("rgb", rgb.id), ("flow", sha("9"))])
    with pytest.raises(CatalogError, match="feature version"):
        catalog.record_feature_sources(sha("8"), [("rgb", rgb.id), ("flow", flow.id)])
    assert catalog.show(both.id).sources == ()


def test_cli_show_lists_the_sources(catalog: Catalog, catalog_url: str) -> None:
    rgb, flow, both = _two_stream(catalog)
    catalog.record_feature_sources(both.id, [("rgb", rgb.id), ("flow", flow.id)])
    shown = runner.invoke(app, ["show", both.id[:12], "--url", catalog_url])
    assert shown.exit_code == 0, shown.output
    assert "sources (concatenated per clip" in shown.output
    assert rgb.id[:12] in shown.output and flow.id[:12] in shown.output
    as_json = runner.invoke(app, ["show", both.id, "--url", catalog_url, "--json"])
    data = json.loads(as_json.output)
    assert [(s["stream"], s["feature"]["id"]) for s in data["sources"]] == [
        ("rgb", rgb.id), ("flow", flow.id)]


def test_downgrade_to_0002_drops_the_sources_and_upgrade_brings_the_table_back(
        catalog_url: str) -> None:
    assert upgrade(catalog_url) == "0004"
    with Catalog(catalog_url) as catalog:
        rgb, flow, both = _two_stream(catalog)
        catalog.record_feature_sources(both.id, [("rgb", rgb.id), ("flow", flow.id)])
    versions = count_rows(catalog_url, "feature_versions")
    engine = make_engine(catalog_url)
    try:
        with engine.begin() as connection:
            command.downgrade(alembic_config(connection), "0002")
        assert current_revision(catalog_url) == "0002"
        assert "feature_version_sources" not in inspect(engine).get_table_names()
        assert count_rows(catalog_url, "feature_versions") == versions
        assert upgrade(catalog_url) == "0004"
        assert count_rows(catalog_url, "feature_version_sources") == 0
        with Catalog(catalog_url) as catalog:
            catalog.record_feature_sources(both.id, [("rgb", rgb.id), ("flow", flow.id)])
            assert len(catalog.show(both.id).sources) == 2
    finally:
        engine.dispose()
