"""Overlays, per-image records, batch CSV and evaluation plots."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from cobbnet.spine.cobb import ANGLE_COLUMNS, cobb_angles, cobb_angles_batch
from cobbnet.spine.landmarks import LEVELS
from cobbnet.report.overlay import (
    ANGLE_COLOURS,
    WARNING,
    angles_csv,
    draw_overlay,
    result_record,
    save_overlay,
    write_batch_csv,
)

AASCE = Path(__file__).resolve().parents[2] / "shared" / "boostnet_labeldata"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def make_spine(rng: np.random.Generator, size: tuple[int, int] = (512, 256)) -> tuple[np.ndarray, np.ndarray]:
    """A gray image (H, W) and an S-curved column of 17 tilted quads ``(17, 4, 2)``."""
    H, W = size
    t = np.linspace(0.08, 0.9, 17)
    amp, phase = rng.uniform(0.04, 0.1) * W, rng.uniform(0, np.pi)
    cx = W / 2 + amp * np.sin(2 * np.pi * t + phase)
    tilt = np.arctan(amp * 2 * np.pi * np.cos(2 * np.pi * t + phase) / H)  # along the curve
    half_w, half_h = 0.09 * W, 0.38 * (t[1] - t[0]) * H
    local = np.array([[-half_w, -half_h], [half_w, -half_h], [-half_w, half_h], [half_w, half_h]])
    rot = np.stack([np.stack([np.cos(tilt), -np.sin(tilt)], -1),
                    np.stack([np.sin(tilt), np.cos(tilt)], -1)], -2)  # (17, 2, 2)
    lm = np.einsum("vij,cj->vci", rot, local) + np.stack([cx, t * H], -1)[:, None]
    image = np.clip(rng.normal(90, 12, size=size) + np.linspace(0, 60, H)[:, None], 0, 255)
    image = image.astype(np.uint8)
    for quad in lm[:, [0, 1, 3, 2]]:
        cv2.fillConvexPoly(image, np.round(quad).astype(np.int32), 190)
    return image, lm


@pytest.fixture(scope="module")
def spine():
    """A small synthetic radiograph (512 x 256), its landmarks and Cobb angles."""
    image, lm = make_spine(np.random.default_rng(3))
    return image, lm, cobb_angles(lm, image.shape[0])


def _near(rgb: np.ndarray, colour: tuple[int, int, int], tol: int = 40) -> int:
    """Number of pixels within ``tol`` of ``colour`` in every channel."""
    return int((np.abs(rgb.astype(int) - np.array(colour)) <= tol).all(axis=-1).sum())


def test_overlay_is_rgb_same_height_and_wider(spine):
    image, lm, result = spine
    out = draw_overlay(image, lm, result)
    assert out.dtype == np.uint8 and out.ndim == 3 and out.shape[2] == 3
    assert out.shape[0] == image.shape[0]
    assert out.shape[1] > image.shape[1]  # the text panel is appended


def test_overlay_draws_outlines_and_every_angle_colour(spine):
    image, lm, result = spine
    out = draw_overlay(image, lm, result)
    assert (np.ptp(image.astype(int)) > 0)  # the input is a real gray image
    coloured = (out.max(axis=-1).astype(int) - out.min(axis=-1)) > 60  # gray input has none
    assert coloured.sum() > 500
    for col in ANGLE_COLUMNS:
        assert _near(out, ANGLE_COLOURS[col]) > 20, col


def test_overlay_marks_low_confidence_vertebrae(spine):
    image, lm, result = spine
    confident = draw_overlay(image, lm, result, scores=np.full(17, 0.9))
    scores = np.full(17, 0.9)
    scores[5:9] = 0.1
    doubtful = draw_overlay(image, lm, result, scores=scores)
    assert doubtful.shape[0] == confident.shape[0]
    assert _near(doubtful, WARNING) > _near(confident, WARNING) + 100


def test_overlay_accepts_rgb_input_and_title(spine):
    image, lm, result = spine
    rgb = np.stack([image] * 3, axis=-1)
    out = draw_overlay(rgb, lm, result, title="case 7")
    assert out.shape[0] == image.shape[0] and out.dtype == np.uint8


def test_overlay_scales_with_image_size(spine):
    image, lm, result = spine
    big = cv2.resize(image, None, fx=4, fy=4, interpolation=cv2.INTER_LINEAR)
    big_lm = lm * 4
    out_small = draw_overlay(image, lm, result)
    out_big = draw_overlay(big, big_lm, cobb_angles(big_lm, big.shape[0]))
    assert out_big.shape[0] == 4 * image.shape[0]
    # lines and fonts grow with the image: the drawn colour area grows faster than 4x
    def area(o):
        return ((o.max(axis=-1).astype(int) - o.min(axis=-1)) > 60).sum()

    assert area(out_big) > 6 * area(out_small)


def test_save_overlay_writes_png_in_rgb_order(spine, tmp_path):
    image, lm, result = spine
    path = save_overlay(tmp_path / "sub" / "case.png", image, lm, result, np.full(17, 0.5))
    assert path.read_bytes()[:8] == PNG_MAGIC
    back = cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    np.testing.assert_array_equal(back, draw_overlay(image, lm, result, np.full(17, 0.5)))
    assert [p.name for p in path.parent.iterdir()] == ["case.png"]  # no temporary left


def test_result_record_is_json_with_level_named_landmarks(spine):
    image, lm, result = spine
    scores = np.linspace(0.2, 0.95, 17)
    rec = result_record("a.jpg", lm, result, scores, (image.shape[1], image.shape[0]))
    back = json.loads(json.dumps(rec))
    assert {"name", "width", "height", "landmarks", "angles", "angle_vertebrae", "shape",
            "curves", "confidence", "mean_confidence"} <= set(back)
    assert (back["width"], back["height"]) == (256, 512)
    assert list(back["landmarks"]) == list(LEVELS)
    assert set(back["landmarks"]["T1"]) == {"top_left", "top_right", "bottom_left", "bottom_right"}
    np.testing.assert_allclose(back["landmarks"]["L5"]["bottom_right"], lm[16, 3], atol=1e-3)
    np.testing.assert_allclose(back["landmarks"]["T7"]["top_right"], lm[6, 1], atol=1e-3)
    assert list(back["angles"]) == list(ANGLE_COLUMNS)
    np.testing.assert_allclose([back["angles"][c] for c in ANGLE_COLUMNS], result.angles, atol=1e-4)
    assert back["shape"] in ("C", "S")
    assert back["confidence"]["T1"] == pytest.approx(0.2)
    assert back["mean_confidence"] == pytest.approx(scores.mean(), abs=1e-4)


def test_result_record_without_scores(spine):
    image, lm, result = spine
    rec = result_record("a.jpg", lm, result, None, (256, 512))
    json.dumps(rec)
    assert rec["confidence"] is None and rec["mean_confidence"] is None


def _records(n: int = 3):
    rng = np.random.default_rng(11)
    recs, results, scores = [], [], []
    for i in range(n):
        image, lm = make_spine(rng)
        res = cobb_angles(lm, 512)
        sc = rng.uniform(0, 1, 17)
        recs.append(result_record(f"img {i},x.png", lm, res, sc if i else None, (256, 512)))
        results.append(res)
        scores.append(sc)
    return recs, results, scores


def test_batch_csv_header_and_values_round_trip(tmp_path):
    recs, results, scores = _records()
    path = write_batch_csv(tmp_path / "results.csv", recs)
    text = path.read_text()
    assert text.splitlines()[0] == (
        "filename,pt,mt,tl,shape,pt_upper,pt_lower,mt_upper,mt_lower,tl_upper,tl_lower,mean_confidence")
    rows = list(csv.DictReader(path.open(newline="")))
    assert len(rows) == 3
    for i, (row, res) in enumerate(zip(rows, results, strict=True)):
        assert row["filename"] == f"img {i},x.png"  # a comma in a name survives quoting
        for k, col in enumerate(ANGLE_COLUMNS):
            assert float(row[col]) == pytest.approx(res.angles[k], abs=1e-4)
            assert (row[f"{col}_upper"], row[f"{col}_lower"]) == res.pair_levels[k]
        assert row["shape"] == res.shape
    assert rows[0]["mean_confidence"] == ""
    assert float(rows[1]["mean_confidence"]) == pytest.approx(scores[1].mean(), abs=1e-4)


def test_angles_csv_matches_batch_csv_columns(tmp_path):
    recs, results, _ = _records()
    lms = np.stack([r.landmarks for r in results])
    angles, pairs, is_s = cobb_angles_batch(lms, np.full(len(lms), 512.0))
    text = angles_csv([r["name"] for r in recs], angles, pairs, is_s)
    batch = write_batch_csv(tmp_path / "b.csv", recs).read_text()
    strip = [line.rsplit(",", 1)[0] for line in batch.splitlines()]  # drop mean_confidence
    assert text.splitlines() == strip


@pytest.mark.skipif(not AASCE.exists(), reason="AASCE boostnet_labeldata not available")
def test_overlay_on_a_real_radiograph(tmp_path):
    scipy_io = pytest.importorskip("scipy.io")
    name = (AASCE / "labels" / "training" / "filenames.csv").read_text().split("\n")[0].strip()
    image = cv2.imread(str(AASCE / "data" / "training" / name), cv2.IMREAD_GRAYSCALE)
    lm = scipy_io.loadmat(str(AASCE / "labels" / "training" / f"{name}.mat"))["p2"].reshape(17, 4, 2)
    result = cobb_angles(lm, image.shape[0])
    path = save_overlay(tmp_path / "real.png", image, lm, result, title=name)
    out = cv2.imread(str(path))
    assert out.shape[0] == image.shape[0] and out.shape[1] > image.shape[1]
