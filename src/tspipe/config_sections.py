"""The sections of params.yaml, one pydantic model per stage (or shared concern).

Each model's field defaults are the one place a setting's default is defined; params.yaml
spells them out (tests/test_config.py checks that the two agree). ``tspipe.config``
composes them into ``Params`` and is where the rest of tspipe imports them from.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

PosInt = Annotated[int, Field(ge=1)]
NonNegInt = Annotated[int, Field(ge=0)]
PosFloat = Annotated[float, Field(gt=0)]
NonNegFloat = Annotated[float, Field(ge=0)]
Fraction01 = Annotated[float, Field(ge=0, le=1)]


def _device(value: str) -> str:
    """What torch and :func:`tspipe.runtime.resolve_device` take: ``auto`` (CUDA when
    available), ``cpu``, ``cuda``, ``cuda:N``, ``mps``. Checked here, so that a typo (in
    params.yaml or TSPIPE_DEVICE) fails before any work, not in the middle of a run."""
    if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", value):
        raise ValueError("not a device: use auto, cpu, cuda, cuda:N (N a GPU index) or mps")
    return value


Device = Annotated[str, AfterValidator(_device)]


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
    min_action: Annotated[float, Field(ge=0.5)] = 3.0
    max_action: Annotated[float, Field(ge=0.5)] = 12.0
    min_gap: Annotated[float, Field(ge=0.5)] = 2.0
    crf: Annotated[int, Field(ge=0, le=51)] = 23
    # hard: backgrounds that move like the actions (mimics performing the action patterns,
    # camera pans, distractors coming and going) and slow ramps in and out of each action
    # (tspipe.data.synth_render); the corpus stays normal. What TSP's benchmark needs.
    difficulty: Literal["normal", "hard"] = "normal"
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
    # Folders a local source (a path, a file:// URL, a link in a folder mirror) may lie in,
    # besides the run directory, the annotation file's folder and a folder mirror:
    # anything else is refused per video (a file:///etc/passwd in an annotation file).
    local_roots: list[str] = []
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
    # A control, not a method: "shuffled" hands the region head the training segments'
    # action/no-action labels in a seeded random order, a deliberately broken TSP that a
    # comparison with power must score below the correct one.
    region_labels: Literal["given", "shuffled"] = "given"
    amp: Literal["auto", "bf16", "fp16", "off"] = "auto"
    grad_accum_steps: PosInt = 1
    workers: NonNegInt = 2
    seed: NonNegInt = 0
    device: Device = "auto"
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


# Clips per forward pass of an encoder run (gvf, extract) and of
# tspipe.extract.runner.extract_features when its caller names none.
ENCODER_BATCH_SIZE = 32


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
    batch_size: PosInt = ENCODER_BATCH_SIZE
    workers: NonNegInt = 2
    amp: Literal["auto", "bf16", "fp16", "off"] = "auto"
    device: Device = "auto"
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
    """BMN / G-TAD trained on the current feature version's ``train_subset`` videos,
    scored on its ``eval_subset`` videos. None: the method's reference recipe
    (tspipe.localize.train)."""

    methods: list[Literal["bmn", "gtad"]] = ["bmn", "gtad"]
    # The annotations' subsets the methods train on and are scored on (ActivityNet:
    # training / validation; THUMOS14: validation / testing, as TSP and G-TAD do).
    train_subset: str = Field("training", min_length=1)
    eval_subset: str = Field("validation", min_length=1)
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
    # Videos left out of the scored ground truth and results (a JSON list of video ids):
    # the official ActivityNet evaluation's blocked list, for numbers comparable to it.
    blocked: str | None = None
    seed: NonNegInt = 0
    amp: bool = True  # bf16 autocast on CUDA
    device: Device = "auto"

    @model_validator(mode="after")
    def _two_subsets(self) -> LocalizeConfig:
        if self.train_subset == self.eval_subset:
            raise ValueError(f"eval_subset: {self.eval_subset!r} is also train_subset: "
                             "scores on the training videos measure nothing")
        return self


# The store schemes MLflow's client takes (its registry's list); an unknown one (a typo
# such as "htp:" or "sqllite:") would fail with a traceback at the first recorded run,
# after the stage's work. A "+driver" suffix (postgresql+psycopg2) is SQLAlchemy's.
_MLFLOW_SCHEMES = ("file", "sqlite", "postgresql", "mysql", "mssql", "http", "https",
                   "databricks", "databricks-uc", "uc")


class TrackingConfig(Section):
    # MLflow tracking URI. Default: a SQLite store in the run directory (MLflow's
    # recommended local backend). MLFLOW_TRACKING_URI overrides it.
    uri: str = Field("sqlite:///mlflow.db", min_length=1)
    experiment: str = Field("tspipe", min_length=1)
    enabled: bool = True
    # OpenLineage events of every stage run (START and COMPLETE; tspipe.doors.openlineage):
    # None: off; a file (file:PATH, file:///abs, or a path, relative to the run directory)
    # of JSON lines, or an http(s)://host:port server (Marquez). TSPIPE_OPENLINEAGE_URL
    # overrides it. Needs the lineage extra.
    openlineage: str | None = Field(None, min_length=1)

    @field_validator("uri")
    @classmethod
    def _known_scheme(cls, v: str) -> str:
        scheme = urlsplit(v).scheme.lower().split("+")[0]
        # No scheme: a local folder; one letter: a Windows drive (C:\mlruns).
        if len(scheme) <= 1 or scheme in _MLFLOW_SCHEMES:
            return v
        raise ValueError(f"unknown scheme {scheme!r}: MLflow takes a folder or a "
                         f"{', '.join(s + ':' for s in _MLFLOW_SCHEMES)} URI")

    @field_validator("openlineage")
    @classmethod
    def _lineage_target(cls, v: str | None) -> str | None:
        if v is None:
            return v
        parts = urlsplit(v)
        scheme = parts.scheme.lower()
        if len(scheme) <= 1:  # a path (one letter: a Windows drive)
            return v
        if scheme == "file" and parts.path and parts.netloc in ("", "localhost"):
            return v
        if scheme in ("http", "https") and parts.hostname:
            return v
        if scheme == "file":
            raise ValueError("a file: URL names a local file: file:PATH or file:///abs/path")
        if scheme in ("http", "https"):
            raise ValueError(f"an {scheme}: URL needs a host: {scheme}://host:port")
        raise ValueError(f"unknown scheme {scheme!r}: OpenLineage events go to a file "
                         "(file:PATH, file:///abs/path or a plain path) or an http:// / "
                         "https:// server")


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
