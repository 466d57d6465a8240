"""The (17, 4, 2) layout: file layouts, canonical order, mirroring and input checks."""

from __future__ import annotations

import numpy as np
import pytest
from spines import AASCE, needs_aasce
from spines import tilted_spine as spine

from cobbnet.errors import InputError
from cobbnet.spine import landmarks as lmk

# A double curve whose apical vertebrae tilt up to 50 degrees: their two smallest-y corners
# are a top and a bottom corner, which an order by image y alone would pair up wrongly.
STEEP_TILTS = [0, 10, 22, 35, 45, 50, 40, 20, 0, -20, -38, -50, -45, -30, -15, -5, 0]


def test_levels_and_level_index():
    assert lmk.LEVELS[0] == "T1" and lmk.LEVELS[11] == "T12" and lmk.LEVELS[-1] == "L5"
    assert lmk.N_VERTEBRAE == 17 and lmk.N_POINTS == 68
    assert lmk.level_index("t7") == 6
    assert lmk.level_index("L1") == 12
    with pytest.raises(ValueError, match="L6"):
        lmk.level_index("L6")


def test_p2_round_trip_and_point_order():
    lm = spine(STEEP_TILTS)
    p2 = lmk.to_p2(lm)
    assert p2.shape == (68, 2)
    for i in (0, 8, 16):  # p2 holds 4 corners a vertebra, vertebrae top to bottom
        np.testing.assert_array_equal(p2[4 * i:4 * i + 4], lm[i])
    np.testing.assert_array_equal(lmk.from_p2(p2), lm)
    np.testing.assert_array_equal(lmk.from_p2(p2.astype(np.uint16)), p2.astype(np.uint16).reshape(17, 4, 2))


def test_csv_round_trip_and_layout():
    lm = spine(STEEP_TILTS)
    width, height = 700.0, 1500.0
    row = lmk.to_csv_row(lm, width, height)
    assert row.shape == (136,)
    np.testing.assert_allclose(row[:68], lm[..., 0].ravel() / width)  # all x first
    np.testing.assert_allclose(row[68:], lm[..., 1].ravel() / height)  # then all y
    np.testing.assert_allclose(lmk.from_csv_row(row, width, height), lm, rtol=1e-12)


def test_csv_row_of_wrong_length_names_the_source():
    with pytest.raises(InputError, match=r"^labels/landmarks\.csv: .*136"):
        lmk.from_csv_row(np.zeros(134), 100, 100, source="labels/landmarks.csv")


def test_canonical_order_keeps_well_ordered_input_exactly():
    for tilts in (np.zeros(17), STEEP_TILTS, -np.asarray(STEEP_TILTS)):
        lm = spine(tilts)
        np.testing.assert_array_equal(lmk.canonical_order(lm), lm)


def test_canonical_order_restores_shuffled_corners_and_vertebrae():
    rng = np.random.default_rng(0)
    lm = spine(STEEP_TILTS)
    for _ in range(20):
        corner_perm = np.array([rng.permutation(4) for _ in range(17)])  # (17, 4)
        shuffled = np.take_along_axis(lm, corner_perm[..., None], axis=1)[rng.permutation(17)]
        np.testing.assert_array_equal(lmk.canonical_order(shuffled), lm)


def test_canonical_order_on_a_batch_matches_single_spines():
    rng = np.random.default_rng(1)
    batch = np.stack([spine(STEEP_TILTS), spine(np.zeros(17)), spine(-np.asarray(STEEP_TILTS))])
    shuffled = np.stack([b[rng.permutation(17)][:, rng.permutation(4)] for b in batch])
    out = lmk.canonical_order(shuffled)
    assert out.shape == (3, 17, 4, 2)
    for b, s in zip(out, shuffled, strict=True):
        np.testing.assert_array_equal(b, lmk.canonical_order(s))
    np.testing.assert_array_equal(out, batch)


def test_canonical_order_of_degenerate_input_does_not_crash():
    same = np.full((17, 4, 2), 7.0)
    np.testing.assert_array_equal(lmk.canonical_order(same), same)


def test_spine_axis_points_down_the_spine():
    axis = lmk.spine_axis(lmk.centers(spine(np.zeros(17))))
    np.testing.assert_allclose(axis, np.tile([0.0, 1.0], (17, 1)), atol=1e-12)
    np.testing.assert_array_equal(lmk.spine_axis(np.zeros((17, 2))), np.tile([0.0, 1.0], (17, 1)))


