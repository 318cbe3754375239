"""The fault and bad-input suite: fixtures, and the table ``make reliability`` prints.

Every test here records what it did in the ``ledger`` (a kill survived, a bad input
handled, a concurrent run that lost nothing, a full disk met cleanly); the session ends
with a table of those counts. ``TSPIPE_RELIABILITY=full`` (``make reliability``) runs the
wide version (more kill points and seeds); CI runs the sized-down one.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import pytest
from kill_helpers import SECTIONS, STAGES, fingerprint, startup_s, timed_chain
from reliability_helpers import FULL, write_params


class Ledger:
    """What a test survived: ``record(category, kind)`` once the outcome is asserted.
    The rows go to ``config.tspipe_ledger`` (tests/conftest.py prints the table, and
    gathers the rows of pytest-xdist's workers)."""

    def __init__(self, config: pytest.Config) -> None:
        self._rows, self._categories = config.tspipe_ledger, config.tspipe_ledger_categories

    def record(self, category: str, kind: str, ok: bool = True) -> None:
        assert category in self._categories, category
        self._rows.append((category, kind, ok))


@pytest.fixture
def ledger(request) -> Ledger:
    return Ledger(request.config)


@pytest.fixture(scope="session")
def full_suite() -> bool:
    """True under ``TSPIPE_RELIABILITY=full``: more kill points, more seeds."""
    return FULL


class Reference(NamedTuple):
    root: Path  # a tiny run directory every stage ran in, uninterrupted
    fingerprint: dict
    times: dict[str, float]  # per stage, wall seconds of `tspipe stage NAME` (estimated)
    startup_s: float  # of a tspipe command, before any stage code


@pytest.fixture(scope="session")
def reference(tmp_path_factory) -> Reference:
    """Every stage (:data:`kill_helpers.STAGES`) once, uninterrupted, through
    ``tspipe stage``: what a faulted-then-resumed run must end up equal to."""
    root = tmp_path_factory.mktemp("reference") / "run"
    write_params(root, **SECTIONS)
    times = timed_chain(root, STAGES)
    return Reference(root, fingerprint(root), times, startup_s(root))
