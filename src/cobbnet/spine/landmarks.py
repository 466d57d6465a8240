"""How a spine's landmarks are held: one float array ``(17, 4, 2)`` of pixel (x, y).

Axis 0 is the vertebra, T1..L5 from top to bottom; axis 1 the corner, in the order
top-left, top-right, bottom-left, bottom-right (the order of the AASCE ``p2`` points);
axis 2 is (x, y) in pixels of the image the landmarks belong to.

Every other module takes this layout. The two file layouts of the AASCE data convert to
and from it here and nowhere else:

- ``p2``: ``(68, 2)`` points, 4 corners a vertebra, vertebrae top to bottom;
- CSV row: 136 values, the 68 x divided by the image width, then the 68 y divided by the
  image height.
"""

from __future__ import annotations

import numpy as np

from cobbnet.errors import InputError

LEVELS: tuple[str, ...] = tuple([f"T{i}" for i in range(1, 13)] + [f"L{i}" for i in range(1, 6)])
N_VERTEBRAE = len(LEVELS)  # 17
CORNERS: tuple[str, ...] = ("top-left", "top-right", "bottom-left", "bottom-right")
N_CORNERS = len(CORNERS)  # 4
N_POINTS = N_VERTEBRAE * N_CORNERS  # 68
TL, TR, BL, BR = range(N_CORNERS)


def level_index(name: str) -> int:
    """Index 0..16 of a level name such as ``'T7'`` or ``'l2'``."""
    try:
        return LEVELS.index(name.upper())
    except ValueError:
        raise ValueError(f"unknown vertebra level {name!r}; expected one of {', '.join(LEVELS)}") from None


