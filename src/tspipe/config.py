"""params.yaml, validated once: one pydantic sub-model per stage.

The same loader serves the CLI, the Prefect flows and the DVC stages. Unknown keys, wrong
types and out-of-range values fail with the key path and the offending value. Environment
variables override only the values they name (see ``ENV_OVERRIDES``); secrets (database
passwords, tokens) live only in the environment, never in params.yaml.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from tspipe.errors import ConfigError
from tspipe.io import sha256_json

PosInt = Annotated[int, Field(ge=1)]
NonNegInt = Annotated[int, Field(ge=0)]
PosFloat = Annotated[float, Field(gt=0)]
NonNegFloat = Annotated[float, Field(ge=0)]
Fraction01 = Annotated[float, Field(ge=0, le=1)]


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DatasetConfig(Section):
    """Which annotations the pipeline runs on."""

    name: str = Field("synthactions", min_length=1, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
    format: Literal["activitynet", "thumos14", "tsp_csv", "auto"] = "auto"
    annotations: str = "data/synth/synthactions.json"
    # TSP CSVs and THUMOS14 text files have no taxonomy: an optional JSON list of labels.
    label_map: str | None = None
    # THUMOS14 text files carry no durations: an optional TSP-style metadata CSV.
    metadata: str | None = None
    subsets: list[Literal["training", "validation", "testing"]] = ["training", "validation"]
    # Segments past the video's end are clamped to it (the TSP reference does the same);
    # a segment that starts at or after the end is dropped and reported.
    clamp_to_duration: bool = True
    strict: bool = False  # when true, any annotation error stops the run


class SynthConfig(Section):
    """SynthActions: a small, real untrimmed-video benchmark made of encoded H.264 files."""

    enabled: bool = True  # the pipeline runs `synth` before `ingest` when true
    out_dir: str = "data/synth"
    videos: PosInt = 12
    classes: Annotated[int, Field(ge=2, le=12)] = 4
    seed: NonNegInt = 0
    min_duration: Annotated[float, Field(ge=5)] = 20.0
    max_duration: Annotated[float, Field(ge=5)] = 90.0
    fps: Annotated[int, Field(ge=5, le=60)] = 15
    width: Annotated[int, Field(ge=32, le=1920, multiple_of=2)] = 128
    height: Annotated[int, Field(ge=32, le=1080, multiple_of=2)] = 96
    validation_fraction: Annotated[float, Field(gt=0, lt=1)] = 0.25
    min_instances: PosInt = 2
    max_instances: PosInt = 4
    min_action: Annotated[float, Field(ge=1)] = 3.0
    max_action: Annotated[float, Field(ge=1)] = 12.0
    min_gap: Annotated[float, Field(ge=0.5)] = 2.0
    crf: Annotated[int, Field(ge=0, le=51)] = 23
    # The trimmed-clip corpus the base stage learns motion from (Kinetics' role; see
    # tspipe.data.synth_corpus): files of corpus_clips clips, each a fresh scene. 0: none.
    corpus_videos: Annotated[int, Field(ge=0)] = 48
    corpus_clips: PosInt = 32
    corpus_clip_seconds: Annotated[float, Field(ge=1.2)] = 2.4
    corpus_validation_fraction: Annotated[float, Field(gt=0, lt=1)] = 0.125
    corpus_distractors: Annotated[int, Field(ge=0, le=4)] = 0  # at most this many per clip
    workers: PosInt = 2  # corpus files made in parallel (the same bytes at any count)

    @model_validator(mode="after")
    def _ranges(self) -> SynthConfig:
        for lo, hi in (("min_duration", "max_duration"), ("min_instances", "max_instances"),
                       ("min_action", "max_action")):
            if getattr(self, lo) > getattr(self, hi):
                raise ValueError(f"{lo} ({getattr(self, lo)}) is greater than {hi} "
                                 f"({getattr(self, hi)})")
        return self


class DownloadConfig(Section):
    """Fetch every video once into ``data/videos`` (names from ``tspipe.paths``)."""

    # A folder or URL tried before each video's own url: <mirror>/<video_id>.<ext>.
    mirror: str | None = None
    workers: PosInt = 4
    retries: NonNegInt = 3  # transient errors only (5xx, resets, timeouts)
    backoff_s: PosFloat = 1.0  # first wait; doubles per retry, with full jitter
    backoff_max_s: PosFloat = 30.0
    timeout_s: PosFloat = 60.0  # per request (connect and read)
    max_height: PosInt = 360  # yt-dlp format cap
    allowed_schemes: list[Literal["https", "http", "s3", "gs", "file", "local", "youtube"]] = [
        "https", "http", "s3", "gs", "file", "local", "youtube"]
    verify_decodable: bool = True  # probe a finished download before accepting it
    batch_size: PosInt = 100  # videos per Prefect task


class DecodeConfig(Section):
    """Probe, standardize (constant frame rate, optional resize) and index into clips."""

    backend: Literal["auto", "pyav", "decord", "torchcodec"] = "auto"
    standardize: bool = True  # re-encode to constant fps (TSP: every video at 30 fps)
    fps: PosFloat = 30.0
    short_side: PosInt | None = None  # resize on standardizing; None keeps the size
    gop: PosInt = 15  # keyframe interval of standardized files, frames (fast seeking)
    crf: Annotated[int, Field(ge=0, le=51)] = 18
    # Background ("No action") rows of the ground-truth table: gaps between action segments
    # over [0, duration] at least this many clips long (clip.frames / clip.fps seconds
    # each). TSP's released tables: 5 on ActivityNet, 1 on THUMOS14 (measured, see README).
    min_background_clips: NonNegInt = 1
    # "merged": gaps between merged (overlapping/touching) segments; "consecutive": TSP's
    # own rule, gaps from each row's end in start order (opens false gaps inside a long
    # segment that contains a shorter one).
    background_gaps: Literal["merged", "consecutive"] = "merged"
    workers: PosInt = 2
    batch_size: PosInt = 50  # videos per Prefect task


class ClipConfig(Section):
    """One clip definition shared by training, GVF and extraction (TSP: 16 frames @ 15 fps)."""

    frames: PosInt = 16
    fps: PosFloat = 15.0
    stride: PosInt = 16
    resize: tuple[PosInt, PosInt] = (128, 171)  # (H, W) before cropping, as TSP
    crop: PosInt = 112


class FlowConfig(Section):
    """Stage ``flow``: optical flow of every decoded video for I3D's flow stream
    (``tspipe.data.flow``): clip-rate frames, TV-L1 or Farneback, uint8 in ``data/flow/``."""

    enabled: bool = False  # true when a variant extracts with a flow encoder (i3d_flow*)
    method: Literal["tvl1", "farneback"] = "tvl1"
    short_side: PosInt | None = None  # resize frames before flow; None keeps the decoded size
    bound: PosFloat = 20.0  # clip to +-bound pixels, then 255 steps of uint8 (I3D: 20)
    workers: PosInt = 2  # videos in parallel (one OpenCV thread each)
    batch_size: PosInt = 50  # videos per Prefect task


# Where the `base` stage writes its encoder (RunPaths.for_variant("base").pretrain_checkpoint).
BASE_CHECKPOINT = "models/pretrain/base/checkpoint.pt"
#: The synth stage's trimmed-clip corpus (synth.corpus_videos > 0), the base stage's data.
CORPUS_FILE = "data/synth/corpus/synthactions_corpus.json"
VARIANT_NAME = r"^[A-Za-z0-9][A-Za-z0-9_\-]{0,63}$"


class PretrainConfig(Section):
    """TSP / TAC fine-tuning (``tspipe.pretrain``), the paper's recipe by default."""

    enabled: bool = True  # the pipeline runs `pretrain` when true
    mode: Literal["tsp", "tac"] = "tsp"
    # The CPU demo's tiny encoder, like gvf/extract (TSP: r2plus1d_34 from Kinetics).
    encoder: str = "r2plus1d_tiny"
    # The weights fine-tuning starts from. The demo's: the `base` stage's output (a
    # from-scratch TAC pretraining in Kinetics' role); real runs: Kinetics weights.
    # None: seeded random weights.
    init_checkpoint: str | None = BASE_CHECKPOINT
    use_gvf: bool = True
    clips_per_segment: PosInt = 2  # TSP: 5; the CPU demo's 2 keeps its three trainings short
    # Share of each segment's possible clip starts a training clip is drawn from, centred:
    # 1 anywhere in the segment (TSP); 0 the middle start every epoch (the base stage on
    # the trimmed corpus: measured to learn motion from scratch at every seed, where
    # jittered windows did at some seeds only).
    jitter: Fraction01 = 1.0
    epochs: PosInt = 8
    # Clips per optimizer step, all processes and accumulation steps together: each of
    # world_size x grad_accum_steps micro-batches holds batch_size / (that product) clips.
    batch_size: PosInt = 32
    lr_backbone: PosFloat = 1e-4  # per batch of 32, scaled linearly
    lr_heads: PosFloat = 2e-3
    # sgd: the reference (momentum, weight decay on every parameter); adamw: Adam with
    # decoupled weight decay (momentum unused), what training from scratch needs here
    # (the base stage; measured: SGD did not leave chance level in 300 steps).
    optimizer: Literal["sgd", "adamw"] = "sgd"
    momentum: Fraction01 = 0.9
    weight_decay: NonNegFloat = 0.005
    # The reference freezes the stem (pretrained on Kinetics); a from-scratch run trains it.
    freeze_stem: bool = True
    # Heads' initial weights: reference, N(0, 0.01) and zero bias (TSP's fine-tuning);
    # pytorch, nn.Linear's default (uniform +-1/sqrt(fan_in)). From scratch the reference's
    # heads delayed the onset (measured on the corpus, same backbone init: validation
    # accuracy 0.40 instead of 0.71 after 100 steps).
    head_init: Literal["reference", "pytorch"] = "reference"
    warmup_epochs: NonNegInt = 2
    lr_milestones: list[PosInt] = [4, 6]
    lr_gamma: PosFloat = 0.01
    alpha_action: NonNegFloat = 1.0
    alpha_region: NonNegFloat = 1.0
    amp: Literal["auto", "bf16", "fp16", "off"] = "auto"
    grad_accum_steps: PosInt = 1
    workers: NonNegInt = 2
    seed: NonNegInt = 0
    device: str = "auto"
    # Train on this trimmed-clip corpus (ActivityNet JSON; each entry's url is its video,
    # relative to the file) instead of the pipeline's dataset: the base stage's Kinetics
    # role (data/synth/corpus/synthactions_corpus.json). None: the decode stage's segments.
    corpus: str | None = None
    # Subsets (the ground-truth table's `subset`) trained and validated on. TSP on
    # THUMOS14 trains on its validation videos and validates on its test videos.
    train_subsets: list[str] = ["training"]
    valid_subsets: list[str] = ["validation"]
    # Under DDP on CUDA: BatchNorm statistics over the global batch (SyncBatchNorm).
    sync_bn: bool = False
    # BatchNorm layers keep their running statistics (eval mode; affine weights still
    # train): batch statistics of small per-GPU batches are noisy.
    freeze_bn: bool = False
    # A resumable state every N optimizer steps as well as at each epoch's end (0: epochs only).
    checkpoint_every_steps: NonNegInt = 0
    # The weights saved as the encoder: the best epoch by validation (TSP released its best
    # epoch) or the last one. Without validation segments, always the last.
    export_epoch: Literal["best", "last"] = "best"

    @model_validator(mode="after")
    def _milestones(self) -> PretrainConfig:
        if list(self.lr_milestones) != sorted(self.lr_milestones):
            raise ValueError(f"lr_milestones must be increasing, got {self.lr_milestones}")
        return self


