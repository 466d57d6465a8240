"""The challenge's Cobb angle rules, on spines built from known vertebra tilts.

Each vertebra of a built spine is a rectangle tilted by a chosen angle, so the angle between
two vertebrae is the difference of their tilts and every expected value below is worked out
from the tilts, not from the code under test.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from spines import AASCE, needs_aasce
from spines import tilted_spine as spine

from cobbnet.spine import cobb
from cobbnet.spine.landmarks import BL, BR, LEVELS, TL, TR


def chord_sides(lm: np.ndarray) -> np.ndarray:
    """Side (-1, 0, +1) of the endplate midpoints 0..31 relative to the chord from the first
    upper to the last lower endplate midpoint: one side is a C spine, both an S spine."""
    upper, lower = (lm[:, TL] + lm[:, TR]) / 2, (lm[:, BL] + lm[:, BR]) / 2
    e = np.stack([upper, lower], 1).reshape(34, 2)
    chord, rel = e[33] - e[0], e[:32] - e[0]
    return np.sign(chord[0] * rel[:, 1] - chord[1] * rel[:, 0])


# A single curve from T4 (tilt 15) to L2 (tilt -20): 35 degrees. T1 and L5 are not the most
# tilted vertebrae above and below it, so the C rule (A[0, up], A[16, lo]) and the S rule
# (maxima above and below) give different answers.
C_TILTS = np.array([8, 5, 11, 15, 11.5, 8, 4.5, 1, -2.5, -6, -9.5, -13, -16.5, -20, -15, -8, -12])
C_UP, C_LO = 3, 13
C_ANGLES = [15 - -20, abs(8 - 15), abs(-12 - -20)]  # A[3, 13], A[0, 3], A[16, 13]

# Two curves: T5 (tilt 12) to T11 (tilt -18), 30 degrees, and T11 to L4 (tilt 8), 26 degrees.
S_TILTS = np.array([4, 0, 4, 8, 12, 7, 2, -3, -8, -13, -18, -13, -8, -3, 2, 8, 5])
S_UP, S_LO = 4, 10
# angle 2 = max of A[4, 0..4] = |12 - 0|, reached at T2 (m = 1)
S_ANGLE2, S_M = 12.0, 1
# s < H: angle 3 = max of A[10, 10..16] = |-18 - 8| at L4; otherwise max of A[1, 0..1] = |0 - 4|
S_ANGLE3_LOW, S_LOW_END = 26.0, 15
S_ANGLE3_HIGH = 4.0


def endplate_y_sum(lm: np.ndarray, i: int, j: int, which: str) -> float:
    corners = (BL, BR) if which == "lower" else (TL, TR)
    return float(sum((lm[k, corners[0], 1] + lm[k, corners[1], 1]) / 2 for k in (i, j)))


def test_built_spines_have_the_intended_shape():
    assert np.all(chord_sides(spine(C_TILTS))[1:] == chord_sides(spine(C_TILTS))[1])
    assert set(chord_sides(spine(S_TILTS))) >= {-1.0, 1.0}
    direction = cobb.direction_vectors(spine(C_TILTS)[None])[0]
    np.testing.assert_allclose(np.degrees(np.arctan2(direction[:, 1], direction[:, 0])), C_TILTS)


def test_straight_spine_gives_zero_angles_and_c():
    # a leaning straight spine on integer coordinates: axis (-3, 4), vertebrae across it (4, 3)
    c = np.array([400.0, 50.0]) + np.arange(17)[:, None] * np.array([-9.0, 12.0])
    half_w, half_h = np.array([8.0, 6.0]), np.array([-3.0, 4.0])
    lm = np.stack([c - half_w - half_h, c + half_w - half_h, c - half_w + half_h,
                   c + half_w + half_h], axis=1)
    result = cobb.cobb_angles(lm, 1000)
    np.testing.assert_array_equal(result.angles, [0.0, 0.0, 0.0])
    assert result.shape == "C"
    assert result.curves == []


def test_c_curve_angles_pairs_and_levels():
    result = cobb.cobb_angles(spine(C_TILTS), height=2000)
    assert result.shape == "C"
    np.testing.assert_allclose(result.angles, C_ANGLES, atol=1e-6)
    np.testing.assert_array_equal(result.pairs, [[C_UP, C_LO], [0, C_UP], [C_LO, 16]])
    assert result.pair_levels == [("T4", "L2"), ("T1", "T4"), ("L2", "L5")]
    # the S rule would have given different angles 2 and 3 on this spine
    assert max(abs(15 - t) for t in C_TILTS[:C_UP + 1]) != C_ANGLES[1]
    assert max(abs(-20 - t) for t in C_TILTS[C_LO:]) != C_ANGLES[2]


def test_c_curve_is_c_whatever_the_image_height():
    for height in (100, 500, 5000):
        result = cobb.cobb_angles(spine(C_TILTS), height)
        assert result.shape == "C"
        np.testing.assert_allclose(result.angles, C_ANGLES, atol=1e-6)


def test_s_curve_with_curves_in_the_upper_half():
    lm = spine(S_TILTS)
    height = 2000.0
    assert endplate_y_sum(lm, S_UP, S_LO, "lower") < height
    result = cobb.cobb_angles(lm, height)
    assert result.shape == "S"
    np.testing.assert_allclose(result.angles, [30.0, S_ANGLE2, S_ANGLE3_LOW], atol=1e-6)
    np.testing.assert_array_equal(result.pairs, [[S_UP, S_LO], [S_M, S_UP], [S_LO, S_LOW_END]])
    assert result.pair_levels == [("T5", "T11"), ("T2", "T5"), ("T11", "L4")]
    # the C rule would have measured A[0, 4] = 8 and A[16, 10] = 23
    assert (abs(S_TILTS[0] - 12), abs(S_TILTS[16] - -18)) == (8, 23)


def test_s_curve_with_curves_low_in_the_image():
    lm = spine(S_TILTS)
    height = 500.0
    assert endplate_y_sum(lm, S_UP, S_LO, "lower") >= height
    result = cobb.cobb_angles(lm, height)
    assert result.shape == "S"
    np.testing.assert_allclose(result.angles, [30.0, S_ANGLE2, S_ANGLE3_HIGH], atol=1e-6)
    np.testing.assert_array_equal(result.pairs, [[S_UP, S_LO], [S_M, S_UP], [0, S_M]])
    assert result.pair_levels[2] == ("T1", "T2")


def test_height_test_uses_lower_endplate_midpoints():
    lm = spine(S_TILTS)
    s_lower = endplate_y_sum(lm, S_UP, S_LO, "lower")
    s_upper = endplate_y_sum(lm, S_UP, S_LO, "upper")
    height = (s_lower + s_upper) / 2  # upper midpoints: s < H; lower midpoints: s >= H
    assert s_upper < height <= s_lower
    angles = cobb.cobb_angles(lm, height).angles
    assert angles[2] == pytest.approx(S_ANGLE3_HIGH, abs=1e-6)
    # taking the upper endplate midpoints would have given the other branch's 26 degrees
    assert abs(S_ANGLE3_LOW - S_ANGLE3_HIGH) > 20
    # the switch happens exactly at the lower-midpoint sum
    assert cobb.cobb_angles(lm, s_lower + 1e-6).angles[2] == pytest.approx(S_ANGLE3_LOW, abs=1e-6)
    assert cobb.cobb_angles(lm, s_lower).angles[2] == pytest.approx(S_ANGLE3_HIGH, abs=1e-6)


def test_angles_above_90_degrees_are_kept():
    lm = spine(C_TILTS)
    flipped = 1
    lm[flipped] = lm[flipped][[TR, TL, BR, BL]]  # left and right corners swapped
    # its direction is reversed: 180 - |tilt difference| to every other vertebra; the nearest
    # tilt to T2's 5 degrees is T7's 4.5
    others = np.delete(C_TILTS, flipped)
    expected = 180 - np.min(np.abs(C_TILTS[flipped] - others))
    assert expected == 179.5
    result = cobb.cobb_angles(lm, 2000)
    # near 180 degrees, rounding the cosine to 8 decimals moves the angle by up to ~3e-5
    assert result.angles[0] == pytest.approx(expected, abs=1e-4)
    assert result.angles[0] > 90  # clipping cosines at 0 would cap this at 90
    np.testing.assert_array_equal(result.pairs[0], [1, 6])
    A = cobb.angle_matrix(lm[None])[0]
    assert A[1, 0] == pytest.approx(180 - 3, abs=1e-4)


def test_angle_matrix_rounds_cosines_to_8_decimals():
    tilts = np.zeros(17)
    tilts[5] = 1e-5  # cos(1e-5 degrees) = 1 - 1.5e-14 rounds to 1
    A = cobb.angle_matrix(spine(tilts)[None])[0]
    assert A.shape == (17, 17)
    assert np.all(A == 0.0)
    tilts[5] = 0.1
    A = cobb.angle_matrix(spine(tilts)[None])[0]
    assert A[5, 0] == pytest.approx(0.1, abs=1e-3)
    np.testing.assert_array_equal(A, A.T)


def test_batch_equals_single():
    rng = np.random.default_rng(0)
    flipped = spine(C_TILTS)
    flipped[8] = flipped[8][[TR, TL, BR, BL]]
    spines = [spine(C_TILTS), spine(S_TILTS), spine(S_TILTS), flipped]
    spines += [spine(rng.uniform(-25, 25, 17)) + rng.normal(0, 2, (17, 4, 2)) for _ in range(12)]
    lm = np.stack(spines)
    heights = np.concatenate([[2000, 2000, 500, 2000], rng.uniform(600, 1800, 12)])
    angles, pairs, is_s = cobb.cobb_angles_batch(lm, heights)
    assert angles.shape == (16, 3) and pairs.shape == (16, 3, 2) and is_s.shape == (16,)
    assert pairs.dtype == np.int64 and is_s.dtype == bool
    for k in range(len(lm)):
        single = cobb.cobb_angles(lm[k], heights[k])
        np.testing.assert_array_equal(angles[k], single.angles)
        np.testing.assert_array_equal(pairs[k], single.pairs)
        assert single.shape == ("S" if is_s[k] else "C")
    assert np.all(pairs[..., 0] <= pairs[..., 1])
    assert is_s.any() and not is_s.all()


def test_vertical_spine_does_not_crash_and_counts_as_s():
    lm = spine(np.zeros(17))  # every centre at x = 300: x_0 == x_33
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = cobb.cobb_angles(lm, 1000)
    np.testing.assert_array_equal(result.angles, [0.0, 0.0, 0.0])
    assert result.shape == "S"  # the reference's division by x_0 - x_33 = 0 gives NaN


@pytest.mark.parametrize("value", [0.0, 123.0])
def test_all_equal_points_do_not_crash(value):
    lm = np.full((17, 4, 2), value)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = cobb.cobb_angles(lm, 1000)
        result.as_dict()
    assert result.angles.shape == (3,) and np.all(np.isnan(result.angles))
    assert result.shape in ("C", "S") and result.curves == []


def test_one_collapsed_vertebra_is_skipped_like_matlab_max():
    lm = spine(C_TILTS)
    lm[8] = lm[8].mean(axis=0)  # all four corners on one point: no direction
    angles, pairs, _ = cobb.cobb_angles_batch(lm[None], [2000])
    np.testing.assert_allclose(angles[0], C_ANGLES, atol=1e-6)
    np.testing.assert_array_equal(pairs[0, 0], [C_UP, C_LO])


def test_curves_of_the_c_spine():
    curves = cobb.cobb_angles(spine(C_TILTS), 2000).curves
    assert [(c.upper, c.lower) for c in curves] == [(0, C_UP), (C_UP, C_LO), (C_LO, 16)]
    assert [c.region for c in curves] == list(cobb.REGIONS)
    main = curves[1]
    assert main.angle == pytest.approx(35.0, abs=1e-6)
    assert C_UP < main.apex < C_LO
    assert main.convex_to == "image left"  # positive tilts above the apex step the spine left


def test_curves_of_the_s_spine_and_as_dict():
    result = cobb.cobb_angles(spine(S_TILTS), 2000)
    curves = result.curves
    assert [c.region for c in curves] == list(cobb.REGIONS)
    assert [c.convex_to for c in curves[1:]] == ["image left", "image right"]
    d = result.as_dict()
    assert d["shape"] == "S"
    assert d["angles"] == {"pt": 30.0, "mt": 12.0, "tl": 26.0}
    assert d["angle_vertebrae"]["tl"] == {"upper": "T11", "lower": "L4", "upper_index": 10,
                                          "lower_index": 15}
    assert [c["region"] for c in d["curves"]] == list(cobb.REGIONS)


@pytest.mark.parametrize("apex,region", [("T2", 0), ("T5", 0), ("T6", 1), ("T11", 1),
                                         ("T12", 2), ("L4", 2)])
def test_curve_region_follows_the_apex_level(apex, region):
    k = LEVELS.index(apex)
    lm = spine(np.zeros(17))
    lm[k, :, 0] += 20.0  # push one vertebra sideways: the apex of the curve around it
    curves = cobb.anatomical_curves(lm, np.array([10.0]), np.array([[k - 1, k + 1]]))
    assert len(curves) == 1
    assert curves[0].apex == k and curves[0].levels == (LEVELS[k - 1], LEVELS[k + 1], apex)
    assert curves[0].region == cobb.REGIONS[region]
    assert curves[0].convex_to == "image right"


def test_anatomical_curves_drop_duplicates_and_small_angles():
    lm = spine(C_TILTS)
    curves = cobb.anatomical_curves(lm, np.array([35.0, 35.0, 3.0]),
                                    np.array([[3, 13], [3, 13], [13, 16]]), min_angle=5.0)
    assert [(c.upper, c.lower) for c in curves] == [(3, 13)]


def _port_angles(lm: np.ndarray, height: float) -> np.ndarray:
    """The widely used Python port: cosines clipped to [0, 1] and the height test on the
    UPPER endplate midpoints; otherwise the same rules (the S test is shared)."""
    v = (lm[:, TR] + lm[:, BR]) / 2 - (lm[:, TL] + lm[:, BL]) / 2
    norm = np.linalg.norm(v, axis=1)
    A = np.degrees(np.arccos(np.clip(np.round(v @ v.T / np.outer(norm, norm), 8), 0.0, 1.0)))
    up = int(A.max(axis=0).argmax())
    lo = int(A[:, up].argmax())
    if not cobb.is_s_shaped(lm[None])[0]:
        return np.array([A[lo, up], A[0, up], A[16, lo]])
    m = int(A[up, :up + 1].argmax())
    upper_y = (lm[:, TL, 1] + lm[:, TR, 1]) / 2
    if upper_y[up] + upper_y[lo] < height:
        return np.array([A[lo, up], A[up, m], A[lo, lo:].max()])
    return np.array([A[lo, up], A[up, m], A[m, :m + 1].max()])


@pytest.fixture(scope="module")
def aasce_set():
    import scipy.io
    from PIL import Image

    labels = AASCE / "labels" / "training"
    names = [n.strip() for n in (labels / "filenames.csv").read_text().splitlines() if n.strip()]
    p2 = np.stack([scipy.io.loadmat(labels / f"{n}.mat")["p2"] for n in names]).astype(np.float64)
    heights = np.array([Image.open(AASCE / "data" / "training" / n).size[1] for n in names], float)
    angles = np.loadtxt(labels / "angles.csv", delimiter=",", ndmin=2)
    return p2.reshape(-1, 17, 4, 2), heights, angles


@needs_aasce
def test_reproduces_the_challenge_angles(aasce_set):
    lm, heights, truth = aasce_set
    assert len(lm) == len(truth) == 481
    angles, _, _ = cobb.cobb_angles_batch(lm, heights)
    # angles.csv keeps 5 significant digits
    np.testing.assert_allclose(angles, truth, rtol=1e-4, atol=1e-3)


@needs_aasce
def test_port_differences_matter_on_real_radiographs(aasce_set):
    lm, heights, truth = aasce_set
    ours, _, _ = cobb.cobb_angles_batch(lm, heights)
    port = np.stack([_port_angles(lm[k], heights[k]) for k in range(len(lm))])
    differs = np.any(np.abs(port - ours) > 1e-6, axis=1) | np.any(ours > 90, axis=1)
    assert differs.sum() >= 1
    # wherever the two disagree, the challenge's own angles side with these rules
    k = np.nonzero(np.any(np.abs(port - ours) > 1e-6, axis=1))[0]
    assert len(k) >= 1
    np.testing.assert_allclose(ours[k], truth[k], rtol=1e-4, atol=1e-3)
    assert np.all(np.any(np.abs(port[k] - truth[k]) > 0.01, axis=1))
