"""params.yaml, validated once: one pydantic sub-model per stage.

The same loader serves the CLI, the Prefect flows and the DVC stages. Unknown keys, wrong
types and out-of-range values fail with the key path and the offending value. Environment
variables override only the values they name (see ``ENV_OVERRIDES``); secrets (database
passwords, tokens) live only in the environment, never in params.yaml.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

# The sections live in tspipe.config_sections; this module is their public face, so the
# rest of tspipe imports every section (and its constants) from here.
from tspipe.config_sections import (
    BASE_CHECKPOINT,
    ENCODER_BATCH_SIZE,
    CatalogConfig,
    ClipConfig,
    DatasetConfig,
    DecodeConfig,
    DownloadConfig,
    EncoderRunConfig,
    ExtractConfig,
    FlowConfig,
    Fraction01,
    GvfConfig,
    LocalizeConfig,
    NonNegFloat,
    NonNegInt,
    PosFloat,
    PosInt,
    PretrainConfig,
    Section,
    SynthConfig,
    TrackingConfig,
)
from tspipe.errors import ConfigError
from tspipe.io import sha256_json

__all__ = [
    "BASE_CHECKPOINT",
    "CORPUS_FILE",
    "ENCODER_BATCH_SIZE",
    "ENV_OVERRIDES",
    "VARIANT_NAME",
    "BaseConfig",
    "CatalogConfig",
    "ClipConfig",
    "CompareConfig",
    "ConfigError",
    "DatasetConfig",
    "DecodeConfig",
    "DownloadConfig",
    "EncoderRunConfig",
    "ExtractConfig",
    "FlowConfig",
    "Fraction01",
    "GvfConfig",
    "LocalizeConfig",
    "NonNegFloat",
    "NonNegInt",
    "Params",
    "PosFloat",
    "PosInt",
    "PretrainConfig",
    "Section",
    "SynthConfig",
    "TrackingConfig",
    "VariantConfig",
    "load_params",
    "parse_params",
]

#: The synth stage's trimmed-clip corpus (synth.corpus_videos > 0), the base stage's data.
CORPUS_FILE = "data/synth/corpus/synthactions_corpus.json"
VARIANT_NAME = r"^[A-Za-z0-9][A-Za-z0-9_\-]{0,63}$"


def _merged(section: Section, overrides: Mapping[str, Any], where: str) -> Any:
    """``section`` with ``overrides`` applied, validated as the section itself."""
    try:
        return type(section).model_validate({**section.model_dump(), **overrides})
    except ValidationError as err:
        msgs = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or '(section)'}: {e['msg']}"
                         for e in err.errors())
        raise ValueError(f"{where}: {msgs}") from None


class BaseConfig(Section):
    """Stage ``base``: a pretraining from seeded random weights that plays Kinetics' role
    where no Kinetics checkpoint is at hand (the CPU demo). It trains with the
    ``pretrain:`` section updated by ``pretrain`` below (init_checkpoint None unless set
    there) and writes ``models/pretrain/base/``; the GVF and every variant's fine-tune
    start from it through ``pretrain.init_checkpoint``. Real runs: ``enabled: false`` and
    ``pretrain.init_checkpoint`` naming the Kinetics weights."""

    enabled: bool = True
    # Kinetics' role: action classification only (TAC), no GVF (there is none yet), on the
    # synth stage's trimmed-clip corpus (each clip a fresh scene: see
    # tspipe.data.synth_corpus), trained from scratch: AdamW, the stem trained, nn.Linear's
    # head init, one window per clip at its middle (jitter 0). On the untrimmed videos'
    # own segments it learned their look (one class per video), not their motion.
    pretrain: dict[str, Any] = Field(default={
        "mode": "tac", "use_gvf": False, "corpus": CORPUS_FILE, "clips_per_segment": 1,
        "jitter": 0.0, "epochs": 2, "batch_size": 16, "optimizer": "adamw",
        "freeze_stem": False, "head_init": "pytorch", "lr_backbone": 0.002,
        "lr_heads": 0.002, "weight_decay": 1e-4, "warmup_epochs": 0, "lr_milestones": [2],
        "lr_gamma": 0.1})


class VariantConfig(Section):
    """One feature version of the comparison: overrides of ``pretrain`` and ``extract``."""

    pretrain: dict[str, Any] = Field(default={})
    extract: dict[str, Any] = Field(default={})


class CompareConfig(Section):
    """Feature versions made side by side. Every variant runs pretrain -> extract ->
    evaluate with its overrides into its own folders (models/pretrain/<name>,
    features/<name>, results/<name>, metrics/<name>, plots/<name>); the ``compare`` stage
    tabulates their localization metrics. The paper's comparison is TSP against TAC."""

    variants: dict[str, VariantConfig] = Field(default={
        "tsp": VariantConfig(pretrain={"mode": "tsp"}),
        "tac": VariantConfig(pretrain={"mode": "tac", "use_gvf": False}),
    })
    # Each variant once per seed (pretrain, extract and localize seeds): the first seed's
    # runs keep the variant's name, the others are NAME-seedS. Empty: one run per variant
    # with the sections' own seeds. Two or more: the table gains mean, standard deviation
    # and paired differences with bootstrap intervals.
    seeds: list[int] = Field(default=[])
    bootstrap: int = Field(default=1000, ge=100, le=100_000)  # resamples of the validation videos
    confidence: float = Field(default=0.95, gt=0.5, lt=1.0)  # of the paired differences' intervals

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, v: list[int]) -> list[int]:
        if len(set(v)) != len(v) or any(s < 0 for s in v):
            raise ValueError(f"seeds {v}: distinct non-negative integers")
        return v

    @model_validator(mode="after")
    def _run_names(self) -> CompareConfig:
        runs = [n for v in self.variants for n in self._names_of(v)]
        clash = sorted({n for n in runs if runs.count(n) > 1})
        if clash:
            raise ValueError(f"seeds: run names {', '.join(clash)} are also variant names; "
                             "rename the variants")
        too_long = [n for n in runs if not re.match(VARIANT_NAME, n)]
        if too_long:
            raise ValueError(f"seeds: run name {too_long[0]!r} is longer than 64 characters; "
                             "shorten the variant's name")
        return self

    def _names_of(self, variant: str) -> list[str]:
        return [variant] + [f"{variant}-seed{s}" for s in self.seeds[1:]]

    def runs(self) -> dict[str, tuple[str, int | None]]:
        """Every stage-run name of the comparison -> (its variant, its seed or None)."""
        if not self.seeds:
            return {v: (v, None) for v in self.variants}
        return {name: (v, seed) for v in self.variants
                for name, seed in zip(self._names_of(v), self.seeds, strict=True)}

    @field_validator("variants")
    @classmethod
    def _names(cls, v: dict[str, VariantConfig]) -> dict[str, VariantConfig]:
        if not v:
            raise ValueError("name at least one variant (e.g. tsp: {pretrain: {mode: tsp}})")
        for name in v:
            if name == "base" or not re.match(VARIANT_NAME, name):
                raise ValueError(f"variant name {name!r}: letters, digits, _ and -, at most "
                                 "64, not 'base' (the base stage's folder)")
        return v