class EncoderRunConfig(Section):
    """An encoder run over every decoded video's sliding windows (``clip:`` section), in
    shards of ``shard_size`` videos: what the ``gvf`` and ``extract`` stages share."""

    # The defaults are the CPU demo's (params.yaml spells them out): a tiny encoder with
    # seeded random weights until the pretrain stage provides one. Real runs name an
    # encoder and a checkpoint (TSP: r2plus1d_34) and turn allow_random_init off.
    encoder: str = "r2plus1d_tiny"
    checkpoint: str | None = None
    # Without any checkpoint: seeded random weights, recorded as origin "scratch" (smoke
    # tests and the CPU demo only; such features say nothing about a real encoder).
    allow_random_init: bool = True
    seed: NonNegInt = 0  # seed of those random weights
    preprocessing: Literal["reference", "fast"] = "reference"
    # (H, W) resize before the center crop; None: TSP's 128x171 scaled to the encoder's crop.
    resize: tuple[PosInt, PosInt] | None = None
    batch_size: PosInt = 32
    workers: NonNegInt = 2
    amp: Literal["auto", "bf16", "fp16", "off"] = "auto"
    device: str = "auto"
    # Where frames become encoder input: host (decode workers send float clips) or device
    # (they send uint8 frames, preprocessed on `device`); auto: device on CUDA, host on
    # the CPU. Same arithmetic (bit-identical on the CPU): not part of the feature version.
    preprocess_on: Literal["auto", "host", "device"] = "auto"
    shard_size: PosInt = 500  # videos per shard: one HDF5 file, one task
    # local: shards one after another in this process; ray: one Prefect task per shard on
    # Ray (prefect-ray), each asking Ray for ray_gpus_per_shard GPUs and ray_cpus_per_shard CPUs.
    runner: Literal["local", "ray"] = "local"
    ray_address: str | None = None  # None: a local Ray instance; "auto" or ray://host:10001
    ray_gpus_per_shard: NonNegFloat = 1.0  # asked only when the Ray cluster has GPUs
    ray_cpus_per_shard: PosFloat = 1.0


