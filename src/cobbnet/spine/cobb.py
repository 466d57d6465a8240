"""Cobb angles from landmarks, by the AASCE 2019 challenge's own rules, vectorised over a set.

The rules (0-based vertebrae i = 0..16) follow the challenge's MATLAB reference exactly:

1. Each vertebra's direction runs from its left-edge midpoint (TL+BL)/2 to its right-edge
   midpoint (TR+BR)/2. ``A[i, j]`` is the angle between directions i and j: the cosine is
   rounded to 8 decimals, then arccos, in degrees. Cosines are NOT clipped to [0, 1]: angles
   above 90 degrees occur in real data. Only |cos| <= 1 is guarded.
2. Angle 1 is the largest entry of A. Column maxima and the row of each column's first
   maximum give ``up`` (the first column reaching the largest maximum) and ``lo`` (its row).
3. The S test on the 34 endplate midpoints e_k (upper_0, lower_0, upper_1, ...).
4. C curve: angle 2 = A[0, up], angle 3 = A[16, lo]. S curve: depends on whether the sum of
   the y of the LOWER endplate midpoints of ``up`` and ``lo`` is below the image height.

Angles come in the challenge's column order [angle 1, angle 2, angle 3] (``angles.csv``,
labelled PT, MT, TL by papers although the first is always the largest).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from cobbnet.spine.landmarks import BL, BR, LEVELS, N_VERTEBRAE, TL, TR, centers

ANGLE_COLUMNS: tuple[str, ...] = ("pt", "mt", "tl")
REGIONS: tuple[str, ...] = ("proximal thoracic", "main thoracic", "thoracolumbar/lumbar")
# The apex level decides a curve's region: T1-T5 proximal thoracic, T6-T11 main thoracic,
# T12-L5 thoracolumbar/lumbar (SRS convention, the T11/12 disc counted as main thoracic).
_REGION_FIRST_LEVEL = (0, LEVELS.index("T6"), LEVELS.index("T12"))


def direction_vectors(landmarks: np.ndarray) -> np.ndarray:
    """``(N, 17, 4, 2) -> (N, 17, 2)``: right-edge midpoint minus left-edge midpoint."""
    lm = np.asarray(landmarks, dtype=np.float64)
    return (lm[..., TR, :] + lm[..., BR, :]) / 2 - (lm[..., TL, :] + lm[..., BL, :]) / 2


def endplate_midpoints(landmarks: np.ndarray) -> np.ndarray:
    """``(N, 17, 4, 2) -> (N, 34, 2)`` in the order upper_0, lower_0, upper_1, lower_1, ..."""
    lm = np.asarray(landmarks, dtype=np.float64)
    upper = (lm[..., TL, :] + lm[..., TR, :]) / 2
    lower = (lm[..., BL, :] + lm[..., BR, :]) / 2
    return np.stack([upper, lower], axis=-2).reshape(*lm.shape[:-3], 2 * lm.shape[-3], 2)


def angle_matrix(landmarks: np.ndarray) -> np.ndarray:
    """``(N, 17, 4, 2) -> (N, 17, 17)`` angles in degrees between all vertebra directions."""
    v = direction_vectors(landmarks)
    norm = np.linalg.norm(v, axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        cos = (v @ np.swapaxes(v, -1, -2)) / (norm[..., :, None] * norm[..., None, :])
    cos = np.clip(np.round(cos, 8), -1.0, 1.0)  # guard |cos| <= 1 only; never clip at 0
    return np.degrees(np.arccos(cos))


def is_s_shaped(landmarks: np.ndarray) -> np.ndarray:
    """``(N, 17, 4, 2) -> (N,)`` bool: the challenge's S test on the endplate midpoints.

    d_k = (y_k - y_33) / (y_0 - y_33) - (x_k - x_33) / (x_0 - x_33), k = 0..31; the spine is
    S-shaped unless all d_k share a sign, tested exactly as the reference does: the sum of the
    outer product d d^T differs from the sum of its absolute values. IEEE arithmetic throughout,
    so a vertical line (x_0 = x_33) gives inf/NaN and a NaN comparison counts as S.
    """
    e = endplate_midpoints(landmarks)
    x, y = e[..., 0], e[..., 1]
    with np.errstate(invalid="ignore", divide="ignore"):
        d = (y[..., :-2] - y[..., -1:]) / (y[..., :1] - y[..., -1:]) - (
            x[..., :-2] - x[..., -1:]
        ) / (x[..., :1] - x[..., -1:])
        outer = d[..., :, None] * d[..., None, :]
        return ~(outer.sum(axis=(-1, -2)) == np.abs(outer).sum(axis=(-1, -2)))


_UNDEFINED = -1.0  # stands in for a NaN angle while taking maxima; real angles are >= 0


def _masked_argmax(rows: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """First argmax of each row of ``rows`` (N, 17) over the entries where ``keep`` is True."""
    return np.where(keep, rows, -np.inf).argmax(axis=-1)


def cobb_angles_batch(landmarks: np.ndarray, heights: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The challenge's three Cobb angles for a set of spines.

    Args:
        landmarks: ``(N, 17, 4, 2)`` pixel corners.
        heights: ``(N,)`` heights in pixels of the images the landmarks belong to.

    Returns:
        angles ``(N, 3)`` degrees in the challenge's column order; pairs ``(N, 3, 2)`` the
        (upper, lower) vertebra indices between which each angle is measured; is_s ``(N,)``.
        Undefined angles (zero-length directions) are skipped when taking maxima; an angle
        is NaN only where it is undefined itself.
    """
    lm = np.asarray(landmarks, dtype=np.float64)
    n = lm.shape[0]
    heights = np.broadcast_to(np.asarray(heights, dtype=np.float64), (n,))
    # Maxima skip undefined angles (a vertebra with a zero-length direction) as MATLAB's max
    # does: they rank below every real angle (all >= 0) and come back as NaN only where
    # nothing else was left to choose.
    A = np.nan_to_num(angle_matrix(lm), nan=_UNDEFINED)  # (N, 17, 17)
    rows = np.arange(n)
    col_max = A.max(axis=1)  # (N, 17): maximum of each column
    col_arg = A.argmax(axis=1)  # (N, 17): row of each column's first maximum
    up = col_max.argmax(axis=1)  # (N,)
    lo = col_arg[rows, up]  # (N,)
    a1 = col_max[rows, up]
    is_s = is_s_shaped(lm)

    idx = np.arange(N_VERTEBRAE)
    A_up, A_lo = A[rows, up], A[rows, lo]  # (N, 17) rows of A
    # C curve
    c_a2, c_a3 = A[rows, 0, up], A[rows, N_VERTEBRAE - 1, lo]
    # S curve, both cases: angle 2 = max of A[up, 0..up], reached first at m
    m = _masked_argmax(A_up, idx[None] <= up[:, None])
    s_a2 = A_up[rows, m]
    lower_y = endplate_midpoints(lm)[..., 1::2, 1]  # (N, 17): y of lower endplate midpoints
    low_pair = lower_y[rows, up] + lower_y[rows, lo] < heights
    m3_low = _masked_argmax(A_lo, idx[None] >= lo[:, None])  # max of A[lo, lo..16]
    A_m = A[rows, m]
    m3_high = _masked_argmax(A_m, idx[None] <= m[:, None])  # max of A[m, 0..m]
    s_a3 = np.where(low_pair, A_lo[rows, m3_low], A_m[rows, m3_high])

    angles = np.stack([a1, np.where(is_s, s_a2, c_a2), np.where(is_s, s_a3, c_a3)], axis=1)
    angles[angles == _UNDEFINED] = np.nan
    last = np.full(n, N_VERTEBRAE - 1)
    pairs_c = np.stack([np.stack([up, lo], 1), np.stack([np.zeros(n, int), up], 1),
                        np.stack([lo, last], 1)], axis=1)
    pairs_s = np.stack([
        np.stack([up, lo], 1),
        np.stack([m, up], 1),
        np.where(low_pair[:, None], np.stack([lo, m3_low], 1), np.stack([m3_high, m], 1)),
    ], axis=1)
    pairs = np.sort(np.where(is_s[:, None, None], pairs_s, pairs_c), axis=-1)
    return angles, pairs.astype(np.int64), is_s


