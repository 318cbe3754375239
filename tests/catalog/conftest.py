"""Catalog fixtures: every test runs on SQLite and on PostgreSQL, each from an empty schema.

PostgreSQL is the ``postgres_url`` fixture of tests/conftest.py (TSPIPE_TEST_POSTGRES_URL;
each test its own schema, dropped afterwards; never skipped in CI).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from catalog_helpers import Filled, fill

from tspipe.catalog import Catalog, upgrade


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def catalog_url(request: pytest.FixtureRequest, tmp_path) -> Iterator[str]:
    """URL of an empty catalog database (nothing migrated yet)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'catalog.db'}"
        return
    yield request.getfixturevalue("postgres_url")


@pytest.fixture
def catalog(catalog_url: str) -> Iterator[Catalog]:
    upgrade(catalog_url)
    with Catalog(catalog_url) as opened:
        yield opened


@pytest.fixture
def filled(catalog: Catalog) -> Filled:
    return fill(catalog)