class GvfConfig(EncoderRunConfig):
    """The global video feature TSP's region head reads: the encoder's clip features
    pooled over each video (TSP: max, Kinetics-pretrained R(2+1)D-34)."""

    enabled: bool = True  # the pipeline runs `gvf` when true (TSP training needs it)
    pooling: Literal["max", "mean"] = "max"


class ExtractConfig(EncoderRunConfig):
    dtype: Literal["float32", "float16"] = "float32"  # on disk
    # I3D two-stream: a second, optical-flow encoder (i3d_flow, i3d_flow_tiny) run over the
    # flow stage's files. Each stream is its own feature version; the version the stage
    # hands on (current.json) is their per-clip concatenation, RGB first.
    flow_encoder: str | None = None
    # The flow stream's weights (e.g. flow_imagenet.pt); None: seeded random weights (seed
    # below) if allow_random_init, as for the RGB stream.
    flow_checkpoint: str | None = None
    # Written beside the shards by the stage: npy (OpenTAD / ActionFormer), csv (BMN),
    # h5 (one merged file, TSP-style).
    export: list[Literal["npy", "csv", "h5"]] = []
    # Prefix of the .npy / .csv file names (ActivityNet tools expect "v_" + the YouTube id).
    export_id_prefix: str = ""


class LocalizeConfig(Section):
    """BMN / G-TAD trained on the current feature version's training videos, scored on
    its validation videos. None: the method's reference recipe (tspipe.localize.train)."""

    methods: list[Literal["bmn", "gtad"]] = ["bmn", "gtad"]
    temporal_scale: PosInt = 32  # ActivityNet: 100; the CPU demo's 32
    # Layer widths: "reference" (the papers') or "small" (a quarter, for CPU-sized runs).
    model_size: Literal["reference", "small"] = "small"
    tiou_thresholds: list[Fraction01] = [0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95]
    epochs: PosInt | None = None
    batch_size: PosInt | None = None
    lr: PosFloat | None = None
    weight_decay: NonNegFloat | None = None
    # With epochs None: at least this many optimizer steps (more epochs, the LR step
    # stretched alike) when the training set is small; ActivityNet makes 627 an epoch.
    min_steps: NonNegInt = 100
    # Video-level class scores for detection (CUHK's JSON layout or {video: {label: score}});
    # None: a linear classifier trained on the same features.
    class_scores: str | None = None
    seed: NonNegInt = 0
    amp: bool = True  # bf16 autocast on CUDA
    device: str = "auto"