@dataclass(frozen=True)
class Curve:
    """One curve read anatomically: its end vertebrae, apex and region."""

    region: str
    angle: float
    upper: int
    lower: int
    apex: int
    convex_to: str  # "image left" or "image right"

    @property
    def levels(self) -> tuple[str, str, str]:
        """(upper end, lower end, apex) level names."""
        return LEVELS[self.upper], LEVELS[self.lower], LEVELS[self.apex]

    def as_dict(self) -> dict:
        up, lo, ap = self.levels
        return {"region": self.region, "angle": round(float(self.angle), 4), "upper_end": up,
                "lower_end": lo, "apex": ap, "convex_to": self.convex_to}


@dataclass(frozen=True)
class CobbResult:
    """The three challenge angles of one spine, with their vertebrae and the curve type."""

    angles: np.ndarray  # (3,) degrees, challenge column order
    pairs: np.ndarray  # (3, 2) (upper, lower) vertebra indices
    shape: str  # "C" or "S"
    landmarks: np.ndarray = field(repr=False)  # (17, 4, 2)

    @property
    def pair_levels(self) -> list[tuple[str, str]]:
        return [(LEVELS[a], LEVELS[b]) for a, b in self.pairs]

    @property
    def curves(self) -> list[Curve]:
        return anatomical_curves(self.landmarks, self.angles, self.pairs)

    def as_dict(self) -> dict:
        return {
            "angles": {c: round(float(a), 4) for c, a in zip(ANGLE_COLUMNS, self.angles, strict=True)},
            "angle_vertebrae": {c: {"upper": LEVELS[a], "lower": LEVELS[b], "upper_index": int(a),
                                    "lower_index": int(b)} for c, (a, b) in zip(ANGLE_COLUMNS, self.pairs, strict=True)},
            "shape": self.shape,
            "curves": [c.as_dict() for c in self.curves],
        }


