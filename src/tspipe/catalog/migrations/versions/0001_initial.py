"""initial catalog: datasets, videos, checkpoints, feature_versions, evaluations

Written by hand to match tspipe.catalog.schema (tests/catalog compares the two). Constraint
names follow schema.NAMING_CONVENTION; the allowed values of the CHECKs are frozen here, as
a migration must not change when the ORM classes do.

Revision ID: 0001
Revises:
Create Date: 2025-01-01 00:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "datasets",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("annotation_sha256", sa.String(length=64), nullable=False),
        sa.Column("format", sa.String(length=32), nullable=False),
        sa.Column("subsets", sa.JSON(), nullable=False),
        sa.Column("num_videos", sa.Integer(), nullable=False),
        sa.Column("num_segments", sa.Integer(), nullable=False),
        sa.Column("num_classes", sa.Integer(), nullable=False),
        sa.Column("counts", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_datasets")),
        sa.UniqueConstraint("name", "annotation_sha256",
                            name=op.f("uq_datasets_name_annotation_sha256")),
    )
    op.create_table(
        "videos",
        sa.Column("dataset_id", sa.Integer(), nullable=False),
        sa.Column("video_id", sa.String(length=255), nullable=False),
        sa.Column("subset", sa.String(length=32), nullable=True),
        sa.Column("source", sa.Text(), nullable=True),
        sa.Column("sha256", sa.String(length=64), nullable=True),
        sa.Column("duration", sa.Float(), nullable=True),
        sa.Column("fps", sa.Float(), nullable=True),
        sa.Column("num_frames", sa.Integer(), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("status IN ('ok', 'missing', 'failed', 'pending')",
                           name=op.f("ck_videos_status")),
        sa.ForeignKeyConstraint(["dataset_id"], ["datasets.id"],
                                name=op.f("fk_videos_dataset_id_datasets")),
        sa.PrimaryKeyConstraint("dataset_id", "video_id", name=op.f("pk_videos")),
    )
    op.create_table(
        "checkpoints",
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("arch", sa.String(length=64), nullable=False),
        sa.Column("origin", sa.String(length=16), nullable=False),
        sa.Column("uri", sa.Text(), nullable=True),
        sa.Column("mlflow_run_id", sa.String(length=64), nullable=True),
        sa.Column("params", sa.JSON(), nullable=False),
        sa.Column("parent_sha256", sa.String(length=64), nullable=True),
        sa.Column("dataset_id", sa.Integer(), nullable=True),
        sa.Column("git_commit", sa.String(length=64), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("origin IN ('official', 'pretrain', 'scratch')",
                           name=op.f("ck_checkpoints_origin")),
        sa.ForeignKeyConstraint(["dataset_id"], ["datasets.id"],
                                name=op.f("fk_checkpoints_dataset_id_datasets")),
        sa.ForeignKeyConstraint(["parent_sha256"], ["checkpoints.sha256"],
                                name=op.f("fk_checkpoints_parent_sha256_checkpoints")),
        sa.PrimaryKeyConstraint("sha256", name=op.f("pk_checkpoints")),
    )
    op.create_table(
        "feature_versions",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("dataset_id", sa.Integer(), nullable=False),
        sa.Column("checkpoint_sha256", sa.String(length=64), nullable=False),
        sa.Column("encoder", sa.String(length=64), nullable=False),
        sa.Column("params", sa.JSON(), nullable=False),
        sa.Column("manifest_sha256", sa.String(length=64), nullable=False),
        sa.Column("code_version", sa.String(length=64), nullable=False),
        sa.Column("storage_uri", sa.Text(), nullable=True),
        sa.Column("dvc_md5", sa.String(length=64), nullable=True),
        sa.Column("mlflow_run_id", sa.String(length=64), nullable=True),
        sa.Column("git_commit", sa.String(length=64), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("num_videos", sa.Integer(), nullable=True),
        sa.Column("feature_dim", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("status IN ('pending', 'complete', 'failed')",
                           name=op.f("ck_feature_versions_status")),
        sa.ForeignKeyConstraint(["checkpoint_sha256"], ["checkpoints.sha256"],
                                name=op.f("fk_feature_versions_checkpoint_sha256_checkpoints")),
        sa.ForeignKeyConstraint(["dataset_id"], ["datasets.id"],
                                name=op.f("fk_feature_versions_dataset_id_datasets")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_feature_versions")),
    )
    op.create_table(
        "evaluations",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("feature_version_id", sa.String(length=64), nullable=False),
        sa.Column("method", sa.String(length=32), nullable=False),
        sa.Column("dataset_id", sa.Integer(), nullable=False),
        sa.Column("subset", sa.String(length=32), nullable=False),
        sa.Column("metric", sa.String(length=64), nullable=False),
        sa.Column("value", sa.Float(), nullable=False),
        sa.Column("mlflow_run_id", sa.String(length=64), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["dataset_id"], ["datasets.id"],
                                name=op.f("fk_evaluations_dataset_id_datasets")),
        sa.ForeignKeyConstraint(["feature_version_id"], ["feature_versions.id"],
                                name=op.f("fk_evaluations_feature_version_id_feature_versions")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_evaluations")),
        sa.UniqueConstraint("feature_version_id", "method", "subset", "metric",
                            name=op.f("uq_evaluations_feature_version_id_method_subset_metric")),
    )


def downgrade() -> None:
    op.drop_table("evaluations")
    op.drop_table("feature_versions")
    op.drop_table("checkpoints")
    op.drop_table("videos")
    op.drop_table("datasets")
