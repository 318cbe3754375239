"""Alembic scripts of the catalog (a package so that they ship in the wheel)."""
