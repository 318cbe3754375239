"""feature_videos: each video's outcome in a feature version (ok / failed, reused, shard)

Written by hand to match tspipe.catalog.schema (tests/catalog compares the two). Constraint
names follow schema.NAMING_CONVENTION; the allowed statuses are frozen here, as a
migration must not change when the ORM classes do.

Revision ID: 0002
Revises: 0001
Create Date: 2025-01-02 00:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "feature_videos",
        sa.Column("feature_version_id", sa.String(length=64), nullable=False),
        sa.Column("video_id", sa.String(length=255), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("num_clips", sa.Integer(), nullable=True),
        sa.Column("feature_dim", sa.Integer(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("reused_from", sa.String(length=64), nullable=True),
        sa.Column("shard", sa.Text(), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("status IN ('ok', 'failed')",
                           name=op.f("ck_feature_videos_status")),
        sa.ForeignKeyConstraint(["feature_version_id"], ["feature_versions.id"],
                                name=op.f("fk_feature_videos_feature_version_id_feature_versions")),
        sa.PrimaryKeyConstraint("feature_version_id", "video_id",
                                name=op.f("pk_feature_videos")),
    )


def downgrade() -> None:
    op.drop_table("feature_videos")
