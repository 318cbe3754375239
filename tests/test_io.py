from __future__ import annotations

import os
import stat

import pytest

from tspipe.errors import UnsafeIdError
from tspipe.io import atomic_path, atomic_write_json, safe_id, sha256_json


@pytest.mark.parametrize("bad", ["", "..", "../x", "a/b", "/etc/passwd", ".hidden", "a\x00b",
                                 "a\nb", "x" * 300, "a..b", "vidéo", "a b", "abc\n"])
def test_safe_id_refuses_what_could_leave_the_folder(bad):
    with pytest.raises(UnsafeIdError, match="cannot be used as a file name"):
        safe_id(bad)


@pytest.mark.parametrize("good", ["v_sJFgo9H6zNo", "video_test_0000004", "a.b-c_d",
                                  # raw ActivityNet (YouTube) ids, as TSP's CSVs give them
                                  "-cwPzzcNpGs", "_nTjmHQ0-gQ"])
def test_safe_id_keeps_real_ids(good):
    assert safe_id(good) == good


def test_atomic_path_leaves_nothing_on_failure(tmp_path):
    dest = tmp_path / "out.json"
    dest.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(dest) as tmp:
        tmp.write_text("half")
        raise RuntimeError("boom")
    assert dest.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]


def test_atomic_write_gives_normal_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        path = atomic_write_json(tmp_path / "a.json", {"b": 1, "a": [1, 2]})
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert path.read_text() == '{\n  "a": [\n    1,\n    2\n  ],\n  "b": 1\n}\n'


def test_sha256_json_ignores_key_order():
    assert sha256_json({"a": 1, "b": [1, 2]}) == sha256_json({"b": [1, 2], "a": 1})
    assert sha256_json({"a": 1}) != sha256_json({"a": 1.5})