class TrackingConfig(Section):
    # MLflow tracking URI. Default: a SQLite store in the run directory (MLflow's
    # recommended local backend). MLFLOW_TRACKING_URI overrides it.
    uri: str = "sqlite:///mlflow.db"
    experiment: str = "tspipe"
    enabled: bool = True


class CatalogConfig(Section):
    # SQLAlchemy URL of the feature catalog. TSPIPE_CATALOG_URL overrides it; a password
    # may only come from that variable, never from this file.
    url: str = "sqlite:///catalog.db"

    @field_validator("url")
    @classmethod
    def _no_secret(cls, v: str, info: ValidationInfo) -> str:
        from sqlalchemy.engine import make_url

        try:
            url = make_url(v)
        except Exception as exc:
            raise ValueError(f"not a database URL: {exc}") from None
        if url.password and not (info.context or {}).get("catalog_url_from_env"):
            raise ValueError("holds a password: set TSPIPE_CATALOG_URL in the environment "
                             "instead of writing secrets into params.yaml")
        return v


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
    pretrain: dict[str, Any] = {
        "mode": "tac", "use_gvf": False, "corpus": CORPUS_FILE, "clips_per_segment": 1,
        "jitter": 0.0, "epochs": 2, "batch_size": 16, "optimizer": "adamw",
        "freeze_stem": False, "head_init": "pytorch", "lr_backbone": 0.002,
        "lr_heads": 0.002, "weight_decay": 1e-4, "warmup_epochs": 0, "lr_milestones": [2],
        "lr_gamma": 0.1}


