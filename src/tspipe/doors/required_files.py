"""Files the user must supply, checked before any work.

params.yaml names some files the pipeline reads but never makes: the annotations, the
weights fine-tuning starts from, official checkpoints, class scores, a mirror folder. A
missing one used to surface deep inside its stage (after downloads, decoding, training);
the doors (``tspipe run``, ``stage``, ``params``) check them right after validation and
fail with one line naming the key, the path and what belongs there.

A key is checked only when a stage run that reads it is enabled, and only when no enabled
stage run makes that path (the demo's annotations come from ``synth``, its
``pretrain.init_checkpoint`` from ``base``: not the user's to supply).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from tspipe.config import Params
from tspipe.errors import ConfigError
from tspipe.paths import RunPaths
from tspipe.stages import STAGES, bind, instances

# What belongs under each file-valued key (the hint of the error line).
WHAT: dict[str, str] = {
    "dataset.annotations": "the annotations: an ActivityNet v1.3 JSON, a THUMOS14 folder of "
                           "<Class>_val.txt / <Class>_test.txt files, or a TSP ground-truth CSV",
    "dataset.label_map": "a JSON list of class names (index = class id), e.g. TSP's "
                         "*_action_label_mapping.json; or null",
    "dataset.metadata": "a TSP metadata CSV (filename,video-duration,fps,video-frames); or null",
    "download.mirror": "a folder holding <video_id>.<ext> files (a video mirror), a URL; or "
                       "null to fetch each video from its own url",
    "pretrain.init_checkpoint": "the weights fine-tuning starts from (TSP: Kinetics-pretrained "
                                "r2plus1d_34, e.g. r2plus1d_34-tac_on_kinetics-*.pth); or null "
                                "for seeded random weights",
    "pretrain.corpus": "a trimmed-clip corpus (ActivityNet JSON, urls relative to it); or null "
                       "to train on the dataset's segments",
    "gvf.checkpoint": "the encoder weights the GVF is computed with; or null for "
                      "pretrain.init_checkpoint",
    "extract.checkpoint": "the encoder weights to extract with (a released TSP / I3D "
                          "checkpoint); or null for the pretrain stage's output",
    "extract.flow_checkpoint": "the flow encoder's weights (e.g. I3D flow_imagenet.pt)",
    "localize.class_scores": "video-level class scores (CUHK's cuhk_val_simp_share.json "
                             "layout or {video_id: {label: score}}); or null for a classifier "
                             "trained on the features",
    "localize.blocked": "a JSON list of video ids left out of scoring (the official "
                        "ActivityNet blocked list); or null",
}


@dataclass(frozen=True)
class FileKey:
    """A file-valued key a stage run reads: where it is written in params.yaml (``key``,
    e.g. ``compare.variants.tsp.extract.checkpoint``), its value, the resolved path, the
    stage run that reads it and the generic key that says what belongs there."""

    key: str
    value: str
    path: Path
    stage: str
    generic: str

    def message(self, paths: RunPaths) -> str:
        where = "" if Path(self.value).expanduser().is_absolute() else \
            f" (relative to the run directory {paths.root})"
        return (f"{self.key}: {self.value} does not exist{where}; {self.stage} reads it. Put "
                f"there {WHAT[self.generic]}")


def _local(value: str, paths: RunPaths) -> Path | None:
    """The local path ``value`` names, or None for a URL (http, s3, gs, youtube...)."""
    try:
        return paths.resolve_uri(value)
    except ValueError:
        return None


def _key(instance: str, section: str, field: str, params: Params) -> str:
    """Where ``section.field`` of stage run ``instance`` is written: the variant's override,
    the base stage's, or the section itself."""
    name, _, variant = instance.partition("@")
    variant = params.compare.runs()[variant][0] if variant else ""
    overrides = getattr(params.compare.variants[variant], section, {}) if variant else {}
    if field in overrides:
        return f"compare.variants.{variant}.{section}.{field}"
    if name == "base" and section == "pretrain" and field in params.base.pretrain:
        return f"base.pretrain.{field}"
    return f"{section}.{field}"


def file_keys(params: Params, paths: RunPaths, runs: Iterable[str]) -> list[FileKey]:
    """The file-valued keys the stage runs ``runs`` read, with their resolved paths."""
    out: list[FileKey] = []
    for inst in runs:
        stage, p, _ = bind(inst, params, paths)
        name = stage.name
        wanted: list[tuple[str, str]] = []
        if name == "ingest":
            wanted = [("dataset", "annotations"), ("dataset", "label_map"),
                      ("dataset", "metadata")]
        elif name == "download":
            wanted = [("download", "mirror")]
        elif name in ("base", "pretrain"):
            wanted = [("pretrain", "init_checkpoint"), ("pretrain", "corpus")]
        elif name == "gvf":
            wanted = [("gvf", "checkpoint") if p.gvf.checkpoint else
                      ("pretrain", "init_checkpoint")]
        elif name == "extract":
            wanted = [("extract", "checkpoint") if p.extract.checkpoint or p.pretrain.enabled
                      else ("pretrain", "init_checkpoint"), ("extract", "flow_checkpoint")]
        elif name == "evaluate":
            wanted = [("localize", "class_scores"), ("localize", "blocked")]
        for section, field in wanted:
            value = getattr(getattr(p, section), field)
            local = _local(value, paths) if value else None
            if local is not None:
                out.append(FileKey(_key(inst, section, field, params), value, local, inst,
                                   f"{section}.{field}"))
    return out


def _made_by(params: Params, paths: RunPaths, runs: Iterable[str]) -> list[Path]:
    """Every output (file or folder) of the stage runs ``runs``."""
    made = []
    for inst in runs:
        stage, p, scoped = bind(inst, params, paths)
        made += [o.resolve() for o in stage.outputs(p, scoped)]
    return made


def missing_files(params: Params, paths: RunPaths,
                  runs: Iterable[str] | None = None) -> list[FileKey]:
    """The file-valued keys of ``runs`` (default: every enabled stage run) whose path
    neither exists nor is made by an enabled stage run."""
    enabled = instances(params)
    checked = enabled if runs is None else [r for r in runs if r in enabled]
    made = _made_by(params, paths, enabled)
    out: dict[str, FileKey] = {}
    for fk in file_keys(params, paths, checked):
        path = fk.path.resolve()
        if fk.key in out or path.exists() or any(path.is_relative_to(m) for m in made):
            continue
        out[fk.key] = fk
    return list(out.values())


def check_files(params: Params, paths: RunPaths, runs: Iterable[str] | None = None) -> None:
    """Raise a one-line :class:`ConfigError` naming the first missing user-supplied file
    (and how many more there are)."""
    missing = missing_files(params, paths, runs)
    if not missing:
        return
    first, more = missing[0], ""
    if len(missing) > 1:
        more = f" (also missing: {', '.join(m.key for m in missing[1:])})"
    raise ConfigError(first.message(paths) + more)


def runs_of(names: Iterable[str], params: Params) -> list[str]:
    """Stage runs of ``names`` (``NAME`` of a per-variant stage: every variant)."""
    out = []
    for name in names:
        if "@" in name or not STAGES[name].per_variant:
            out.append(name)
        else:
            out += [f"{name}@{v}" for v in params.compare.runs()]
    return out
