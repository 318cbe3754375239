"""Stage ``evaluate``: how well the current feature version localizes actions.

For each method of ``localize.methods`` (BMN, G-TAD), train on the version's
``training`` videos (:mod:`tspipe.localize.train`), predict proposals for its
``validation`` videos, and score them with the ActivityNet-exact proposal metrics
(AR@AN, AUC). Detection: the proposals combined with video-level class scores (top 2
classes x proposal score, as the references do) from a classifier trained on the same
features (:mod:`tspipe.localize.classifier`), scored by mAP at each tIoU and their
average. A trivial baseline is scored beside them: uniform sliding windows at every
scale with one constant score (and, for detection, the classifier's labels), which any
useful model must beat.

Outputs (a variant's paths: ``results/<variant>/...``, ``metrics/<variant>/``,
``plots/<variant>/``): ``results/<version>/<method>/proposals.json`` (ActivityNet result format),
``results/<version>/<method>/detections.json``,
``results/<version>/<method>/history.json`` (per-epoch losses),
``results/<version>/<method>/per_video.npz`` (the scores by video: the comparison's
bootstrap), ``metrics/localize.json``, ``metrics/probe.json`` (linear probes of the
validation clips' features: action vs background, boundary-straddling clips)
and the figures (:mod:`tspipe.localize.plots`), each a CSV and a PNG:
``plots/evaluate_ar_an``, ``plots/evaluate_map_tiou``, ``plots/evaluate_losses``; the
door logs the PNGs to the MLflow run.

``localize.class_scores`` names an external video-level scores file instead (CUHK's
``cuhk_val_simp_share.json`` layout or ``{video_id: {label: score}}``,
:func:`~tspipe.localize.postprocess.load_class_scores`); validation videos it lacks get no
detections and are named in a warning.

Small training sets: with ``localize.epochs`` null, a recipe that would make fewer than
``localize.min_steps`` optimizer steps gets more epochs (its LR step stretched alike,
:meth:`~tspipe.localize.train.Recipe.at_least`): the reference recipes assume
ActivityNet's 627 steps an epoch, SynthActions makes one.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from tspipe.config import LocalizeConfig, Params
from tspipe.data.annotations import Annotations, read_activitynet
from tspipe.errors import StageError
from tspipe.io import atomic_write_json, result_dict
from tspipe.localize import (
    DetectionResult,
    ProposalResult,
    evaluate_detection,
    evaluate_proposals,
    plots,
    read_blocked,
)
from tspipe.localize.bootstrap import video_table
from tspipe.localize.classifier import train_classifier
from tspipe.localize.feature_files import load_features
from tspipe.localize.features import FeatureSet
from tspipe.localize.postprocess import (
    Proposals,
    combine_with_classes,
    load_class_scores,
    results_json,
)
from tspipe.localize.probe import coverage, run_probes, targets
from tspipe.localize.train import (
    RECIPES,
    EpochLoss,
    LocalizationData,
    build_data,
    fit,
    make_model,
    predict,
)
from tspipe.paths import RunPaths
from tspipe.reporting import Reporter
from tspipe.runtime import resolve_device
from tspipe.stages.contract import Stage

log = logging.getLogger(__name__)

BASELINE = "uniform"
PER_VIDEO = "per_video.npz"  # each method's scores by video, beside its results
# Window lengths of the baseline, as fractions of the video, and the step between starts
# as a fraction of the length: 4 scales x overlapping windows, about 100 per video.
BASELINE_SCALES = (0.1, 0.2, 0.4, 0.8)
BASELINE_STEP = 0.25


@dataclass(frozen=True)
class EvaluateStageResult:
    feature_version: str
    results_dir: Path
    train_videos: int
    eval_videos: int
    scores: dict[str, dict[str, float]]  # method -> metric -> value (AR in [0, 1])
    final_loss: dict[str, float]
    figures: list[Path]
    # Linear probes of the validation clips' features (tspipe.localize.probe): task ->
    # balanced_accuracy, clips, positives.
    probes: dict[str, dict[str, float]] = field(default_factory=dict)

    def artifacts(self) -> list[Path]:
        """Files for the MLflow run: the figures."""
        return [p for p in self.figures if p.suffix == ".png"]

    def metrics(self) -> dict[str, float]:
        return {**{f"{m}.{k}": v for m, vals in self.scores.items() for k, v in vals.items()},
                **{f"probe.{t}.balanced_accuracy": v["balanced_accuracy"]
                   for t, v in self.probes.items()}}

    def tags(self) -> dict[str, str]:
        return {"tspipe.feature_version": self.feature_version}

    def to_dict(self) -> dict[str, Any]:
        return result_dict(self)


def uniform_proposals(duration: float, top_k: int = 100) -> tuple[np.ndarray, np.ndarray]:
    """The baseline's windows of one video (seconds) and their constant score."""
    segs = []
    for length in BASELINE_SCALES:
        step = length * BASELINE_STEP
        starts = np.arange(0.0, 1.0 - length + 1e-9, step)
        segs += [(s, s + length) for s in starts]
    seg = np.array(segs[:top_k], dtype=np.float64) * duration
    return seg, np.ones(len(seg))


