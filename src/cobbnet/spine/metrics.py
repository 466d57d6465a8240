"""Evaluation metrics over a whole set of images, vectorised with numpy.

Angles are ``(N, 3)`` arrays in the challenge's column order (``cobb.ANGLE_COLUMNS``);
landmarks are ``(N, 17, 4, 2)`` pixel corners (``landmarks.py``). Every function takes the
prediction first and the ground truth second, and raises ``ValueError`` when the shapes do
not match or the set is empty.

SMAPE follows eq. (3) of the paper: for each image the summed absolute error of its three
angles over the summed angles, averaged over images, in percent. An image whose predicted and
true angles are all zero has a zero denominator; both sides agreeing perfectly, its term is
defined as 0 rather than NaN. The per-column SMAPE (the challenge's per-region scores) uses
the same rule on each single angle.
"""

from __future__ import annotations

import numpy as np

from cobbnet.spine.cobb import ANGLE_COLUMNS
from cobbnet.spine.landmarks import N_CORNERS, N_VERTEBRAE

N_ANGLES = len(ANGLE_COLUMNS)  # 3
DEFAULT_TOLERANCE_DEG = 5.0


def _pair(pred: np.ndarray, true: np.ndarray, tail: tuple[int, ...], what: str) -> tuple[np.ndarray, np.ndarray]:
    """Both arrays as float64 of shape ``(N, *tail)`` with N >= 1, or a ValueError."""
    p = np.asarray(pred, dtype=np.float64)
    t = np.asarray(true, dtype=np.float64)
    expected = "(N, " + ", ".join(map(str, tail)) + ")"
    for name, arr in (("pred", p), ("true", t)):
        if arr.ndim != 1 + len(tail) or arr.shape[1:] != tail:
            raise ValueError(f"{what}: {name} must have shape {expected}, got {arr.shape}")
    if p.shape != t.shape:
        raise ValueError(f"{what}: pred has shape {p.shape} but true has shape {t.shape}")
    if p.shape[0] == 0:
        raise ValueError(f"{what}: empty set")
    return p, t


