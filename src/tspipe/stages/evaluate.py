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
``results/<version>/<method>/history.json`` (per-epoch losses), ``metrics/localize.json``
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
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from tspipe.config import Params
from tspipe.errors import StageError
from tspipe.io import atomic_write_json, result_dict
from tspipe.paths import RunPaths
from tspipe.reporting import Reporter

log = logging.getLogger(__name__)

BASELINE = "uniform"
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

    def artifacts(self) -> list[Path]:
        """Files for the MLflow run: the figures."""
        return [p for p in self.figures if p.suffix == ".png"]

    def metrics(self) -> dict[str, float]:
        return {f"{m}.{k}": v for m, vals in self.scores.items() for k, v in vals.items()}

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
    import torch

    from tspipe.data.annotations import read_activitynet
    from tspipe.extract.runner import resolve_device
    from tspipe.localize import evaluate_detection, evaluate_proposals, plots
    from tspipe.localize.classifier import train_classifier
    from tspipe.localize.features import load_features
    from tspipe.localize.postprocess import Proposals, combine_with_classes, results_json
    from tspipe.localize.train import RECIPES, build_data, fit, make_model, predict

    if not paths.features_current.exists():
        raise StageError(f"{paths.features_current}: no features yet; run the extract stage")
    current = json.loads(paths.features_current.read_text(encoding="utf-8"))
    version = current["feature_version"]
    cfg = params.localize
    ann = read_activitynet(paths.annotations)
    feats = load_features(paths.resolve(current["dir"]))
    train = build_data(ann, feats, subset="training", scale=cfg.temporal_scale)
    val = build_data(ann, feats, subset="validation", scale=cfg.temporal_scale)
    device = resolve_device(cfg.device)
    gt = {"version": "VERSION 1.3", "database": {
        vid: {"subset": "validation", "duration": float(val.durations[i]),
              "annotations": [{"segment": [s.t_start, s.t_end], "label": s.label}
                              for s in ann.videos[vid].segments]}
        for i, vid in enumerate(val.video_ids)}}
    tiou = tuple(cfg.tiou_thresholds)
    scores: dict[str, dict[str, float]] = {}
    curves: dict[str, Any] = {}
    detections: dict[str, Any] = {}
    histories: dict[str, Any] = {}
    losses: dict[str, float] = {}

    if cfg.class_scores:
        class_scores = _external_scores(paths.resolve(cfg.class_scores), val.video_ids)
    else:
        train_ids = set(train.video_ids)
        classifier = train_classifier(
            {v: feats[v].features for v in train_ids},
            {v: [s.label for s in ann.videos[v].segments] for v in train_ids},
            ann.classes or sorted({s.label for v in ann.videos.values() for s in v.segments}),
            seed=cfg.seed)
        class_scores = classifier.scores({v: feats[v].features for v in val.video_ids})

    # Detections of a class with no validation ground truth are left out: mAP averages
    # over the classes the subset has, so they could not count, and the official
    # evaluation (like tspipe's) refuses a label it has no ground truth of.
    gt_classes = {a["label"] for e in gt["database"].values() for a in e["annotations"]}

    def score(method: str, by_video: dict[str, Proposals]) -> None:
        folder = paths.results_dir(version, method)
        doc = results_json(by_video)
        atomic_write_json(folder / "proposals.json", doc, indent=None)
        result = evaluate_proposals(gt, doc, tiou=tiou)
        dets = results_json({v: _known(combine_with_classes(p, class_scores.get(v, {})),
                                       gt_classes)
                             for v, p in by_video.items()})
        atomic_write_json(folder / "detections.json", dets, indent=None)
        detections[method] = evaluate_detection(gt, dets, tiou=tiou)
        scores[method] = {**result.metrics(), **detections[method].metrics()}
        curves[method] = result

    score(BASELINE, {vid: Proposals(*uniform_proposals(float(val.durations[i])))
                     for i, vid in enumerate(val.video_ids)})
    for method in cfg.methods:
        recipe = replace(RECIPES[method], **{k: getattr(cfg, k) for k in
                                             ("epochs", "batch_size", "lr", "weight_decay")
                                             if getattr(cfg, k) is not None})
        if cfg.epochs is None:
            recipe = recipe.at_least(cfg.min_steps, len(train.video_ids))
        torch.manual_seed(cfg.seed)
        model = make_model(method, train.feat_dim, cfg.temporal_scale, cfg.model_size)
        history = fit(method, model, train, recipe, device=device, amp=cfg.amp,
                      seed=cfg.seed, reporter=reporter)
        atomic_write_json(paths.results_dir(version, method) / "history.json",
                          [h.__dict__ for h in history])
        losses[method] = history[-1].total
        histories[method] = history
        score(method, predict(method, model, val, device=device, amp=cfg.amp,
                              batch_size=recipe.batch_size))
        reporter.message(f"evaluate: {method} AUC {scores[method]['auc'] * 100:.2f} "
                         f"(baseline {scores[BASELINE]['auc'] * 100:.2f}), AR@100 "
                         f"{scores[method]['ar_at_100'] * 100:.2f}, average mAP "
                         f"{scores[method]['average_map'] * 100:.2f} (baseline "
                         f"{scores[BASELINE]['average_map'] * 100:.2f})")
    figures = [*plots.ar_an(curves, paths.plot("evaluate", "ar_an")),
               *plots.map_per_tiou(detections, paths.plot("evaluate", "map_tiou")),
               *plots.losses(histories, paths.plot("evaluate", "losses"))]
    result = EvaluateStageResult(feature_version=version, figures=figures,
                                 results_dir=paths.results_dir(version, BASELINE).parent,
                                 train_videos=len(train.video_ids),
                                 eval_videos=len(val.video_ids), scores=scores,
                                 final_loss=losses)
    atomic_write_json(paths.metrics("localize"), scores)
    return result


def _external_scores(path: Path, video_ids: list[str]) -> dict[str, dict[str, float]]:
    """``localize.class_scores`` read for ``video_ids`` (matched up to ActivityNet's ``v_``
    prefix); a video it lacks gets no detections, and is named in a warning."""
    from tspipe.localize.postprocess import load_class_scores

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
