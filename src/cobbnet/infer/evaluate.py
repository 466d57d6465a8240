"""Evaluation of a checkpoint on a labelled split: the paper's Table I and more.

Writes ``metrics.json``, ``per_image.csv`` (name, true and predicted angles, errors, the
number of vertebrae named wrong and the spine's level shift, landmarks) and three plots;
returns the metrics.

Landmarks are scored against the labels as the audit repairs them for training
(``audit.repaired_landmarks``): a label whose vertebrae are listed out of order is put in
canonical order first, since against it as written every level would count as misnamed.
``labels_repaired`` names those labels, and the figures against the labels as written are
kept beside the others with the suffix ``_as_labelled``. ``evaluate_folds`` scores each model of a cross-validation run on its
own validation fold and reports mean and spread across folds.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cobbnet.errors import InputError
from cobbnet.infer.bundle import bundled_checkpoint
from cobbnet.infer.predict import Predictor
from cobbnet.io.aasce import Sample, read_split
from cobbnet.io.outputs import write_json, write_text
from cobbnet.io.splits import split_indices
from cobbnet.report.plots import plot_evaluation
from cobbnet.spine.audit import repaired_landmarks
from cobbnet.spine.chain import LEVEL_MARGIN
from cobbnet.spine.cobb import ANGLE_COLUMNS, cobb_angles_batch
from cobbnet.spine.landmarks import LEVELS, to_p2
from cobbnet.spine.metrics import landmark_error_by_level, level_shift, summarize


def predict_samples(predictor: Predictor, samples: Sequence[Sample], batch_size: int = 4,
                    on_batch: Callable[[int], None] | None = None
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Predicted landmarks ``(N, 17, 4, 2)`` (original px), scores ``(N, 17)``, stage 1's
    landmarks before stage 2 ``(N, 17, 4, 2)`` and level margins ``(N,)``
    (``Prediction.level_margin``; inf for a rejected radiograph) for samples."""
    landmarks, scores, stage1, margins = [], [], [], []
    paths = [s.image_path for s in samples]
    for pred in predictor.predict_paths(paths, batch_size=batch_size):
        landmarks.append(pred.landmarks)
        scores.append(pred.scores)
        stage1.append(pred.stage1_landmarks if pred.stage1_landmarks is not None else pred.landmarks)
        margins.append(getattr(pred, "level_margin", np.inf))
        if on_batch:
            on_batch(1)
    return np.stack(landmarks), np.stack(scores), np.stack(stage1), np.array(margins, dtype=np.float64)


# Evaluation reads every model in fp32 unless told otherwise: figures to compare must not
# depend on the machine. Under bf16 autocast, which `auto` picks on a CPU with native bf16, the
# shipped stage 1's SMAPE on the frozen split read 7.90 instead of 8.12.
PRECISION = "fp32"
AS_LABELLED = ("landmark_error_px", "landmark_error_matched_px", "levels_right_pct")  # also scored against the raw labels


def score(samples: Sequence[Sample], pred_landmarks: np.ndarray,
          labels: tuple[np.ndarray, list[str]] | None = None) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
    """Metrics, predicted angles ``(N, 3)`` and true angles ``(N, 3)`` for a set of predictions.

    Radiographs the predictor rejected (NaN landmarks) are counted in ``n_rejected`` and left
    out of every other figure; their predicted angles are NaN. Landmarks are compared with
    the repaired labels (``repaired_landmarks``); ``labels_repaired`` lists them, and each key
    of ``AS_LABELLED`` is also given against the labels as written (``<key>_as_labelled``).
    ``labels`` is ``repaired_landmarks(samples)`` where the caller has it already.
    """
    heights = np.array([s.height for s in samples], dtype=np.float64)
    true_lm, repaired = repaired_landmarks(samples) if labels is None else labels
    true_angles = np.stack([s.angles if s.angles is not None else cobb_angles_batch(true_lm[i:i + 1], [s.height])[0][0]
                            for i, s in enumerate(samples)])
    ok = np.isfinite(pred_landmarks).all(axis=(1, 2, 3))
    pred_angles = np.full_like(true_angles, np.nan)
    if not ok.any():
        return {"n_images": len(samples), "n_rejected": int(len(samples))}, pred_angles, true_angles
    pred_angles[ok] = cobb_angles_batch(pred_landmarks[ok], heights[ok])[0]
    metrics = summarize(pred_angles[ok], true_angles[ok], pred_landmarks[ok], true_lm[ok])
    metrics["n_rejected"] = int((~ok).sum())
    as_labelled = metrics
    if repaired:
        raw = np.stack([s.landmarks for s in samples])
        as_labelled = summarize(pred_angles[ok], true_angles[ok], pred_landmarks[ok], raw[ok])
    metrics.update({f"{k}_as_labelled": as_labelled[k] for k in AS_LABELLED})
    metrics["labels_repaired"] = repaired
    return metrics, pred_angles, true_angles