def run(params: Params, paths: RunPaths, reporter: Reporter) -> EvaluateStageResult:
    cfg = params.localize
    version, feats, ann = _read_inputs(paths)
    train = build_data(ann, feats, subset=cfg.train_subset, scale=cfg.temporal_scale)
    val = build_data(ann, feats, subset=cfg.eval_subset, scale=cfg.temporal_scale)
    device = resolve_device(cfg.device)
    gt = _ground_truth(ann, val)
    board = _Scoreboard(gt, tuple(cfg.tiou_thresholds),
                        _class_scores(cfg, paths, ann, feats, train, val),
                        read_blocked(paths.resolve(cfg.blocked)) if cfg.blocked
                        else frozenset())
    board.add(BASELINE, _baseline(val), paths.results_dir(version, BASELINE))
    histories: dict[str, list[EpochLoss]] = {}
    for method in cfg.methods:
        folder = paths.results_dir(version, method)
        trained = _train_and_predict(method, cfg, train, val, device=device,
                                     reporter=reporter, folder=folder)
        histories[method] = trained.history
        board.add(method, trained.proposals, folder)
        reporter.message(board.summary(method))
    figures = [*plots.ar_an(board.proposals, paths.plot("evaluate", "ar_an")),
               *plots.map_per_tiou(board.detections, paths.plot("evaluate", "map_tiou")),
               *plots.losses(histories, paths.plot("evaluate", "losses"))]
    probes = _probes(ann, feats, [v for v in val.video_ids if v not in board.blocked],
                     seed=cfg.seed)
    reporter.message("evaluate: linear probes (balanced accuracy) " + ", ".join(
        f"{t} {p['balanced_accuracy']:.3f}" for t, p in probes.items()))
    result = EvaluateStageResult(feature_version=version, figures=figures,
                                 results_dir=paths.results_dir(version, BASELINE).parent,
                                 train_videos=len(train.video_ids),
                                 eval_videos=len(val.video_ids), scores=board.scores,
                                 final_loss={m: h[-1].total for m, h in histories.items()},
                                 probes=probes)
    atomic_write_json(paths.metrics("probe"), probes)
    atomic_write_json(paths.metrics("localize"), board.scores)
    return result


def _probes(ann: Annotations, feats: FeatureSet, video_ids: list[str], *,
            seed: int) -> dict[str, dict[str, float]]:
    """Linear probes on the scored videos' clips (those whose clip times are known)."""
    x, labels = {}, {}
    for vid in video_ids:
        timing = feats[vid].timing
        if timing is None:
            continue
        segments = [(s.t_start, s.t_end) for s in ann.videos[vid].segments]
        labels[vid] = targets(coverage(timing.t_start, timing.t_end, segments))
        x[vid] = feats[vid].features
    if len(x) < 2:
        log.warning("linear probes skipped: %d of %d scored videos have clip times",
                    len(x), len(video_ids))
        return {}
    return {t: p.to_dict() for t, p in run_probes(x, labels, seed=seed).items()}


class _Inputs(NamedTuple):
    """What the stage reads: the current feature version's id and features, and the
    annotations."""

    version: str
    features: FeatureSet
    annotations: Annotations


