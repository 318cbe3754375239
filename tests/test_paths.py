"""How records name files: relative inside the run directory (it can move), absolute
outside it, and read back against wherever the run directory is now."""

from __future__ import annotations

from pathlib import Path

import pytest

from tspipe.paths import RunPaths


@pytest.mark.parametrize(("given", "stored"), [
    ("/r/run/features/tsp/v1", "features/tsp/v1"),
    ("features/tsp/v1", "features/tsp/v1"),  # relative: from the run directory
    ("/r/run/data/manifest/../videos/a.mp4", "data/videos/a.mp4"),  # ".." folded
    ("/r/run/data/a b%.mp4", "data/a b%.mp4"),  # no scheme: nothing to escape
    ("/r/other/x.pt", "file:///r/other/x.pt"),
    ("/r/run2/x.pt", "file:///r/run2/x.pt"),  # a sibling sharing the name's prefix
    ("../shared/x.pt", "file:///r/shared/x.pt"),
    ("/r/x y/k.pth", "file:///r/x%20y/k.pth"),
])
def test_to_uri_is_relative_inside_the_run_directory_and_a_file_uri_outside(given, stored):
    paths = RunPaths(Path("/r/run"))
    assert paths.to_uri(given) == stored
    assert paths.resolve_uri(stored) == Path("/r/run", given).resolve()


def test_a_stored_uri_resolves_against_the_run_directory_it_is_read_in():
    here, moved = RunPaths(Path("/r/run")), RunPaths(Path("/elsewhere/copy"))
    uri = here.to_uri("/r/run/models/pretrain/tsp/checkpoint.pt")
    assert moved.resolve_uri(uri) == Path("/elsewhere/copy/models/pretrain/tsp/checkpoint.pt")
    outside = here.to_uri("/weights/k400.pth")
    assert moved.resolve_uri(outside) == Path("/weights/k400.pth")  # absolute stays
    # What earlier versions stored (absolute URIs, plain absolute paths) still reads.
    assert moved.resolve_uri("file:///r/run/x.pt") == Path("/r/run/x.pt")
    assert moved.resolve_uri("file://localhost/a%20b/x.pt") == Path("/a b/x.pt")
    assert moved.resolve_uri("/abs/x.pt") == Path("/abs/x.pt")


@pytest.mark.parametrize("uri", ["https://example.org/k400.pth", "s3://bucket/x.pt",
                                 "file://host/x.pt"])
def test_a_remote_uri_names_no_local_file(uri):
    with pytest.raises(ValueError, match="not a local file"):
        RunPaths(Path("/r/run")).resolve_uri(uri)


def test_relative_keeps_a_symlink_inside_the_run_directory(tmp_path):
    """A folder linked into the run directory is the run's (abspath, not resolve)."""
    (tmp_path / "big").mkdir()
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "data").symlink_to(tmp_path / "big")
    paths = RunPaths.at(tmp_path / "run")
    assert paths.relative(paths.root / "data" / "v.mp4") == "data/v.mp4"
    assert paths.relative(tmp_path / "big" / "v.mp4") == str(tmp_path / "big" / "v.mp4")
