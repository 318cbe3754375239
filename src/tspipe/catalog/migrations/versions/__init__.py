"""Catalog revisions, NNNN_<what>.py; Alembic skips this file."""
