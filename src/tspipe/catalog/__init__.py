"""The feature catalog: datasets, videos, checkpoints, feature versions and their scores.

SQLite by default, PostgreSQL via ``TSPIPE_CATALOG_URL``. The schema is migrated by
``upgrade(url)`` (``tspipe catalog upgrade``); the API returns plain records from
``tspipe.catalog.records``, never ORM objects.

Modules:

- ``api``: ``Catalog``, the one way in: registrations (one transaction each) and queries
- ``writes``: the INSERT ... ON CONFLICT statements of the registrations
- ``queries``: the read-side queries, each over an open session
- ``records``: the plain dataclasses the API takes and returns
- ``schema``: the tables (SQLAlchemy typed mappings, constraint naming convention)
- ``_convert``: ORM rows to records, and the checks on values before they are written
- ``engine``: URLs and engines (SQLite by default, PostgreSQL), passwords hidden
- ``migrate``: ``upgrade``, ``current_revision``, ``head_revision`` (Alembic)
- ``migrations/``: the Alembic environment and the revisions, shipped in the package

The ``tspipe catalog`` commands are a door: ``tspipe.doors.cli_catalog``.
"""

from tspipe.catalog.api import Catalog
from tspipe.catalog.engine import DEFAULT_URL, hidden_url, make_engine
from tspipe.catalog.migrate import current_revision, head_revision, upgrade
from tspipe.catalog.queries import split_metric
from tspipe.catalog.records import (
    BestResult,
    CheckpointRecord,
    Comparison,
    ComparisonRow,
    DatasetRecord,
    EvaluationRecord,
    FeatureLineage,
    FeatureSourceRecord,
    FeatureVersionRecord,
    FeatureVideoCounts,
    FeatureVideoRecord,
    FeatureVideoRow,
    VideoRecord,
    VideoRow,
    to_jsonable,
)

__all__ = [
    "DEFAULT_URL",
    "BestResult",
    "Catalog",
    "CheckpointRecord",
    "Comparison",
    "ComparisonRow",
    "DatasetRecord",
    "EvaluationRecord",
    "FeatureLineage",
    "FeatureSourceRecord",
    "FeatureVersionRecord",
    "FeatureVideoCounts",
    "FeatureVideoRecord",
    "FeatureVideoRow",
    "VideoRecord",
    "VideoRow",
    "current_revision",
    "head_revision",
    "hidden_url",
    "make_engine",
    "split_metric",
    "to_jsonable",
    "upgrade",
]