def check(landmarks: np.ndarray, source: str = "landmarks") -> np.ndarray:
    """Return ``landmarks`` as float64 ``(17, 4, 2)``, or raise InputError naming ``source``."""
    arr = np.asarray(landmarks, dtype=np.float64)
    if arr.shape == (N_POINTS, 2):
        arr = arr.reshape(N_VERTEBRAE, N_CORNERS, 2)
    if arr.shape != (N_VERTEBRAE, N_CORNERS, 2):
        raise InputError(f"{source}: expected {N_POINTS}x2 landmark points, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise InputError(f"{source}: landmark coordinates contain NaN or infinite values")
    return arr


def from_p2(p2: np.ndarray, source: str = "p2") -> np.ndarray:
    """``(68, 2)`` p2 points -> ``(17, 4, 2)`` landmarks."""
    return check(p2, source)


def to_p2(landmarks: np.ndarray) -> np.ndarray:
    """``(17, 4, 2)`` landmarks -> ``(68, 2)`` p2 points."""
    return np.asarray(landmarks, dtype=np.float64).reshape(N_POINTS, 2)


def from_csv_row(row: np.ndarray, width: float, height: float, source: str = "landmarks.csv") -> np.ndarray:
    """136 normalised values (68 x / width, then 68 y / height) -> ``(17, 4, 2)`` pixels."""
    row = np.asarray(row, dtype=np.float64).ravel()
    if row.size != 2 * N_POINTS:
        raise InputError(f"{source}: expected {2 * N_POINTS} values a row, got {row.size}")
    points = np.stack([row[:N_POINTS] * width, row[N_POINTS:] * height], axis=1)
    return check(points, source)


def to_csv_row(landmarks: np.ndarray, width: float, height: float) -> np.ndarray:
    """``(17, 4, 2)`` pixels -> 136 normalised values (68 x / width, then 68 y / height)."""
    p = to_p2(landmarks)
    return np.concatenate([p[:, 0] / width, p[:, 1] / height])


def centers(landmarks: np.ndarray) -> np.ndarray:
    """Vertebra centres, the mean of the four corners: ``(..., 17, 4, 2) -> (..., 17, 2)``."""
    return np.asarray(landmarks).mean(axis=-2)


# The three ways of splitting 4 corners into an upper and a lower pair; the first is the
# layout's own (TL, TR | BL, BR), so ties keep the input as it was.
_PAIRINGS = np.array([[0, 1, 2, 3], [0, 2, 1, 3], [0, 3, 1, 2]])


def spine_axis(centres: np.ndarray) -> np.ndarray:
    """Unit vectors down the spine at each vertebra: ``(..., 17, 2) -> (..., 17, 2)``.

    The chord from the centre above to the centre below; at T1 and L5, which lack one of
    them, the chord over the nearest three centres (a two-step baseline, so that an L5
    annotated on top of L4 still has an axis). Straight down where the centres coincide.
    """
    c = np.asarray(centres, dtype=np.float64)
    n = c.shape[-2]
    above = np.clip(np.arange(n) - 1, 0, n - 3)  # (17,): i - 1, but 0 at T1 and 14 at L5
    axis = c[..., above + 2, :] - c[..., above, :]
    norm = np.linalg.norm(axis, axis=-1, keepdims=True)
    down = np.broadcast_to(np.array([0.0, 1.0]), axis.shape)
    return np.divide(axis, norm, out=down.copy(), where=norm > 0)


def canonical_order(landmarks: np.ndarray) -> np.ndarray:
    """Re-order vertebrae and corners so that the layout's promises hold.

    Vertebrae are sorted by centre y. Within a vertebra, corners are paired into endplates
    relative to the local spine axis (``spine_axis``), not the image axes, because vertebrae
    at the apex of a large curve tilt 30-55 degrees, where the two smallest-y corners are a
    top and a bottom corner: of the three ways to split the corners into two pairs, the
    endplates are the one whose pair midpoints lie furthest apart along the axis and least
    across it. The pair higher up the axis becomes TL, TR; each pair is ordered left to right
    across the axis. Only a permutation of the input points, and ties keep the input order, so
    well-ordered input comes back exactly as it was. ``(17, 4, 2)`` or ``(N, 17, 4, 2)``.
    """
    lm = np.asarray(landmarks, dtype=np.float64)
    order = np.argsort(centers(lm)[..., 1], axis=-1, kind="stable")  # (..., 17)
    lm = np.take_along_axis(lm, order[..., None, None], axis=-3)
    down = spine_axis(centers(lm))[..., None, :]  # (..., 17, 1, 2)
    right = np.stack([down[..., 1], -down[..., 0]], axis=-1)  # down rotated to image right

    split = lm[..., _PAIRINGS, :]  # (..., 17, 3, 4, 2)
    gap = split[..., 2:, :].mean(axis=-2) - split[..., :2, :].mean(axis=-2)  # (..., 17, 3, 2)
    along, across = (gap * down).sum(-1), (gap * right).sum(-1)  # (..., 17, 3)
    best = np.argmax(np.abs(along) - np.abs(across), axis=-1)  # (..., 17)
    perm = _PAIRINGS[best]  # (..., 17, 4)
    flip = np.take_along_axis(along, best[..., None], axis=-1) < 0  # lower pair listed first
    perm = np.where(flip, perm[..., [2, 3, 0, 1]], perm)

    pts = np.take_along_axis(lm, perm[..., None], axis=-2)
    x = (pts * right).sum(-1)  # (..., 17, 4) position across the axis
    swap_top, swap_bottom = x[..., 0:1] > x[..., 1:2], x[..., 2:3] > x[..., 3:4]
    perm = np.concatenate([np.where(swap_top, perm[..., [1, 0]], perm[..., :2]),
                           np.where(swap_bottom, perm[..., [3, 2]], perm[..., 2:])], axis=-1)
    return np.take_along_axis(lm, perm[..., None], axis=-2)


def hflip(landmarks: np.ndarray, width: float) -> np.ndarray:
    """Mirror landmarks in an image of ``width`` pixels, swapping left and right corners.

    Pixel column j covers x in [j, j + 1) (the map convention of docs/architecture.md), so the
    mirror image of x is ``width - x``: column j lands on column width - 1 - j.
    """
    lm = np.array(landmarks, dtype=np.float64, copy=True)
    lm[..., 0] = width - lm[..., 0]
    return lm[..., [TR, TL, BR, BL], :]
