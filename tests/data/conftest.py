"""Fixtures for the annotation tests: where the shared real data lives, and cached reads."""

from __future__ import annotations

from pathlib import Path

import pytest

from tspipe.data.annotations import Annotations, read_tsp_groundtruth

# `shared_data` (tests/conftest.py) is the shared data folder: ../shared/data beside the
# repository, or TSPIPE_SHARED_DATA.


@pytest.fixture(scope="session")
def tsp_dir(shared_data: Path) -> Path:
    """TSP's reference data files (ground truth, metadata, label maps)."""
    path = shared_data / "annotations" / "tsp"
    if not path.is_dir():
        # A failure, not a skip: a skip would hide that no real file was checked.
        pytest.fail(f"no TSP annotation files at {path}; set TSPIPE_SHARED_DATA")
    return path


@pytest.fixture(scope="session")
def label_maps(tsp_dir: Path) -> dict[str, Path]:
    """Label map JSON per dataset prefix of the TSP file names."""
    return {"activitynet_v1-3": tsp_dir / "activitynet_v1-3_action_label_mapping.json",
            "thumos14": tsp_dir / "thumos14_action_label_mapping.json"}


@pytest.fixture(scope="session")
def read_gt(tsp_dir: Path, label_maps: dict[str, Path]):
    """Read a real ground-truth CSV once per session, e.g. ``read_gt("thumos14", "test")``.

    The result is shared: tests must not modify it.
    """
    cache: dict[tuple[str, str], Annotations] = {}

    def read(dataset: str, split: str) -> Annotations:
        if (dataset, split) not in cache:
            cache[dataset, split] = read_tsp_groundtruth(
                tsp_dir / f"{dataset}_{split}_tsp_groundtruth.csv", label_map=label_maps[dataset])
        return cache[dataset, split]

    return read
