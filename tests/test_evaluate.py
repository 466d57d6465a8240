"""Scoring predictions against labels, without torch: the repaired labels and the raw ones."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np

from cobbnet.infer.evaluate import AS_LABELLED, per_image_csv, score
from cobbnet.io.aasce import Sample
from cobbnet.spine.cobb import cobb_angles_batch

W, H = 80, 200


def sample(lm, name):
    angles = cobb_angles_batch(np.asarray(lm)[None], np.array([H]))[0][0]
    return Sample(name, Path(name), np.asarray(lm, dtype=np.float64), angles, W, H)


def test_score_compares_with_the_repaired_label_and_keeps_the_raw_figures(make_spine):
    spine = make_spine(W, H, bend=15.0)
    slipped = np.concatenate([spine[1:], spine[:1]])  # the top vertebra listed last
    samples = [sample(spine, "good"), sample(slipped, "slipped")]
    pred = np.stack([spine, spine])  # both read perfectly
    metrics, pred_angles, true_angles = score(samples, pred)
    assert metrics["labels_repaired"] == ["slipped"]
    assert metrics["levels_right_pct"] == 100.0 and metrics["landmark_error_px"] == 0.0
    assert metrics["levels_right_pct_as_labelled"] == 50.0
    assert metrics["landmark_error_px_as_labelled"] > 5.0  # half the radiographs off by a level
    assert metrics["landmark_error_matched_px_as_labelled"] == metrics["landmark_error_matched_px"] == 0.0

    rows = list(csv.DictReader(io.StringIO(per_image_csv(samples, pred_angles, true_angles, pred))))
    assert [r["levels_wrong"] for r in rows] == ["0", "0"] and float(rows[1]["landmark_error_px"]) == 0.0


def test_score_without_faulty_labels_gives_the_same_figures_twice(make_spine):
    spine = make_spine(W, H, bend=15.0)
    off = spine + np.array([3.0, 0.0])
    metrics, _, _ = score([sample(spine, "a")], off[None])
    assert metrics["labels_repaired"] == []
    for key in AS_LABELLED:
        assert metrics[f"{key}_as_labelled"] == metrics[key]
    assert np.isclose(metrics["landmark_error_px"], 3.0)
