"""evaluations: append-only records with the params and code behind each score

Each row gains ``params_hash``, ``params`` (JSON) and ``code_version``; the unique key
becomes (feature version, method, subset, metric, params hash, code version), so a run
with other localize params adds rows instead of overwriting. Rows already there keep their
values, with '' for hash and code version (unknown). Written by hand to match
tspipe.catalog.schema (tests/catalog compares the two).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-05 00:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_OLD_KEY = ("feature_version_id", "method", "subset", "metric")
_OLD_NAME = "uq_evaluations_feature_version_id_method_subset_metric"
_NEW_NAME = "uq_evaluations_record"


def upgrade() -> None:
    # batch: SQLite cannot drop a constraint in place (the table is copied and renamed).
    with op.batch_alter_table("evaluations") as batch:
        batch.add_column(sa.Column("params_hash", sa.String(length=64), nullable=False,
                                   server_default=""))
        batch.add_column(sa.Column("params", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("code_version", sa.String(length=64), nullable=False,
                                   server_default=""))
        batch.drop_constraint(op.f(_OLD_NAME), type_="unique")
        batch.create_unique_constraint(op.f(_NEW_NAME),
                                       [*_OLD_KEY, "params_hash", "code_version"])


def downgrade() -> None:
    # The old key holds one row per (version, method, subset, metric): keep the newest.
    evaluations = sa.table("evaluations", sa.column("id", sa.Integer),
                           *(sa.column(name, sa.String) for name in _OLD_KEY))
    newer = evaluations.alias("newer")
    op.execute(evaluations.delete().where(sa.exists().where(
        *(newer.c[name] == evaluations.c[name] for name in _OLD_KEY),
        newer.c.id > evaluations.c.id)))
    with op.batch_alter_table("evaluations") as batch:
        batch.drop_constraint(op.f(_NEW_NAME), type_="unique")
        batch.create_unique_constraint(op.f(_OLD_NAME), list(_OLD_KEY))
        batch.drop_column("code_version")
        batch.drop_column("params")
        batch.drop_column("params_hash")
