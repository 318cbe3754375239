"""Fixtures for stage tests."""

from __future__ import annotations

import pytest
from stage_helpers import VideoServer


@pytest.fixture
def video_server(tmp_path):
    served = tmp_path / "served"
    (served / "videos").mkdir(parents=True)
    with VideoServer(served) as server:
        yield server
