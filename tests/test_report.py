"""Overlays and the batch CSV (the result JSON: test_result_schema.py)."""

from __future__ import annotations

import csv
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from cobbnet.report.overlay import (
    BATCH_CSV_COLUMNS,
    OUTLINE_COLOURS,
    REGION_COLOURS,
    WARNING,
    _panel_lines,
    draw_curves,
    draw_overlay,
    save_overlay,
    write_batch_csv,
)
from cobbnet.report.result import result_record
from cobbnet.spine.cobb import cobb_angles

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


def test_overlay_draws_outlines_and_every_curve_in_its_region_colour(spine):
    image, lm, result = spine
    assert result.curves
    out = draw_overlay(image, lm, result)
    assert (np.ptp(image.astype(int)) > 0)  # the input is a real gray image
    coloured = (out.max(axis=-1).astype(int) - out.min(axis=-1)) > 60  # gray input has none
    assert coloured.sum() > 500
    drawn = {c.region for c in result.curves}
    for region, colour in REGION_COLOURS.items():
        if region in drawn:
            assert _near(out, colour, tol=20) > 20, region
        else:  # a region with no curve has no colour on the overlay
            assert _near(out, colour, tol=20) < 5, region


def _swatches(rows) -> set:
    return {c for _, _, _, pattern in rows if pattern for c in pattern if c is not None}


def test_legend_shows_exactly_the_colours_drawn(spine):
    image, lm, result = spine
    scores = np.full(17, 0.9)
    rows = _panel_lines(result, scores, "t")
    regions = {REGION_COLOURS[c.region] for c in result.curves}
    assert _swatches(rows) == regions | set(OUTLINE_COLOURS)  # no low-confidence vertebra
    scores[3] = 0.1
    assert _swatches(_panel_lines(result, scores, "t")) == regions | set(OUTLINE_COLOURS) | {WARNING}
    drawn = draw_curves(image, lm, result.curves, scores)  # the radiograph without the panel
    for colour in _swatches(_panel_lines(result, scores, "t")):  # each swatch's colour is drawn
        assert _near(drawn, colour, tol=20) > 5, colour


def test_overlay_tags_name_regions_not_challenge_columns(spine):
    image, lm, result = spine
    texts = [text for text, *_ in _panel_lines(result, np.full(17, 0.9), "case")]
    for curve in result.curves:
        assert any(t.startswith(f"{curve.region.capitalize()} {curve.angle:.1f}°") for t in texts)
    assert not any(t.split(" ")[0] in ("PT", "MT", "TL") for t in texts)


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


def _records(n: int = 3) -> tuple[list[dict], list]:
    rng = np.random.default_rng(11)
    recs, results = [], []
    for i in range(n):
        image, lm = make_spine(rng)
        res = cobb_angles(lm, 512)
        pred = SimpleNamespace(name=f"img {i},x.png", landmarks=lm, scores=rng.uniform(0, 1, 17),
                               cobb=res, image_size=(256, 512), warnings=["w1", "w2"] if i == 1 else [])
        recs.append(result_record(pred))
        results.append(res)
    rejected = SimpleNamespace(name="blank.png", landmarks=None, scores=None, cobb=None,
                               image_size=(256, 512), status="rejected", reason="no spine found")
    recs.append(result_record(rejected))
    return recs, results


def test_batch_csv_header_and_values(tmp_path):
    recs, results = _records()
    path = write_batch_csv(tmp_path / "results.csv", recs)
    assert path.read_text().splitlines()[0] == ",".join(BATCH_CSV_COLUMNS) == (
        "input,status,proximal_thoracic_deg,proximal_thoracic_levels,main_thoracic_deg,"
        "main_thoracic_levels,thoracolumbar_lumbar_deg,thoracolumbar_lumbar_levels,major_region,"
        "challenge_angle_1_deg,challenge_angle_2_deg,challenge_angle_3_deg,warnings")
    rows = list(csv.DictReader(path.open(newline="")))
    assert len(rows) == 4
    for i, (row, res) in enumerate(zip(rows, results, strict=False)):
        assert row["input"] == f"img {i},x.png" and row["status"] == "ok"  # a comma survives quoting
        for k in range(3):
            assert float(row[f"challenge_angle_{k + 1}_deg"]) == pytest.approx(res.angles[k], abs=0.05)
        major = max(res.curves, key=lambda c: c.angle)
        assert row["major_region"] == major.region
        key = major.region.replace("/", "_").replace(" ", "_")
        assert float(row[f"{key}_deg"].split(";")[0]) == pytest.approx(major.angle, abs=0.05)
        assert major.levels[0] in row[f"{key}_levels"]
    assert rows[1]["warnings"] == "w1; w2"
    rejected = rows[3]
    assert rejected["status"] == "rejected"
    assert all(rejected[c] == "" for c in BATCH_CSV_COLUMNS if c.endswith(("_deg", "_levels")))


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