class Params(Section):
    dataset: DatasetConfig = DatasetConfig()
    synth: SynthConfig = SynthConfig()
    download: DownloadConfig = DownloadConfig()
    decode: DecodeConfig = DecodeConfig()
    clip: ClipConfig = ClipConfig()
    flow: FlowConfig = FlowConfig()
    pretrain: PretrainConfig = PretrainConfig()
    gvf: GvfConfig = GvfConfig()
    extract: ExtractConfig = ExtractConfig()
    localize: LocalizeConfig = LocalizeConfig()
    base: BaseConfig = BaseConfig()
    compare: CompareConfig = CompareConfig()
    tracking: TrackingConfig = TrackingConfig()
    catalog: CatalogConfig = CatalogConfig()

    @model_validator(mode="after")
    def _overrides_are_valid(self) -> Params:
        self.for_base()
        for name in self.compare.runs():
            self.for_variant(name)
        return self

    def for_base(self) -> Params:
        """The params the ``base`` stage trains with: ``pretrain`` updated by ``base.pretrain``."""
        cfg = _merged(self.pretrain, {"init_checkpoint": None, **self.base.pretrain},
                      "base.pretrain")
        if cfg.init_checkpoint == BASE_CHECKPOINT:
            raise ValueError("base.pretrain.init_checkpoint: the base cannot start from its "
                             "own output")
        if cfg.mode == "tsp" and cfg.use_gvf:
            raise ValueError("base.pretrain: mode tsp with use_gvf needs a GVF, and the GVF "
                             "is made from the base's output; set use_gvf: false")
        return self.model_copy(update={"pretrain": cfg})

    def for_variant(self, name: str) -> Params:
        """The params of run ``name`` (a variant, or a variant at one of ``compare.seeds``):
        ``pretrain`` and ``extract`` with the variant's overrides; with seeds, the seed of
        pretrain, extract and localize."""
        runs = self.compare.runs()
        if name not in runs:
            raise ValueError(f"no variant {name!r} in compare.variants "
                             f"({', '.join(runs)})")
        variant, seed = runs[name]
        v = self.compare.variants[variant]
        pretrain = _merged(self.pretrain, v.pretrain, f"compare.variants.{variant}.pretrain")
        extract = _merged(self.extract, v.extract, f"compare.variants.{variant}.extract")
        localize = self.localize
        if seed is not None:
            pretrain = pretrain.model_copy(update={"seed": seed})
            extract = extract.model_copy(update={"seed": seed})
            localize = localize.model_copy(update={"seed": seed})
        return self.model_copy(update={"pretrain": pretrain, "extract": extract,
                                       "localize": localize})

    def section_hash(self, *names: str) -> str:
        """Content hash of the named sections (what a stage reads), for caches and lineage."""
        return sha256_json({n: getattr(self, n).model_dump(mode="json") for n in names})


