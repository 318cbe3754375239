"""Test-wide isolation: Prefect, MLflow and the catalog never touch the developer's state."""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

# Before anything imports prefect: a private PREFECT_HOME (its ephemeral API database),
# no API server, no telemetry.
_PREFECT_HOME = tempfile.mkdtemp(prefix="tspipe-test-prefect-")
os.environ["PREFECT_HOME"] = _PREFECT_HOME
os.environ.pop("PREFECT_API_URL", None)
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ["PREFECT_LOGGING_LEVEL"] = "WARNING"
# The ephemeral API server gets 20 s to start by default: not always enough on a busy
# 2-core machine (a `tspipe run` subprocess timed out there).
os.environ["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"] = "120"
os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
for _var in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME", "TSPIPE_CATALOG_URL",
             "TSPIPE_DEVICE", "TSPIPE_OPENLINEAGE_URL"):
    os.environ.pop(_var, None)

REPO = Path(__file__).resolve().parents[1]
POSTGRES_ENV = "TSPIPE_TEST_POSTGRES_URL"


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """URL of an empty PostgreSQL schema of the test's own (search_path set in the URL),
    dropped afterwards. The server comes from TSPIPE_TEST_POSTGRES_URL (e.g.
    postgresql+psycopg://postgres:postgres@127.0.0.1:5432/test); unset, the test skips
    with the reason, except under CI (env CI set), where it fails: CI never skips them."""
    from sqlalchemy import text

    from tspipe.catalog import make_engine
    from tspipe.catalog.engine import parse_url

    if not os.environ.get(POSTGRES_ENV):
        reason = (f"{POSTGRES_ENV} is not set (e.g. "
                  "postgresql+psycopg://postgres:postgres@127.0.0.1:5432/test)")
        if os.environ.get("CI"):
            pytest.fail(f"{reason}: PostgreSQL tests must run in CI, never skip")
        pytest.skip(reason)
    base = parse_url(os.environ[POSTGRES_ENV])
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


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real annotation files and sample videos (../shared/data beside the repo)."""
    candidates = [Path(os.environ["TSPIPE_SHARED_DATA"])] if "TSPIPE_SHARED_DATA" in os.environ \
        else [REPO.parent / "shared" / "data", Path("/work/shared/data")]
    for path in candidates:
        if path.is_dir():
            return path
    pytest.fail(f"shared test data not found at {candidates}; set TSPIPE_SHARED_DATA")


@pytest.fixture
def one_torch_thread():
    """One intra-op torch thread for the test (numbers that depend on the thread count,
    and no fight over the machine's cores), restored afterwards."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
