"""Fixtures of the pretrain tests: one small SynthActions training set per session, and
one intra-op thread in every test (see ``pretrain_helpers.one_thread``)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from pretrain_helpers import SynthSet, make_synth_set, one_thread


@pytest.fixture(scope="session")
def synth_set(tmp_path_factory: pytest.TempPathFactory) -> SynthSet:
    return make_synth_set(tmp_path_factory.mktemp("pretrain-synth"))


@pytest.fixture(autouse=True)
def single_thread() -> Iterator[None]:
    with one_thread():
        yield