def _angles(pred: np.ndarray, true: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return _pair(pred, true, (N_ANGLES,), "angles")


def _safe_ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """``num / den`` with 0 where ``den`` is 0 (both sides zero: perfect agreement)."""
    out = np.zeros(np.broadcast(num, den).shape)
    np.divide(num, den, out=out, where=den != 0)
    return out


def smape(pred: np.ndarray, true: np.ndarray) -> float:
    """SMAPE in percent, eq. (3): mean over images of sum_c |p - t| / sum_c (p + t).

    ``pred``, ``true``: ``(N, 3)`` degrees. An image with a zero denominator counts as 0.
    """
    p, t = _angles(pred, true)
    per_image = _safe_ratio(np.abs(p - t).sum(axis=1), (p + t).sum(axis=1))  # (N,)
    return float(per_image.mean() * 100.0)


def smape_per_column(pred: np.ndarray, true: np.ndarray) -> np.ndarray:
    """``(3,)`` SMAPE in percent of each angle column: mean over images of |p - t| / (p + t)."""
    p, t = _angles(pred, true)
    return _safe_ratio(np.abs(p - t), p + t).mean(axis=0) * 100.0


def angle_mae(pred: np.ndarray, true: np.ndarray) -> np.ndarray:
    """``(3,)`` mean absolute error in degrees of each angle column."""
    p, t = _angles(pred, true)
    return np.abs(p - t).mean(axis=0)


def angle_max_error(pred: np.ndarray, true: np.ndarray) -> np.ndarray:
    """``(3,)`` largest absolute error in degrees of each angle column."""
    p, t = _angles(pred, true)
    return np.abs(p - t).max(axis=0)


def pearson_r(pred: np.ndarray, true: np.ndarray) -> np.ndarray:
    """``(3,)`` Pearson correlation of each angle column; NaN where a column is constant."""
    p, t = _angles(pred, true)
    dp, dt = p - p.mean(axis=0), t - t.mean(axis=0)
    den = np.sqrt((dp * dp).sum(axis=0) * (dt * dt).sum(axis=0))
    r = np.full(N_ANGLES, np.nan)
    np.divide((dp * dt).sum(axis=0), den, out=r, where=den > 0)
    return np.clip(r, -1.0, 1.0)  # rounding can step just past +-1


def within_tolerance(pred: np.ndarray, true: np.ndarray, tol: float = DEFAULT_TOLERANCE_DEG) -> float:
    """Share (0..1) of images whose largest angle (column 0) is within ``tol`` degrees."""
    p, t = _angles(pred, true)
    return float((np.abs(p[:, 0] - t[:, 0]) <= tol).mean())


def _landmarks(pred: np.ndarray, true: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return _pair(pred, true, (N_VERTEBRAE, N_CORNERS, 2), "landmarks")


def landmark_distances(pred: np.ndarray, true: np.ndarray) -> np.ndarray:
    """``(N, 17, 4, 2)`` twice -> ``(N, 17, 4)`` Euclidean distance of each corner, pixels."""
    p, t = _landmarks(pred, true)
    return np.linalg.norm(p - t, axis=-1)


def landmark_error(pred: np.ndarray, true: np.ndarray) -> float:
    """Mean Euclidean corner distance in pixels (the quantity the paper's Table I calls MSE)."""
    return float(landmark_distances(pred, true).mean())


def landmark_mse(pred: np.ndarray, true: np.ndarray) -> float:
    """Mean squared Euclidean corner distance in pixels squared (a true mean squared error)."""
    p, t = _landmarks(pred, true)
    return float(((p - t) ** 2).sum(axis=-1).mean())


def landmark_error_by_level(pred: np.ndarray, true: np.ndarray) -> np.ndarray:
    """``(17,)`` mean Euclidean corner distance in pixels of each vertebra level, T1..L5."""
    return landmark_distances(pred, true).mean(axis=(0, 2))


def smape_interval(pred: np.ndarray, true: np.ndarray, n_boot: int = 2000, seed: int = 0,
                   level: float = 0.95) -> tuple[float, float]:
    """Bootstrap interval of ``smape`` over radiographs: resample the N rows with replacement
    and take the percentiles of the resampled means of the per-image ratios."""
    p, t = _angles(pred, true)
    per_image = _safe_ratio(np.abs(p - t).sum(axis=1), (p + t).sum(axis=1))  # (N,), as smape
    idx = np.random.default_rng(seed).integers(0, len(p), (n_boot, len(p)))
    boot = 100.0 * per_image[idx].mean(axis=1)
    lo, hi = np.percentile(boot, [50 * (1 - level), 50 * (1 + level)])
    return float(lo), float(hi)


def smape_difference(pred_a: np.ndarray, pred_b: np.ndarray, true: np.ndarray, n_boot: int = 2000,
                     seed: int = 0, level: float = 0.95) -> tuple[float, float, float]:
    """``smape(pred_b) - smape(pred_a)`` on the same radiographs, with a paired bootstrap
    interval: each resample draws N radiographs and scores both models on those same ones, so
    what both get wrong cancels. Radiographs either model left unread (a non-finite angle) are
    left out of both. ``pred_a``, ``pred_b``, ``true``: ``(N, 3)`` degrees.
    Returns ``(difference, low, high)`` in SMAPE points; negative means B is better."""
    a, t = _angles(pred_a, true)
    b, _ = _angles(pred_b, true)
    ok = np.isfinite(a).all(axis=1) & np.isfinite(b).all(axis=1)
    if not ok.any():
        raise ValueError("angles: no radiograph read by both models")
    a, b, t = a[ok], b[ok], t[ok]
    diff = (_safe_ratio(np.abs(b - t).sum(axis=1), (b + t).sum(axis=1))
            - _safe_ratio(np.abs(a - t).sum(axis=1), (a + t).sum(axis=1)))  # (N,)
    idx = np.random.default_rng(seed).integers(0, len(diff), (n_boot, len(diff)))
    boot = 100.0 * diff[idx].mean(axis=1)
    lo, hi = np.percentile(boot, [50 * (1 - level), 50 * (1 + level)])
    return float(diff.mean() * 100.0), float(lo), float(hi)


def nearest_true(pred: np.ndarray, true: np.ndarray) -> np.ndarray:
    """For each predicted vertebra, the index of the true vertebra with the nearest centre: ``(N, 17)``."""
    lp, lt = _landmarks(pred, true)
    d = np.linalg.norm(lp.mean(axis=2)[:, :, None] - lt.mean(axis=2)[:, None, :], axis=-1)  # (N, 17, 17)
    return np.argmin(d, axis=2)


def levels_right(pred: np.ndarray, true: np.ndarray) -> np.ndarray:
    """``(N,)`` True where every predicted vertebra lies nearest the true vertebra of its level."""
    return (nearest_true(pred, true) == np.arange(pred.shape[1])).all(axis=1)


def level_shift(pred: np.ndarray, true: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """How each radiograph's level names are wrong: ``(wrong, shift)``, both ``(N,)`` int.

    ``wrong`` counts the predicted vertebrae (0-17) whose nearest true vertebra is not their
    level. ``shift`` is the median over the 17 of (nearest true level - named level): +1 when
    the chain lies one level down the spine (T1 missed: T2 named T1, ..., the vertebra below L5
    named L5), -1 when it lies one level up (C7 named T1), 0 when the names are right or only
    partly wrong (a level skipped or doubled inside the chain).
    """
    offsets = nearest_true(pred, true) - np.arange(pred.shape[1])  # (N, 17)
    wrong = (offsets != 0).sum(axis=1)
    return wrong.astype(np.int64), np.rint(np.median(offsets, axis=1)).astype(np.int64)


def matched_landmark_error(pred: np.ndarray, true: np.ndarray) -> float:
    """Mean corner distance with each predicted vertebra matched to the nearest true one: the
    corner precision whatever the level names."""
    lp, lt = _landmarks(pred, true)
    match = np.take_along_axis(lt, nearest_true(lp, lt)[:, :, None, None], axis=1)
    return float(np.linalg.norm(lp - match, axis=-1).mean())


def summarize(
    pred_angles: np.ndarray,
    true_angles: np.ndarray,
    pred_landmarks: np.ndarray | None = None,
    true_landmarks: np.ndarray | None = None,
    tol: float = DEFAULT_TOLERANCE_DEG,
) -> dict[str, float | int]:
    """All metrics of a set as a flat dict of plain Python numbers.

    Keys: ``smape``, ``smape_<col>``, ``mae_<col>``, ``max_error_<col>``, ``pearson_<col>``
    for each column of ``cobb.ANGLE_COLUMNS``, ``within_<tol>deg``, ``n_images`` and, when
    both landmark arrays are given, ``landmark_error_px`` and ``landmark_mse_px2`` (by level),
    ``landmark_error_matched_px`` (nearest true vertebra), ``levels_right_pct`` and how the
    rest are wrong (``levels_shifted_down_pct``: the whole spine named from a level below,
    T1 missed; ``levels_shifted_up_pct``: from one or more levels above, C7 taken as T1;
    ``levels_partly_wrong_pct``: a level skipped or doubled inside; see ``level_shift``); also
    ``smape_ci95`` (bootstrap 95% interval over radiographs) and ``within_<tol>deg_all_pct``
    (share of radiographs with all three angles within ``tol``).
    """
    p, t = _angles(pred_angles, true_angles)
    out: dict[str, float | int] = {"n_images": int(p.shape[0]), "smape": smape(p, t)}
    per_column = {
        "smape": smape_per_column(p, t),
        "mae": angle_mae(p, t),
        "max_error": angle_max_error(p, t),
        "pearson": pearson_r(p, t),
    }
    for prefix, values in per_column.items():
        out.update({f"{prefix}_{col}": float(v) for col, v in zip(ANGLE_COLUMNS, values, strict=True)})
    out[f"within_{tol:g}deg"] = within_tolerance(p, t, tol)
    if (pred_landmarks is None) != (true_landmarks is None):
        raise ValueError("landmarks: give both pred_landmarks and true_landmarks, or neither")
    if pred_landmarks is not None:
        lp, lt = _landmarks(pred_landmarks, true_landmarks)
        if lp.shape[0] != p.shape[0]:
            raise ValueError(f"landmarks cover {lp.shape[0]} images but angles cover {p.shape[0]}")
        out["landmark_error_px"] = landmark_error(lp, lt)
        out["landmark_mse_px2"] = landmark_mse(lp, lt)
        out["landmark_error_matched_px"] = matched_landmark_error(lp, lt)
        wrong, shift = level_shift(lp, lt)
        out["levels_right_pct"] = 100.0 * float((wrong == 0).mean())
        out["levels_shifted_down_pct"] = 100.0 * float((shift > 0).mean())
        out["levels_shifted_up_pct"] = 100.0 * float((shift < 0).mean())
        out["levels_partly_wrong_pct"] = 100.0 * float(((shift == 0) & (wrong > 0)).mean())
    out["smape_ci95"] = list(smape_interval(p, t))
    out[f"within_{tol:g}deg_all_pct"] = 100.0 * float((np.abs(p - t) <= tol).all(axis=1).mean())
    return out
