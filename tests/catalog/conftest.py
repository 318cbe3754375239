"""Catalog fixtures: every test runs on SQLite and on PostgreSQL, each from an empty schema.

PostgreSQL comes from TSPIPE_TEST_POSTGRES_URL (e.g.
postgresql+psycopg://postgres:postgres@127.0.0.1:5432/test). Unset, its cases skip with
the reason, except under CI (env CI set), where they fail: CI must never skip them. Each
test gets its own schema (search_path set in the URL), dropped afterwards.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
from catalog_helpers import Filled, fill
from sqlalchemy import text

from tspipe.catalog import Catalog, make_engine, upgrade
from tspipe.catalog.engine import parse_url

POSTGRES_ENV = "TSPIPE_TEST_POSTGRES_URL"


def _postgres_base_url() -> str:
    base = os.environ.get(POSTGRES_ENV)
    if base:
        return base
    reason = (f"{POSTGRES_ENV} is not set (e.g. "
              "postgresql+psycopg://postgres:postgres@127.0.0.1:5432/test)")
    if os.environ.get("CI"):
        pytest.fail(f"{reason}: PostgreSQL catalog tests must run in CI, never skip")
    pytest.skip(reason)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def catalog_url(request: pytest.FixtureRequest, tmp_path) -> Iterator[str]:
    """URL of an empty catalog database (nothing migrated yet)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'catalog.db'}"
        return
    base = parse_url(_postgres_base_url())
    schema = f"tspipe_test_{uuid.uuid4().hex[:12]}"
    admin = make_engine(base)
    try:
        with admin.begin() as connection:
            connection.execute(text(f'CREATE SCHEMA "{schema}"'))
        url = base.update_query_dict({"options": f"-csearch_path={schema}"})
        yield url.render_as_string(hide_password=False)
        with admin.begin() as connection:
            connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    finally:
        admin.dispose()


@pytest.fixture
def catalog(catalog_url: str) -> Iterator[Catalog]:
    upgrade(catalog_url)
    with Catalog(catalog_url) as opened:
        yield opened


@pytest.fixture
def filled(catalog: Catalog) -> Filled:
    return fill(catalog)