def test_hflip_twice_is_identity_and_keeps_left_left():
    lm = spine(STEEP_TILTS)
    width = 640.0
    flipped = lmk.hflip(lm, width)
    assert np.all(flipped[:, lmk.TL, 0] < flipped[:, lmk.TR, 0])
    assert np.all(flipped[:, lmk.BL, 0] < flipped[:, lmk.BR, 0])
    np.testing.assert_array_equal(lmk.canonical_order(flipped), flipped)
    np.testing.assert_allclose(lmk.hflip(flipped, width), lm, rtol=0, atol=1e-9)
    integer = np.round(lm)
    np.testing.assert_array_equal(lmk.hflip(lmk.hflip(integer, width), width), integer)
    # y stays; the left and right corners of each endplate trade places
    np.testing.assert_allclose(flipped[..., 1], lm[..., 1][:, [1, 0, 3, 2]])
    np.testing.assert_allclose(lmk.hflip(lm[None], width)[0], flipped)


def test_hflip_matches_a_mirrored_image():
    # a pixel in column j covers x in [j, j + 1), so its centre is at j + 0.5
    width = 9
    image = np.zeros((5, width), np.uint8)
    image[2, 1] = 255
    lm = np.full((17, 4, 2), [1.5, 2.5])
    flipped_image = image[:, ::-1]
    col = int(np.argmax(flipped_image[2]))
    np.testing.assert_allclose(lmk.hflip(lm, width)[..., 0], col + 0.5)


def test_hflip_does_not_modify_its_input():
    lm = spine(STEEP_TILTS)
    before = lm.copy()
    lmk.hflip(lm, 500)
    np.testing.assert_array_equal(lm, before)


@pytest.mark.parametrize("shape", [(17, 4), (16, 4, 2), (67, 2), (17, 4, 3), (68,)])
def test_check_rejects_wrong_shapes_naming_the_source(shape):
    with pytest.raises(InputError, match=r"^labels/a\.jpg\.mat: "):
        lmk.check(np.zeros(shape), "labels/a.jpg.mat")


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_check_rejects_non_finite_values_naming_the_source(bad):
    lm = spine(np.zeros(17))
    lm[5, 2, 1] = bad
    with pytest.raises(InputError, match=r"^labels/b\.jpg\.mat: .*NaN"):
        lmk.check(lm, "labels/b.jpg.mat")
    with pytest.raises(InputError, match=r"^p2: "):
        lmk.from_p2(lmk.to_p2(lm))


def test_check_accepts_both_layouts():
    lm = spine(STEEP_TILTS)
    out = lmk.check(lmk.to_p2(lm))
    assert out.shape == (17, 4, 2) and out.dtype == np.float64
    np.testing.assert_array_equal(out, lm)


@pytest.fixture(scope="module")
def aasce_labels():
    import scipy.io
    from PIL import Image

    labels = AASCE / "labels" / "training"
    names = [n.strip() for n in (labels / "filenames.csv").read_text().splitlines() if n.strip()]
    p2 = np.stack([scipy.io.loadmat(labels / f"{n}.mat")["p2"] for n in names]).astype(np.float64)
    sizes = np.array([Image.open(AASCE / "data" / "training" / n).size for n in names], np.float64)
    rows = np.loadtxt(labels / "landmarks.csv", delimiter=",", ndmin=2)
    return p2.reshape(-1, 17, 4, 2), sizes, rows


@needs_aasce
def test_csv_rows_match_p2_labels(aasce_labels):
    lm, sizes, rows = aasce_labels
    assert len(rows) == len(lm) == 481
    for k in range(len(lm)):  # the csv keeps 5 significant digits of each coordinate
        width, height = sizes[k]
        np.testing.assert_allclose(lmk.from_csv_row(rows[k], width, height), lm[k], atol=0.05)


@needs_aasce
def test_canonical_order_keeps_real_annotations(aasce_labels):
    lm = aasce_labels[0]
    in_order = np.all(np.diff(lmk.centers(lm)[..., 1], axis=1) > 0, axis=1)
    changed = ~np.all(lmk.canonical_order(lm[in_order]) == lm[in_order], axis=(1, 2, 3))
    # real vertebrae tilt up to ~55 degrees; only a handful of malformed annotations
    # (top and bottom corners swapped, collapsed quadrilaterals) may be re-ordered
    assert in_order.sum() > 400
    assert changed.sum() <= 4, np.nonzero(changed)[0]
