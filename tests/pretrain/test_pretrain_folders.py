"""A training's folders: the swap replaces the finished training only with a complete one,
and a crash at each point of it (or of setting a training aside) is recovered on the next
run without losing the finished training."""

from __future__ import annotations

import pytest

from tspipe.paths import RunPaths
from tspipe.pretrain.folders import (
    TrainingFolders,
    is_complete,
    mark_complete,
    read_marker,
    recover,
    set_aside,
    start,
    swap_in,
)


@pytest.fixture
def dirs(tmp_path) -> TrainingFolders:
    final = RunPaths.at(tmp_path).for_variant("main").model_dir("pretrain")
    return TrainingFolders(final, RunPaths.staging_dir(final), RunPaths.retired_dir(final))


def training(folder, key: str, weights: str) -> None:
    """A complete training of ``key`` whose encoder file holds ``weights``."""
    start(folder, key)
    (folder / "checkpoint.pt").write_text(weights)
    mark_complete(folder, key)


def weights(folder) -> str:
    return (folder / "checkpoint.pt").read_text()


def test_folder_names_sit_beside_the_declared_output(dirs):
    assert dirs.final.name == "main"
    assert dirs.staging == dirs.final.parent / ".main.next"
    assert dirs.retired == dirs.final.parent / ".main.old"


def test_swap_replaces_the_finished_training_with_the_complete_one(dirs):
    training(dirs.final, "a", "A")
    training(dirs.staging, "b", "B")
    swap_in(dirs)
    assert weights(dirs.final) == "B" and is_complete(dirs.final, "b")
    assert not dirs.staging.exists() and not dirs.retired.exists()


def test_swap_without_a_former_training(dirs):
    training(dirs.staging, "b", "B")
    swap_in(dirs)
    assert weights(dirs.final) == "B" and not dirs.staging.exists()


def test_crash_between_the_renames_finishes_the_swap(dirs):
    training(dirs.final, "a", "A")
    training(dirs.staging, "b", "B")
    dirs.final.replace(dirs.retired)  # the first rename, then the crash
    assert recover(dirs)
    assert weights(dirs.final) == "B"
    assert not dirs.staging.exists() and not dirs.retired.exists()


def test_crash_before_the_retired_training_is_removed(dirs):
    training(dirs.retired, "a", "A")
    training(dirs.final, "b", "B")
    assert recover(dirs) == [f"removed the replaced training {dirs.retired}"]
    assert weights(dirs.final) == "B" and not dirs.retired.exists()


def test_an_incomplete_staging_never_replaces_the_retired_training(dirs):
    training(dirs.retired, "a", "A")
    start(dirs.staging, "b")  # killed while training
    recover(dirs)
    assert weights(dirs.final) == "A" and read_marker(dirs.staging)["key"] == "b"
    assert not dirs.retired.exists()


def test_nothing_to_recover(dirs):
    training(dirs.final, "a", "A")
    start(dirs.staging, "b")
    assert recover(dirs) == []
    assert weights(dirs.final) == "A" and dirs.staging.exists()


def test_set_aside_keeps_the_training_and_a_crash_after_it_puts_it_back(dirs):
    training(dirs.final, "a", "A")
    start(dirs.staging, "b")  # an unfinished training: worth less than the finished one
    assert set_aside(dirs) == f"set the training aside in {dirs.staging}"
    assert not dirs.final.exists() and weights(dirs.staging) == "A"
    recover(dirs)  # the crash came before the disabled marker was written
    assert weights(dirs.final) == "A" and not dirs.staging.exists()


def test_set_aside_removes_a_folder_without_a_training(dirs):
    start(dirs.final, "a")  # a run.json and nothing else
    (dirs.final / "corpus_groundtruth.parquet").write_text("table")
    assert set_aside(dirs) is None
    assert not dirs.final.exists() and not dirs.retired.exists()


def test_an_unreadable_marker_names_no_run(dirs, caplog):
    training(dirs.final, "a", "A")
    (dirs.final / "run.json").write_text("{torn")
    assert read_marker(dirs.final) == {} and not is_complete(dirs.final)
    assert "unreadable run marker" in caplog.text