def level_doubts(pred_landmarks: np.ndarray, true_landmarks: np.ndarray, margins: np.ndarray) -> dict[str, float]:
    """How the "level names uncertain" warning (margin under ``LEVEL_MARGIN``) falls on the
    read radiographs: the share marked, and the share of the misnamed (not all 17 levels
    right) and of the rightly named that are marked. NaN where a group is empty."""
    read = np.isfinite(pred_landmarks).all(axis=(1, 2, 3))
    if not read.any():
        return {}
    wrong = level_shift(pred_landmarks[read], true_landmarks[read])[0] > 0
    marked = margins[read] < LEVEL_MARGIN
    share = lambda m: 100.0 * float(m.mean()) if len(m) else float("nan")  # noqa: E731
    return {"levels_in_doubt_pct": share(marked), "misnamed_in_doubt_pct": share(marked[wrong]),
            "right_in_doubt_pct": share(marked[~wrong])}


def per_image_csv(samples: Sequence[Sample], pred_angles: np.ndarray, true_angles: np.ndarray,
                  pred_landmarks: np.ndarray, margins: np.ndarray | None = None,
                  true_landmarks: np.ndarray | None = None) -> str:
    """One row per radiograph; landmarks compared with ``true_landmarks`` ``(N, 17, 4, 2)``
    (default: the labels repaired as in ``score``)."""
    buf = io.StringIO()
    writer = csv.writer(buf)
    point_cols = [f"{lvl}_{c}{axis}" for lvl in LEVELS for c in ("tl", "tr", "bl", "br") for axis in "xy"]
    writer.writerow(["filename", *[f"true_{c}" for c in ANGLE_COLUMNS], *[f"pred_{c}" for c in ANGLE_COLUMNS],
                     *[f"error_{c}" for c in ANGLE_COLUMNS], "landmark_error_px", "levels_wrong", "level_shift",
                     "level_margin", *point_cols])
    true_lm = repaired_landmarks(samples)[0] if true_landmarks is None else true_landmarks
    lm_err = np.linalg.norm(pred_landmarks - true_lm, axis=-1).mean(axis=(1, 2))
    read = np.isfinite(pred_landmarks).all(axis=(1, 2, 3))  # a rejected image has no levels: blank cells
    levels = [[""] * 2 for _ in samples]
    if read.any():
        for i, wrong, shift in zip(np.flatnonzero(read), *level_shift(pred_landmarks[read], true_lm[read]), strict=True):
            levels[i] = [int(wrong), int(shift)]
    margin = ["" if not read[i] or margins is None or not np.isfinite(margins[i]) else round(float(margins[i]), 3)
              for i in range(len(samples))]
    for i, s in enumerate(samples):
        writer.writerow([s.name, *np.round(true_angles[i], 4), *np.round(pred_angles[i], 4),
                         *np.round(pred_angles[i] - true_angles[i], 4), round(float(lm_err[i]), 3),
                         *levels[i], margin[i], *np.round(to_p2(pred_landmarks[i]).ravel(), 2)])
    return buf.getvalue()