def _read_inputs(paths: RunPaths) -> _Inputs:
    """The current version, whole: every video its index lists, readable, finite and of
    one width, or a named error (FeatureError, ShapeError); never a silent subset."""
    if not paths.features_current.exists():
        raise StageError(f"{paths.features_current}: no features yet; run the extract stage")
    try:
        current = json.loads(paths.features_current.read_text(encoding="utf-8"))
        version, folder = str(current["feature_version"]), str(current["dir"])
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as exc:
        raise StageError(f"{paths.features_current}: not a current-version file (fields "
                         f"'feature_version' and 'dir' expected: {exc}); run the extract "
                         "stage again") from None
    ann = read_activitynet(paths.annotations)
    return _Inputs(version, load_features(paths.resolve(folder), whole=True), ann)


def _ground_truth(ann: Annotations, val: LocalizationData) -> dict[str, Any]:
    """The validation videos' segments as an ActivityNet v1.3 document (what the metrics
    read), each video with the duration its data stands for (``val.durations``)."""
    return {"version": "VERSION 1.3", "database": {
        vid: {"subset": "validation", "duration": float(val.durations[i]),
              "annotations": [{"segment": [s.t_start, s.t_end], "label": s.label}
                              for s in ann.videos[vid].segments]}
        for i, vid in enumerate(val.video_ids)}}


def _class_scores(cfg: LocalizeConfig, paths: RunPaths, ann: Annotations, feats: FeatureSet,
                  train: LocalizationData, val: LocalizationData
                  ) -> dict[str, dict[str, float]]:
    """Video-level class scores of the validation videos: ``localize.class_scores``' file,
    else a classifier trained on the training videos' features."""
    if cfg.class_scores:
        return _external_scores(paths.resolve(cfg.class_scores), val.video_ids)
    train_ids = set(train.video_ids)
    classifier = train_classifier(
        {v: feats[v].features for v in train_ids},
        {v: [s.label for s in ann.videos[v].segments] for v in train_ids},
        ann.classes or sorted({s.label for v in ann.videos.values() for s in v.segments}),
        seed=cfg.seed)
    return classifier.scores({v: feats[v].features for v in val.video_ids})


def _baseline(val: LocalizationData) -> dict[str, Proposals]:
    """The uniform baseline's proposals of every validation video."""
    return {vid: Proposals(*uniform_proposals(float(val.durations[i])))
            for i, vid in enumerate(val.video_ids)}


class _Trained(NamedTuple):
    history: list[EpochLoss]
    proposals: dict[str, Proposals]  # validation video id -> proposals in seconds


def _train_and_predict(method: str, cfg: LocalizeConfig, train: LocalizationData,
                       val: LocalizationData, *, device: torch.device, reporter: Reporter,
                       folder: Path) -> _Trained:
    """Train ``method`` on ``train`` with its reference recipe as ``localize`` overrides it
    (per-epoch losses to ``folder/history.json``), then predict ``val``'s proposals."""
    recipe = replace(RECIPES[method], **{k: getattr(cfg, k) for k in
                                         ("epochs", "batch_size", "lr", "weight_decay")
                                         if getattr(cfg, k) is not None})
    if cfg.epochs is None:
        recipe = recipe.at_least(cfg.min_steps, len(train.video_ids))
    torch.manual_seed(cfg.seed)
    model = make_model(method, train.feat_dim, cfg.temporal_scale, cfg.model_size)
    history = fit(method, model, train, recipe, device=device, amp=cfg.amp,
                  seed=cfg.seed, reporter=reporter)
    atomic_write_json(folder / "history.json", [h.__dict__ for h in history])
    return _Trained(history, predict(method, model, val, device=device, amp=cfg.amp,
                                     batch_size=recipe.batch_size))


