"""The fault and bad-input suite: fixtures, and the table ``make reliability`` prints.

Every test here records what it did in the ``ledger`` (a kill survived, a bad input
handled, a concurrent run that lost nothing, a full disk met cleanly); the session ends
with a table of those counts. ``TSPIPE_RELIABILITY=full`` (``make reliability``) runs the
wide version (more kill points and seeds); CI runs the sized-down one.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import NamedTuple

import pytest
from kill_helpers import SECTIONS, STAGES, fingerprint, startup_s, timed_chain
from reliability_helpers import FULL, write_params

_LEDGER: list[tuple[str, str, bool]] = []


class Ledger:
    """What a test survived: ``record(category, kind)`` once the outcome is asserted."""

    categories = ("kill", "bad_input", "full_disk", "concurrent")

    def record(self, category: str, kind: str, ok: bool = True) -> None:
        assert category in self.categories, category
        _LEDGER.append((category, kind, ok))


@pytest.fixture
def ledger() -> Ledger:
    return Ledger()


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


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    if not _LEDGER:
        return
    tr = terminalreporter
    tr.section("tspipe reliability" + (" (full)" if FULL else " (sized down)"))
    by_cat: dict[str, Counter] = {c: Counter() for c in Ledger.categories}
    kinds: dict[str, set[str]] = {c: set() for c in Ledger.categories}
    for cat, kind, ok in _LEDGER:
        by_cat[cat]["ok" if ok else "lost"] += 1
        kinds[cat].add(kind)
    tr.write_line(f"{'what':<12} {'kinds':>6} {'cases':>6} {'handled':>8} {'lost':>5}")
    for cat in Ledger.categories:
        c = by_cat[cat]
        tr.write_line(f"{cat:<12} {len(kinds[cat]):>6} {c['ok'] + c['lost']:>6} "
                      f"{c['ok']:>8} {c['lost']:>5}")