def cobb_angles(landmarks: np.ndarray, height: float) -> CobbResult:
    """The challenge angles of one spine ``(17, 4, 2)`` in an image ``height`` pixels tall."""
    lm = np.asarray(landmarks, dtype=np.float64)
    angles, pairs, is_s = cobb_angles_batch(lm[None], np.array([height]))
    return CobbResult(angles[0], pairs[0], "S" if is_s[0] else "C", lm)


def _apex(landmarks: np.ndarray, upper: int, lower: int) -> tuple[int, float]:
    """The vertebra between two end vertebrae farthest from the line joining their centres.

    Returns its index and the signed offset (pixels, + towards larger x).
    """
    c = centers(landmarks)
    p, q = c[upper], c[lower]
    seg = q - p
    length = np.hypot(*seg)
    if lower - upper < 2 or length == 0:
        mid = (upper + lower) // 2
        return mid, 0.0
    between = c[upper + 1:lower]
    # signed horizontal distance from the chord: + when the vertebra lies to the right of it
    offset = ((between - p) @ np.array([seg[1], -seg[0]])) / length
    k = int(np.argmax(np.abs(offset)))
    return upper + 1 + k, float(offset[k])


def anatomical_curves(landmarks: np.ndarray, angles: np.ndarray, pairs: np.ndarray,
                      min_angle: float = 0.0) -> list[Curve]:
    """Each distinct measured curve with its end vertebrae, apex and region, top to bottom.

    A curve is a distinct (upper, lower) pair of the challenge's three; its region comes from
    the level of its apex. Curves of ``min_angle`` degrees or less are left out.
    """
    seen: dict[tuple[int, int], float] = {}
    for angle, (a, b) in zip(angles, pairs, strict=True):
        key = (int(a), int(b))
        if a != b and angle > min_angle and key not in seen:
            seen[key] = float(angle)
    curves = []
    for (a, b), angle in sorted(seen.items()):
        apex, offset = _apex(np.asarray(landmarks, dtype=np.float64), a, b)
        region = REGIONS[int(np.searchsorted(_REGION_FIRST_LEVEL, apex, side="right")) - 1]
        curves.append(Curve(region, angle, a, b, apex, "image right" if offset > 0 else "image left"))
    return curves