class VariantConfig(Section):
    """One feature version of the comparison: overrides of ``pretrain`` and ``extract``."""

    pretrain: dict[str, Any] = {}
    extract: dict[str, Any] = {}


class CompareConfig(Section):
    """Feature versions made side by side. Every variant runs pretrain -> extract ->
    evaluate with its overrides into its own folders (models/pretrain/<name>,
    features/<name>, results/<name>, metrics/<name>, plots/<name>); the ``compare`` stage
    tabulates their localization metrics. The paper's comparison is TSP against TAC."""

    variants: dict[str, VariantConfig] = {
        "tsp": VariantConfig(pretrain={"mode": "tsp"}),
        "tac": VariantConfig(pretrain={"mode": "tac", "use_gvf": False}),
    }

    @field_validator("variants")
    @classmethod
    def _names(cls, v: dict[str, VariantConfig]) -> dict[str, VariantConfig]:
        import re

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
        for name in self.compare.variants:
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
        """The params of variant ``name``: ``pretrain`` and ``extract`` with its overrides."""
        if name not in self.compare.variants:
            raise ValueError(f"no variant {name!r} in compare.variants "
                             f"({', '.join(self.compare.variants)})")
        v = self.compare.variants[name]
        return self.model_copy(update={
            "pretrain": _merged(self.pretrain, v.pretrain, f"compare.variants.{name}.pretrain"),
            "extract": _merged(self.extract, v.extract, f"compare.variants.{name}.extract")})

    def section_hash(self, *names: str) -> str:
        """Content hash of the named sections (what a stage reads), for caches and lineage."""
        return sha256_json({n: getattr(self, n).model_dump(mode="json") for n in names})


# Environment variable -> the one value it overrides. Values are validated like the file's.
ENV_OVERRIDES: dict[str, tuple[str, str]] = {
    "TSPIPE_CATALOG_URL": ("catalog", "url"),
    "MLFLOW_TRACKING_URI": ("tracking", "uri"),
    "MLFLOW_EXPERIMENT_NAME": ("tracking", "experiment"),
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


def _format_error(err: ValidationError, source: str, secret_paths: set[tuple[str, ...]]) -> str:
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
        lines.append(f"  {key}: {msg} (got {shown})")
    return "\n".join(lines)


def parse_params(raw: Mapping[str, Any] | None, *, source: str = "params.yaml",
                 env: Mapping[str, str] | None = None) -> Params:
    """Validate a params mapping, applying the environment overrides it names."""
    data: dict[str, Any] = {k: dict(v) if isinstance(v, Mapping) else v
                            for k, v in (raw or {}).items()}
    secret_paths: set[tuple[str, ...]] = set()
    env = os.environ if env is None else env
    for var, (section, key) in ENV_OVERRIDES.items():
        if env.get(var):
            sec = data.setdefault(section, {})
            if not isinstance(sec, dict):
                continue  # the section's own type error is reported by validation
            sec[key] = env[var]
            if var in _SECRET_ENV:
                secret_paths.add((section, key))
    try:
        context = {"catalog_url_from_env": ("catalog", "url") in secret_paths}
        return Params.model_validate(data, context=context)
    except ValidationError as err:
        raise ConfigError(_format_error(err, source, secret_paths)) from None


def load_params(path: str | Path = "params.yaml", *,
                env: Mapping[str, str] | None = None) -> Params:
    """Read and validate params.yaml; environment overrides apply on top."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: no such parameters file")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if raw is not None and not isinstance(raw, Mapping):
        raise ConfigError(f"{path}: the top level must be a mapping of sections, "
                          f"got {type(raw).__name__}")
    return parse_params(raw, source=str(path), env=env)
