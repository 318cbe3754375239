from __future__ import annotations

import pytest
import yaml

from tspipe.config import Params, load_params, parse_params
from tspipe.errors import ConfigError


def test_params_yaml_is_valid_and_documents_every_key(repo_root):
    params = load_params(repo_root / "params.yaml", env={})
    assert params == Params()  # params.yaml spells out the defaults, nothing else
    raw = yaml.safe_load((repo_root / "params.yaml").read_text())
    assert set(raw) == set(Params.model_fields)
    for section, model in Params.model_fields.items():
        assert set(raw[section]) == set(model.annotation.model_fields), section
    # every key of every section carries a comment on its line or the line below it
    lines = (repo_root / "params.yaml").read_text().splitlines()
    for i, line in enumerate(lines):
        if line.startswith("  ") and not line.lstrip().startswith("#") and ":" in line:
            below = lines[i + 1].strip() if i + 1 < len(lines) else ""
            assert "#" in line or below.startswith("#"), f"params.yaml:{i + 1}: {line.strip()}"


def test_unknown_key_names_the_path(tmp_path):
    f = tmp_path / "p.yaml"
    f.write_text("pretrain:\n  epochz: 3\n")
    with pytest.raises(ConfigError) as exc:
        load_params(f, env={})
    msg = str(exc.value)
    assert str(f) in msg
    assert "pretrain.epochz" in msg and "unknown key" in msg and "3" in msg


def test_unknown_section_is_refused():
    with pytest.raises(ConfigError, match=r"pretrian: unknown key"):
        parse_params({"pretrian": {"epochs": 3}}, env={})


def test_wrong_type_names_the_path_and_value():
    with pytest.raises(ConfigError) as exc:
        parse_params({"clip": {"frames": "sixteen"}}, env={})
    assert "clip.frames" in str(exc.value) and "'sixteen'" in str(exc.value)


def test_out_of_range_names_the_path_and_value():
    with pytest.raises(ConfigError) as exc:
        parse_params({"pretrain": {"lr_backbone": -0.1}, "synth": {"classes": 40}}, env={})
    msg = str(exc.value)
    assert "pretrain.lr_backbone" in msg and "-0.1" in msg and "greater than 0" in msg
    assert "synth.classes" in msg and "40" in msg


def test_cross_field_range_is_checked():
    with pytest.raises(ConfigError, match=r"min_duration .* greater than max_duration"):
        parse_params({"synth": {"min_duration": 50, "max_duration": 30}}, env={})
    with pytest.raises(ConfigError, match=r"localize.*eval_subset: 'testing' is also "
                                          r"train_subset"):
        parse_params({"localize": {"train_subset": "testing", "eval_subset": "testing"}},
                     env={})


def test_env_override_changes_only_what_it_names():
    base = parse_params({}, env={})
    over = parse_params({}, env={"MLFLOW_TRACKING_URI": "http://127.0.0.1:5000"})
    assert over.tracking.uri == "http://127.0.0.1:5000"
    assert over.tracking.model_copy(update={"uri": base.tracking.uri}) == base.tracking
    for section in Params.model_fields:
        if section != "tracking":
            assert getattr(over, section) == getattr(base, section)


def test_catalog_password_only_from_environment():
    with pytest.raises(ConfigError) as exc:
        parse_params({"catalog": {"url": "postgresql://u:hunter2@db/x"}}, env={})
    assert "TSPIPE_CATALOG_URL" in str(exc.value)
    assert "hunter2" not in str(exc.value)  # never echo a secret
    p = parse_params({}, env={"TSPIPE_CATALOG_URL": "postgresql+psycopg://u:hunter2@db/x"})
    assert p.catalog.url.endswith("@db/x")
    assert p.tracking == Params().tracking


def test_bad_env_value_is_reported_without_the_secret():
    with pytest.raises(ConfigError) as exc:
        parse_params({}, env={"TSPIPE_CATALOG_URL": "::not a url hunter2"})
    assert "catalog.url" in str(exc.value) and "hunter2" not in str(exc.value)


def test_malformed_yaml_names_the_file(tmp_path):
    f = tmp_path / "p.yaml"
    f.write_text("pretrain: [unclosed\n")
    with pytest.raises(ConfigError, match=r"p\.yaml: not valid YAML"):
        load_params(f, env={})


def test_section_hash_depends_only_on_named_sections():
    a = parse_params({}, env={})
    b = parse_params({"pretrain": {"epochs": 2}}, env={})
    assert a.section_hash("dataset") == b.section_hash("dataset")
    assert a.section_hash("pretrain") != b.section_hash("pretrain")
