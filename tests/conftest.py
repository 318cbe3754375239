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


# The longest files (their longest test under `make test`'s 2 processes, seconds: the
# stack's schedule 139-330, kill in every stage 109-170, dvc agree 146-218, the pipeline
# flow 83-110) go first: each worker takes whole files in this order, and a long file started
# last would leave one worker finishing the run alone.
_LONGEST_FIRST = ("stack/test_stack_schedule.py", "reliability/test_kills.py",
                  "doors/test_dvc.py", "doors/test_pipeline_flow.py")


def pytest_collection_modifyitems(session, config, items) -> None:
    def rank(item) -> int:
        path = item.path.relative_to(REPO / "tests").as_posix() \
            if item.path.is_relative_to(REPO / "tests") else ""
        return _LONGEST_FIRST.index(path) if path in _LONGEST_FIRST else len(_LONGEST_FIRST)

    items.sort(key=rank)  # stable: the rest keep their order


# --- the reliability suite's table (tests/reliability: its `ledger` fixture records rows) ---
# Here, not in tests/reliability/conftest.py: under pytest-xdist the controller, which
# prints the summary, loads only this file; each worker sends its rows at its end.
_LEDGER_CATEGORIES = ("kill", "bad_input", "full_disk", "concurrent")


def pytest_configure(config) -> None:
    config.tspipe_ledger = []  # (category, kind, handled) of every case a test survived
    config.tspipe_ledger_categories = _LEDGER_CATEGORIES


def pytest_sessionfinish(session) -> None:
    workeroutput = getattr(session.config, "workeroutput", None)  # an xdist worker
    if workeroutput is not None:
        workeroutput["tspipe_ledger"] = [list(row) for row in session.config.tspipe_ledger]


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error) -> None:  # xdist's controller: a worker finished
    rows = getattr(node, "workeroutput", {}).get("tspipe_ledger", [])
    node.config.tspipe_ledger.extend(tuple(row) for row in rows)


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    from collections import Counter

    rows = config.tspipe_ledger
    if not rows:
        return
    tr = terminalreporter
    full = os.environ.get("TSPIPE_RELIABILITY", "").lower() == "full"
    tr.section("tspipe reliability" + (" (full)" if full else " (sized down)"))
    by_cat: dict[str, Counter] = {c: Counter() for c in _LEDGER_CATEGORIES}
    kinds: dict[str, set[str]] = {c: set() for c in _LEDGER_CATEGORIES}
    for cat, kind, ok in rows:
        by_cat[cat]["ok" if ok else "lost"] += 1
        kinds[cat].add(kind)
    tr.write_line(f"{'what':<12} {'kinds':>6} {'cases':>6} {'handled':>8} {'lost':>5}")
    for cat in _LEDGER_CATEGORIES:
        c = by_cat[cat]
        tr.write_line(f"{cat:<12} {len(kinds[cat]):>6} {c['ok'] + c['lost']:>6} "
                      f"{c['ok']:>8} {c['lost']:>5}")