# Environment variable -> the one value it overrides. Values are validated like the file's.
ENV_OVERRIDES: dict[str, tuple[str, str]] = {
    "TSPIPE_CATALOG_URL": ("catalog", "url"),
    "MLFLOW_TRACKING_URI": ("tracking", "uri"),
    "MLFLOW_EXPERIMENT_NAME": ("tracking", "experiment"),
    "TSPIPE_OPENLINEAGE_URL": ("tracking", "openlineage"),
    "TSPIPE_DEVICE": ("extract", "device"),
}
# Overrides whose value may carry a secret: validated, but never echoed in messages.
_SECRET_ENV = {"TSPIPE_CATALOG_URL", "MLFLOW_TRACKING_URI"}


def _mask(path: tuple[str, ...], value: Any) -> Any:
    """A database URL is shown with its password hidden, wherever it came from."""
    if path == ("catalog", "url") and isinstance(value, str):
        from sqlalchemy.engine import make_url

        try:
            return make_url(value).render_as_string(hide_password=True)
        except Exception:
            return "<hidden>"
    return value


def _format_error(err: ValidationError, source: str, secret_paths: set[tuple[str, ...]],
                  from_env: Mapping[tuple[str, ...], str] | None = None) -> str:
    lines = [f"{source}: invalid parameters"]
    for e in err.errors():
        path = tuple(str(p) for p in e["loc"])
        key = ".".join(path)
        if e["type"] == "extra_forbidden":
            msg = "unknown key (check its spelling and its section)"
        else:
            msg = e["msg"]
        if not path:  # a check across sections: its message names the keys
            lines.append(f"  {msg.removeprefix('Value error, ')}")
            continue
        shown = "<hidden>" if path in secret_paths else repr(_mask(path, e.get("input")))
        var = (from_env or {}).get(path)
        lines.append(f"  {key}: {msg} (got {shown}"
                     + (f", from the environment variable {var})" if var else ")"))
    return "\n".join(lines)


def parse_params(raw: Mapping[str, Any] | None, *, source: str = "params.yaml",
                 env: Mapping[str, str] | None = None) -> Params:
    """Validate a params mapping, applying the environment overrides it names."""
    data: dict[str, Any] = {k: dict(v) if isinstance(v, Mapping) else v
                            for k, v in (raw or {}).items()}
    secret_paths: set[tuple[str, ...]] = set()
    from_env: dict[tuple[str, ...], str] = {}
    env = os.environ if env is None else env
    for var, (section, key) in ENV_OVERRIDES.items():
        if env.get(var):
            sec = data.setdefault(section, {})
            if not isinstance(sec, dict):
                continue  # the section's own type error is reported by validation
            sec[key] = env[var]
            from_env[(section, key)] = var
            if var in _SECRET_ENV:
                secret_paths.add((section, key))
    try:
        context = {"catalog_url_from_env": ("catalog", "url") in secret_paths}
        return Params.model_validate(data, context=context)
    except ValidationError as err:
        raise ConfigError(_format_error(err, source, secret_paths, from_env)) from None


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key given twice in one mapping (PyYAML keeps the
    last silently: a second ``pretrain:`` section would replace the first without a word)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, str | int | float | bool) and key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} appears twice in one mapping",
                    key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _yaml_where(exc: yaml.YAMLError) -> str:
    """`` at line L, column C: what`` of a YAML error (PyYAML's own text quotes the
    "<unicode string>" it parsed, not the file)."""
    mark = getattr(exc, "problem_mark", None)
    if mark is None:
        return f": {exc}"
    context, opened = getattr(exc, "context", None), getattr(exc, "context_mark", None)
    if context and opened is not None:  # where the unclosed bracket or quote began
        context += f" opened at line {opened.line + 1}, column {opened.column + 1}"
    what = "; ".join(x for x in (context, getattr(exc, "problem", None)) if x)
    snippet = mark.get_snippet()
    return (f" at line {mark.line + 1}, column {mark.column + 1}: {what}"
            + (f"\n{snippet}" if snippet else ""))


def load_params(path: str | Path = "params.yaml", *,
                env: Mapping[str, str] | None = None) -> Params:
    """Read and validate params.yaml; environment overrides apply on top."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: no such parameters file")
    if not path.is_file():
        raise ConfigError(f"{path}: not a file (a parameters file is YAML, like the "
                          "project's params.yaml)")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start}): a parameters file is "
                          "YAML, like the project's params.yaml") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot be read: {exc.strerror or exc}") from None
    try:
        raw = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 (a SafeLoader)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML{_yaml_where(exc)}") from None
    if raw is None or raw == {}:  # nothing but comments, or {}: defaults would run silently
        raise ConfigError(f"{path}: no parameters in it (empty, only comments, or {{}}); "
                          "start from the project's params.yaml, which lists every section "
                          "with its defaults and comments")
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{path}: the top level must be a mapping of sections, "
                          f"got {type(raw).__name__}")
    return parse_params(raw, source=str(path), env=env)
