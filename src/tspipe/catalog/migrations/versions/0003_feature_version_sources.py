"""feature_version_sources: the versions a feature version concatenates (I3D two-stream)

Written by hand to match tspipe.catalog.schema (tests/catalog compares the two). Constraint
names follow schema.NAMING_CONVENTION.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23 00:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "feature_version_sources",
        sa.Column("feature_version_id", sa.String(length=64), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("source_id", sa.String(length=64), nullable=False),
        sa.Column("stream", sa.String(length=32), nullable=False),
        sa.ForeignKeyConstraint(
            ["feature_version_id"], ["feature_versions.id"],
            name=op.f("fk_feature_version_sources_feature_version_id_feature_versions")),
        sa.ForeignKeyConstraint(
            ["source_id"], ["feature_versions.id"],
            name=op.f("fk_feature_version_sources_source_id_feature_versions")),
        sa.PrimaryKeyConstraint("feature_version_id", "position",
                                name=op.f("pk_feature_version_sources")),
    )


def downgrade() -> None:
    op.drop_table("feature_version_sources")
