"""Prefect 3 flows: one per stage and ``tspipe_pipeline`` chaining them. Thin doors.

Entry points for deployments are the top-level ``flows/*.py`` files (see
``flows/prefect.yaml``); they import from here so that the flows ship with the package.
"""

import os

# Without this, Prefect's ephemeral server logs an ERROR line about telemetry offline.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