@dataclass
class _Scoreboard:
    """Each method's proposals and detections, written and scored against ``gt``:
    ``scores`` (method -> metric -> value), the curves behind them (``proposals``,
    ``detections``)."""

    gt: dict[str, Any]
    tiou: tuple[float, ...]
    class_scores: dict[str, dict[str, float]]
    blocked: frozenset[str]  # left out of ground truth and results, as the official code
    scores: dict[str, dict[str, float]] = field(default_factory=dict)
    proposals: dict[str, ProposalResult] = field(default_factory=dict)
    detections: dict[str, DetectionResult] = field(default_factory=dict)

    def add(self, method: str, by_video: dict[str, Proposals], folder: Path) -> None:
        """Write ``folder/proposals.json`` and ``folder/detections.json`` (the proposals
        with the video's top classes) and score both."""
        # Detections of a class with no validation ground truth are left out: mAP averages
        # over the classes the subset has, so they could not count, and the official
        # evaluation (like tspipe's) refuses a label it has no ground truth of.
        # Blocked videos' ground truth does not count: a class only they hold has none.
        gt_classes = {a["label"] for vid, e in self.gt["database"].items()
                      if vid not in self.blocked for a in e["annotations"]}
        doc = results_json(by_video)
        atomic_write_json(folder / "proposals.json", doc, indent=None)
        result = evaluate_proposals(self.gt, doc, tiou=self.tiou, blocked=self.blocked)
        dets = results_json({v: _known(combine_with_classes(p, self.class_scores.get(v, {})),
                                       gt_classes)
                             for v, p in by_video.items()})
        atomic_write_json(folder / "detections.json", dets, indent=None)
        self.detections[method] = evaluate_detection(self.gt, dets, tiou=self.tiou,
                                                     blocked=self.blocked)
        # Per video, for the comparison's bootstrap (tspipe.localize.bootstrap).
        video_table(self.gt, doc, dets, tiou=self.tiou, blocked=self.blocked).save(
            folder / PER_VIDEO)
        self.scores[method] = {**result.metrics(), **self.detections[method].metrics()}
        self.proposals[method] = result

    def summary(self, method: str) -> str:
        """One line: ``method``'s AUC, AR@100 and average mAP beside the baseline's."""
        ours, base = self.scores[method], self.scores[BASELINE]
        return (f"evaluate: {method} AUC {ours['auc'] * 100:.2f} "
                f"(baseline {base['auc'] * 100:.2f}), AR@100 "
                f"{ours['ar_at_100'] * 100:.2f}, average mAP "
                f"{ours['average_map'] * 100:.2f} (baseline "
                f"{base['average_map'] * 100:.2f})")


def _external_scores(path: Path, video_ids: list[str]) -> dict[str, dict[str, float]]:
    """``localize.class_scores`` read for ``video_ids`` (matched up to ActivityNet's ``v_``
    prefix); a video it lacks gets no detections, and is named in a warning."""
    ext = load_class_scores(path)
    scores = {v: s for v in video_ids if (s := ext.for_video(v)) is not None}
    missing = [v for v in video_ids if v not in scores]
    if missing:
        log.warning("%s: no class scores for %d of %d validation videos (no detections for "
                    "them, counted as misses): %s", path, len(missing), len(video_ids),
                    ", ".join(missing[:5]) + (f" (+{len(missing) - 5} more)"
                                              if len(missing) > 5 else ""))
    if not scores:
        raise StageError(f"{path}: class scores for none of the {len(video_ids)} validation "
                         f"videos (first ids: {', '.join(video_ids[:3])})")
    return scores


def _known(dets: Any, classes: set[str]) -> Any:
    """The detections whose label is one of ``classes`` (same order)."""
    keep = np.array([label in classes for label in dets.labels], dtype=bool)
    return type(dets)(dets.segments[keep], dets.scores[keep],
                      tuple(label for label in dets.labels if label in classes))


STAGE = Stage(
    name="evaluate",
    help="Train BMN / G-TAD on the current feature version; score their proposals.",
    sections=("localize",),
    run_whole=run,
    # The files localize names are inputs too: new class scores or a new blocked list
    # change the numbers (a cached run must not serve the old ones).
    inputs=lambda params, paths: [paths.features_current, paths.annotations,
                                  *(paths.resolve(f) for f in (params.localize.class_scores,
                                                               params.localize.blocked) if f)],
    outputs=lambda params, paths: [paths.metrics("localize"), paths.metrics("probe"),
                                   *(paths.plot("evaluate", n)
                                     for n in ("ar_an", "map_tiou", "losses"))],
    code=("tspipe.stages.evaluate", "tspipe.localize"),
    per_variant=True,
)
