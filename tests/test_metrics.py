"""Metrics over a set, checked against small examples worked out by hand."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cobbnet.spine import metrics
from cobbnet.spine.cobb import ANGLE_COLUMNS

# Three images. Image 0: errors 2, 2, 0 over angle sum 120. Image 1: everything zero.
# Image 2: errors 0, 5, 5 over angle sum 20.
PRED = np.array([[10.0, 20.0, 30.0], [0.0, 0.0, 0.0], [5.0, 0.0, 5.0]])
TRUE = np.array([[12.0, 18.0, 30.0], [0.0, 0.0, 0.0], [5.0, 5.0, 0.0]])


def test_smape_matches_hand_computation():
    # per image: 4/120, 0 (all zero), 10/20 -> mean (1/30 + 0 + 1/2) / 3 = 16/90
    assert metrics.smape(PRED, TRUE) == pytest.approx(100.0 * 16 / 90)


def test_smape_per_column_matches_hand_computation():
    # column 0: 2/22, 0, 0; column 1: 2/38, 0, 5/5; column 2: 0, 0, 5/5
    expected = 100.0 * np.array([(2 / 22) / 3, (2 / 38 + 1) / 3, 1 / 3])
    np.testing.assert_allclose(metrics.smape_per_column(PRED, TRUE), expected)


def test_smape_all_zero_is_perfect_agreement():
    zeros = np.zeros((4, 3))
    assert metrics.smape(zeros, zeros) == 0.0
    np.testing.assert_array_equal(metrics.smape_per_column(zeros, zeros), np.zeros(3))


def test_smape_zero_prediction_of_nonzero_truth_is_100_percent():
    true = np.array([[10.0, 4.0, 0.0], [3.0, 0.0, 0.0]])
    assert metrics.smape(np.zeros_like(true), true) == pytest.approx(100.0)
    # column 2 is zero on both sides in every image: that column scores 0
    np.testing.assert_allclose(metrics.smape_per_column(np.zeros_like(true), true), [100.0, 50.0, 0.0])


def test_smape_is_symmetric_and_zero_for_perfect_prediction():
    rng = np.random.default_rng(0)
    a, b = rng.uniform(0, 60, (20, 3)), rng.uniform(0, 60, (20, 3))
    assert metrics.smape(a, b) == pytest.approx(metrics.smape(b, a))
    assert metrics.smape(a, a) == 0.0


def test_angle_mae_and_max_error():
    np.testing.assert_allclose(metrics.angle_mae(PRED, TRUE), [2 / 3, 7 / 3, 5 / 3])
    np.testing.assert_allclose(metrics.angle_max_error(PRED, TRUE), [2.0, 5.0, 5.0])


def test_pearson_r_known_values_and_constant_column():
    pred = np.array([[1.0, 1.0, 5.0], [2.0, 2.0, 5.0], [3.0, 3.0, 5.0]])
    true = np.array([[2.0, 6.0, 1.0], [4.0, 4.0, 2.0], [6.0, 2.0, 3.0]])
    with np.errstate(all="raise"):  # a constant column must not divide by zero
        r = metrics.pearson_r(pred, true)
    assert r[0] == pytest.approx(1.0)
    assert r[1] == pytest.approx(-1.0)
    assert np.isnan(r[2])
    # x = 1, 2, 3, 4 against y = 1, 3, 2, 4: covariance sum 4, both variance sums 5
    x = np.array([1.0, 2.0, 3.0, 4.0])
    y = np.array([1.0, 3.0, 2.0, 4.0])
    r = metrics.pearson_r(np.stack([x, x, y], 1), np.stack([y, x, x], 1))
    np.testing.assert_allclose(r, [0.8, 1.0, 0.8])


def test_within_tolerance_uses_largest_angle_only_and_is_inclusive():
    true = np.array([[30.0, 0.0, 0.0], [30.0, 0.0, 0.0], [30.0, 0.0, 0.0], [30.0, 0.0, 0.0]])
    pred = true + np.array([[0.0, 50.0, 50.0], [5.0, 0.0, 0.0], [-5.01, 0.0, 0.0], [10.0, 0.0, 0.0]])
    assert metrics.within_tolerance(pred, true) == pytest.approx(0.5)
    assert metrics.within_tolerance(pred, true, tol=10.0) == pytest.approx(1.0)
    assert metrics.within_tolerance(pred, true, tol=0.0) == pytest.approx(0.25)


def _landmark_pair() -> tuple[np.ndarray, np.ndarray]:
    """Two spines: in the first only T4's top-left corner moves by (3, 4), a distance of 5;
    in the second every corner moves by (0, 2)."""
    rng = np.random.default_rng(1)
    true = rng.uniform(0, 500, (2, 17, 4, 2))
    pred = true.copy()
    pred[0, 3, 0] += (3.0, 4.0)
    pred[1] += (0.0, 2.0)
    return pred, true


def test_landmark_error_is_mean_euclidean_distance():
    pred, true = _landmark_pair()
    assert metrics.landmark_error(pred, true) == pytest.approx((5.0 + 68 * 2.0) / 136)
    assert metrics.landmark_error(pred[:1], true[:1]) == pytest.approx(5.0 / 68)


def test_landmark_mse_is_mean_squared_distance():
    pred, true = _landmark_pair()
    assert metrics.landmark_mse(pred, true) == pytest.approx((25.0 + 68 * 4.0) / 136)


def test_landmark_error_by_level():
    pred, true = _landmark_pair()
    by_level = metrics.landmark_error_by_level(pred, true)
    assert by_level.shape == (17,)
    expected = np.ones(17)  # 4 corners at distance 2 and 4 at distance 0 on every level
    expected[3] = (5.0 + 4 * 2.0) / 8
    np.testing.assert_allclose(by_level, expected)


@pytest.mark.parametrize(
    "pred_shape,true_shape",
    [((3, 2), (3, 2)), ((3,), (3,)), ((3, 3), (4, 3)), ((0, 3), (0, 3)), ((1, 3, 1), (1, 3, 1))],
)
def test_angle_metrics_reject_bad_shapes(pred_shape, true_shape):
    for fn in (metrics.smape, metrics.smape_per_column, metrics.angle_mae, metrics.angle_max_error,
               metrics.pearson_r, metrics.within_tolerance):
        with pytest.raises(ValueError):
            fn(np.zeros(pred_shape), np.zeros(true_shape))


@pytest.mark.parametrize("shape", [(2, 68, 2), (2, 17, 4), (17, 4, 2), (2, 16, 4, 2)])
def test_landmark_metrics_reject_bad_shapes(shape):
    for fn in (metrics.landmark_error, metrics.landmark_mse, metrics.landmark_error_by_level):
        with pytest.raises(ValueError):
            fn(np.zeros(shape), np.zeros(shape))
    with pytest.raises(ValueError):
        metrics.landmark_error(np.zeros((2, 17, 4, 2)), np.zeros((3, 17, 4, 2)))


def test_summarize_keys_and_values():
    pred_lm, true_lm = _landmark_pair()
    pred, true = PRED[:2], TRUE[:2]
    out = metrics.summarize(pred, true, pred_lm, true_lm)
    per_col = ["smape", "mae", "max_error", "pearson"]
    expected_keys = {"smape", "within_5deg", "landmark_error_px", "landmark_mse_px2", "n_images", "smape_ci95",
                     "within_5deg_all_pct", "landmark_error_matched_px", "levels_right_pct",
                     "levels_shifted_down_pct", "levels_shifted_up_pct", "levels_partly_wrong_pct"}
    expected_keys |= {f"{p}_{c}" for p in per_col for c in ANGLE_COLUMNS}
    assert set(out) == expected_keys
    assert {"smape_pt", "smape_mt", "smape_tl", "mae_pt", "pearson_tl"} <= set(out)
    assert out["n_images"] == 2
    assert out["smape"] == pytest.approx(metrics.smape(pred, true))
    assert out["smape_mt"] == pytest.approx(metrics.smape_per_column(pred, true)[1])
    lo, hi = out["smape_ci95"]
    assert lo <= out["smape"] <= hi
    assert out["levels_right_pct"] in (0.0, 50.0, 100.0)
    assert out["mae_tl"] == pytest.approx(metrics.angle_mae(pred, true)[2])
    assert out["max_error_pt"] == pytest.approx(2.0)
    assert out["within_5deg"] == pytest.approx(1.0)
    assert out["landmark_error_px"] == pytest.approx((5.0 + 68 * 2.0) / 136)
    assert out["landmark_mse_px2"] == pytest.approx((25.0 + 68 * 4.0) / 136)
    assert all(type(v) in (int, float) for k, v in out.items() if k != "smape_ci95")  # plain numbers for JSON
    json.dumps(out)  # plain numbers only


def test_summarize_without_landmarks_and_with_only_one_side():
    out = metrics.summarize(PRED, TRUE)
    assert "landmark_error_px" not in out and "landmark_mse_px2" not in out
    assert out["n_images"] == 3
    assert metrics.summarize(PRED, TRUE, tol=2.5).keys() >= {"within_2.5deg"}
    pred_lm, _ = _landmark_pair()
    with pytest.raises(ValueError):
        metrics.summarize(PRED[:2], TRUE[:2], pred_lm, None)
    with pytest.raises(ValueError):  # landmarks for 2 images, angles for 3
        metrics.summarize(PRED, TRUE, pred_lm, pred_lm)


def test_levels_right_and_matched_error_tell_names_from_corners():
    true = np.stack([np.stack([[0, 10 * v], [10, 10 * v], [0, 10 * v + 5], [10, 10 * v + 5]]) for v in range(17)]).astype(float)
    shifted = np.concatenate([true[1:], true[-1:] + [0, 10]])  # every level named one too high
    assert metrics.levels_right(true[None], true[None]).all()
    assert not metrics.levels_right(shifted[None], true[None]).any()
    assert metrics.matched_landmark_error(shifted[None], true[None]) < metrics.landmark_error(shifted[None], true[None])


def test_level_shift_tells_whole_shifts_from_partial_ones():
    true = np.stack([np.stack([[0, 10 * v], [10, 10 * v], [0, 10 * v + 5], [10, 10 * v + 5]]) for v in range(17)]).astype(float)
    down = np.concatenate([true[1:], true[-1:] + [0, 10]])  # T1 missed: T2 named T1, one below L5 named L5
    up = np.concatenate([true[:1] - [0, 10], true[:-1]])  # C7 named T1
    skipped = np.concatenate([true[:8], true[9:], true[-1:] + [0, 10]])  # T9 skipped inside the chain
    pred = np.stack([true, down, up, skipped])
    wrong, shift = metrics.level_shift(pred, np.stack([true] * 4))
    assert wrong.tolist() == [0, 16, 16, 8]  # the end beyond the labels still lies nearest L5 / T1
    assert shift.tolist() == [0, 1, -1, 0]
    out = metrics.summarize(np.full((4, 3), 10.0), np.full((4, 3), 10.0), pred, np.stack([true] * 4))
    assert [out[k] for k in ("levels_right_pct", "levels_shifted_down_pct", "levels_shifted_up_pct",
                             "levels_partly_wrong_pct")] == [25.0, 25.0, 25.0, 25.0]


def test_smape_difference_is_paired_and_leaves_out_unread_radiographs():
    better = PRED.copy()
    better[0] = [11.0, 19.0, 30.0]  # image 0: errors 1, 1, 0 over 120 instead of 2, 2, 0
    d, lo, hi = metrics.smape_difference(PRED, better, TRUE)
    assert d == pytest.approx(metrics.smape(better, TRUE) - metrics.smape(PRED, TRUE))
    assert d == pytest.approx(100.0 * (2 / 120 - 4 / 120) / 3)
    assert lo <= d <= hi <= 0.0  # paired: B is never worse on any radiograph, so no resample is
    same = metrics.smape_difference(PRED, PRED, TRUE)
    assert same == (0.0, 0.0, 0.0)
    unread = better.copy()
    unread[2] = np.nan
    d2, _, _ = metrics.smape_difference(PRED, unread, TRUE)
    keep = [0, 1]
    assert d2 == pytest.approx(metrics.smape(better[keep], TRUE[keep]) - metrics.smape(PRED[keep], TRUE[keep]))
    with pytest.raises(ValueError, match="no radiograph"):
        metrics.smape_difference(np.full_like(PRED, np.nan), PRED, TRUE)
