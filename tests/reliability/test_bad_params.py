"""Bad parameters, as a user writes them: each ends with a message naming the file and the
key (or line), exit code 2, no traceback, before any work."""

from __future__ import annotations

import pytest
import yaml
from reliability_helpers import REPO, assert_clean_failure, tspipe_in_process

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
    "scalar-false": ("false\n", {}, ["must be a mapping", "bool"]),
    "empty-list": ("[]\n", {}, ["must be a mapping", "list"]),
    "yaml-syntax": ("dataset:\n  name: [unclosed\n", {},
                    ["not valid YAML", "opened at line 2, column 9"]),
    "yaml-tab": ("dataset:\n\tname: x\n", {}, ["not valid YAML at line 2, column 1", "'\\t'"]),
    "yaml-two-colons": ("dataset: name: x\n", {},
                        ["not valid YAML at line 1, column 14", "mapping values"]),
    "unknown-key": (_with("pretrain", "epoch", 3), {}, ["pretrain.epoch", "unknown key"]),
    "unknown-section": (yaml.safe_dump({**GOOD, "pretrian": {}}), {}, ["pretrian"]),
    "wrong-type": (_with("clip", "frames", "sixteen"), {}, ["clip.frames", "sixteen"]),
    "out-of-range": (_with("pretrain", "lr_backbone", -0.1), {}, ["pretrain.lr_backbone"]),
    "device-typo": (_with("extract", "device", "gpu0"), {}, ["extract.device", "gpu0"]),
    "env-device": (yaml.safe_dump(GOOD), {"TSPIPE_DEVICE": "cuda:x"},
                   ["extract.device", "cuda:x", "TSPIPE_DEVICE"]),
    "env-device-typo": (yaml.safe_dump(GOOD), {"TSPIPE_DEVICE": "gpu0"},
                        ["extract.device", "gpu0", "TSPIPE_DEVICE", "cuda:N"]),
    "tracking-scheme": (_with("tracking", "uri", "sqllite:///mlflow.db"), {},
                        ["tracking.uri", "unknown scheme 'sqllite'", "sqlite:"]),
    "env-tracking-scheme": (yaml.safe_dump(GOOD), {"MLFLOW_TRACKING_URI": "htp://u:pw@x"},
                            ["tracking.uri", "unknown scheme 'htp'", "MLFLOW_TRACKING_URI"]),
    "empty-experiment": (_with("tracking", "experiment", ""), {}, ["tracking.experiment"]),
    "section-scalar": (yaml.safe_dump({**GOOD, "dataset": 5}), {}, ["dataset", "got 5"]),
    "section-null": ("dataset:\n", {}, ["dataset", "got None"]),
    "duplicate-section": (yaml.safe_dump(GOOD) + "pretrain:\n  epochs: 9\n", {},
                          ["appears twice", "'pretrain'", "line"]),
    "duplicate-key": ("clip:\n  frames: 8\n  frames: 16\n", {},
                      ["appears twice", "'frames'", "line 3"]),
    "not-utf8": (b"\xff\xfe dataset: {}\n", {}, ["not UTF-8"]),
    "directory": (None, {}, ["not a file"]),
}



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
    proc = tspipe_in_process(monkeypatch, capsys, "params", "--params", str(path))
    assert_clean_failure(proc, str(path), *words)
    ledger.record("bad_input", f"params-{kind}")


def test_a_good_file_and_device_pass(tmp_path, monkeypatch, capsys) -> None:
    path = tmp_path / "params.yaml"
    path.write_text(_with("extract", "device", "cuda:1"))
    monkeypatch.setenv("TSPIPE_DEVICE", "cpu")
    proc = tspipe_in_process(monkeypatch, capsys, "params", "--params", str(path))
    assert proc.returncode == 0, proc.stderr
    assert yaml.safe_load(proc.stdout)["extract"]["device"] == "cpu"  # the env wins


def test_a_bad_tracking_uri_from_the_environment_is_not_echoed(tmp_path, monkeypatch,
                                                              capsys) -> None:
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(GOOD))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "htp://user:hunter2@mlflow.example")
    proc = tspipe_in_process(monkeypatch, capsys, "params", "--params", str(path))
    out = assert_clean_failure(proc, "<hidden>", "MLFLOW_TRACKING_URI")
    assert "hunter2" not in out


@pytest.mark.parametrize("uri", ["sqlite:///mlflow.db", "postgresql+psycopg2://h/db",
                                 "https://mlflow.example", "file:///tmp/mlruns", "mlruns",
                                 "databricks"])
def test_tracking_uris_mlflow_takes_pass(uri) -> None:
    from tspipe.config import parse_params

    assert parse_params({"tracking": {"uri": uri}}, env={}).tracking.uri == uri