def evaluate(checkpoint_path: str | os.PathLike | None, samples: Sequence[Sample], out: str | os.PathLike,
             precision: str = PRECISION, batch_size: int = 4,
             on_batch: Callable[[int], None] | None = None,
             refine: str | os.PathLike | bool | None = None, gate: bool = True,
             edge_prior: bool = True, views: int | None = None) -> dict[str, Any]:
    """Evaluate one model on samples; write metrics.json, per_image.csv and plots under ``out``.

    With stage 2 on, stage 1 alone (its chain's landmarks before stage 2) is scored from the
    same run into ``out/stage1/metrics.json``.
    """
    out = Path(out)
    predictor = Predictor(checkpoint_path, refine=refine, precision=precision, gate=gate, edge_prior=edge_prior,
                          views=views)
    pred_lm, _, stage1_lm, margins = predict_samples(predictor, samples, batch_size, on_batch)
    labels = repaired_landmarks(samples)
    true_lm = labels[0]
    metrics, pred_angles, true_angles = score(samples, pred_lm, labels)
    metrics.update(level_doubts(pred_lm, true_lm, margins))
    metrics["fps"] = predictor.network_images / max(predictor.network_seconds, 1e-9)
    metrics["mode"] = predictor.mode
    metrics["model"] = predictor.model
    metrics["stage2"] = predictor.refines
    metrics["stage2_views"] = predictor.views if predictor.refines else 0
    metrics["edge_prior"] = predictor.edge_prior
    if predictor.refines:
        write_json(out / "stage1" / "metrics.json", {**score(samples, stage1_lm, labels)[0], "model": predictor.model,
                                                     "stage2": False})
    write_text(out / "per_image.csv", per_image_csv(samples, pred_angles, true_angles, pred_lm, margins, true_lm))
    level_errors = landmark_error_by_level(pred_lm, true_lm)
    plot_evaluation(out, true_angles, pred_angles, level_errors)
    write_json(out / "metrics.json", metrics)
    return metrics


def fold_samples(checkpoint_path: str | os.PathLike | None, samples: Sequence[Sample]) -> list[Sample]:
    """The validation fold a checkpoint (None: the bundled one) was trained without, from its config."""
    path = Path(checkpoint_path or bundled_checkpoint())
    meta = path.with_suffix(".json")
    try:
        d = json.loads(meta.read_text(encoding="utf-8"))["config"]["data"]
    except (OSError, ValueError, KeyError) as err:
        raise InputError(f"{meta}: no training split in this checkpoint config ({err})") from None
    _, val_idx = split_indices([s.name for s in samples], d.get("folds", 15), d.get("fold", 0),
                               d.get("fold_seed", 0), d.get("holdout", 0.0), d.get("holdout_file"))
    return [samples[i] for i in val_idx]


def evaluate_folds(run: str | os.PathLike, root: str | os.PathLike, split: str, out: str | os.PathLike,
                   precision: str = PRECISION, batch_size: int = 4) -> dict[str, Any]:
    """Evaluate every ``fold-K/best.safetensors`` under a cross-validation run on its own fold."""
    samples = read_split(root, split)
    checkpoints = sorted(Path(run).glob("fold-*/best.safetensors"))
    if not checkpoints:
        raise InputError(f"{run}: no fold-*/best.safetensors checkpoints found")
    per_fold = {}
    for ckpt in checkpoints:
        fold = ckpt.parent.name
        per_fold[fold] = evaluate(ckpt, fold_samples(ckpt, samples), Path(out) / fold, precision, batch_size)
    keys = [k for k, v in next(iter(per_fold.values())).items() if isinstance(v, (int, float))]
    summary = {k: {"mean": float(np.mean([m[k] for m in per_fold.values()])),
                   "std": float(np.std([m[k] for m in per_fold.values()]))} for k in keys}
    result = {"folds": per_fold, "summary": summary}
    write_json(Path(out) / "metrics.json", result)
    return result
