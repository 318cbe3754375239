"""Bad parameters, as a user writes them: each ends with a message naming the file and the
key (or line), exit code 2, no traceback, before any work."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml
from reliability_helpers import REPO, assert_clean_failure

from tspipe.doors.cli import main

GOOD = yaml.safe_load((REPO / "params.yaml").read_text())


def _with(section: str, key: str, value) -> str:
    raw = {**GOOD, section: {**GOOD[section], key: value}}
    return yaml.safe_dump(raw, sort_keys=False)


# kind -> (file text (bytes: raw; None: a folder), environment, words the message must hold)
CASES = {
    "empty": ("", {}, ["no parameters in it"]),
    "comments-only": ("# dataset: {}\n# nothing else\n", {}, ["no parameters in it"]),
    "empty-mapping": ("{}\n", {}, ["no parameters in it"]),
    "list": ("- dataset\n- synth\n", {}, ["must be a mapping", "list"]),
    "scalar": ("42\n", {}, ["must be a mapping", "int"]),
    "yaml-syntax": ("dataset:\n  name: [unclosed\n", {}, ["not valid YAML", "line"]),
    "unknown-key": (_with("pretrain", "epoch", 3), {}, ["pretrain.epoch", "unknown key"]),
    "unknown-section": (yaml.safe_dump({**GOOD, "pretrian": {}}), {}, ["pretrian"]),
    "wrong-type": (_with("clip", "frames", "sixteen"), {}, ["clip.frames", "sixteen"]),
    "out-of-range": (_with("pretrain", "lr_backbone", -0.1), {}, ["pretrain.lr_backbone"]),
    "device-typo": (_with("extract", "device", "gpu0"), {}, ["extract.device", "gpu0"]),
    "env-device": (yaml.safe_dump(GOOD), {"TSPIPE_DEVICE": "cuda:x"},
                   ["extract.device", "cuda:x", "TSPIPE_DEVICE"]),
    "env-device-typo": (yaml.safe_dump(GOOD), {"TSPIPE_DEVICE": "gpu0"},
                        ["extract.device", "gpu0", "TSPIPE_DEVICE", "cuda:N"]),
    "section-scalar": (yaml.safe_dump({**GOOD, "dataset": 5}), {}, ["dataset", "got 5"]),
    "section-null": ("dataset:\n", {}, ["dataset", "got None"]),
    "duplicate-section": (yaml.safe_dump(GOOD) + "pretrain:\n  epochs: 9\n", {},
                          ["appears twice", "'pretrain'", "line"]),
    "duplicate-key": ("clip:\n  frames: 8\n  frames: 16\n", {},
                      ["appears twice", "'frames'", "line 3"]),
    "not-utf8": (b"\xff\xfe dataset: {}\n", {}, ["not UTF-8"]),
    "directory": (None, {}, ["not a file"]),
}


def _tspipe(monkeypatch, capsys, *args: str) -> subprocess.CompletedProcess:
    """The console script's entry point, in this process (what ``tspipe ARGS`` runs)."""
    monkeypatch.setattr(sys, "argv", ["tspipe", *args])
    monkeypatch.setenv("COLUMNS", "1000")
    with pytest.raises(SystemExit) as exit_:
        main()
    out = capsys.readouterr()
    return subprocess.CompletedProcess(args, exit_.value.code or 0, out.out, out.err)


@pytest.mark.parametrize("kind", CASES)
def test_bad_params_fail_cleanly(tmp_path, monkeypatch, capsys, kind, ledger) -> None:
    text, env, words = CASES[kind]
    path = tmp_path / "params.yaml"
    if text is None:
        path.mkdir()
    elif isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    monkeypatch.delenv("TSPIPE_DEVICE", raising=False)
    for var, value in env.items():
        monkeypatch.setenv(var, value)
    proc = _tspipe(monkeypatch, capsys, "params", "--params", str(path))
    assert_clean_failure(proc, str(path), *words)
    ledger.record("bad_input", f"params-{kind}")


def test_a_good_file_and_device_pass(tmp_path, monkeypatch, capsys) -> None:
    path = tmp_path / "params.yaml"
    path.write_text(_with("extract", "device", "cuda:1"))
    monkeypatch.setenv("TSPIPE_DEVICE", "cpu")
    proc = _tspipe(monkeypatch, capsys, "params", "--params", str(path))
    assert proc.returncode == 0, proc.stderr
    assert yaml.safe_load(proc.stdout)["extract"]["device"] == "cpu"  # the env wins
