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


def canonical_order(landmarks: np.ndarray) -> np.ndarray:
    """Re-order corners and vertebrae so that the layout's promises hold.

    Within a vertebra the two upper points (smaller y) become TL, TR and the two lower ones
    BL, BR, each pair ordered left to right by x; vertebrae are sorted by centre y. A stable
    sort keeps well-ordered input exactly as it was. Works on ``(17, 4, 2)`` or ``(N, 17, 4, 2)``.
    """
    lm = np.asarray(landmarks, dtype=np.float64)
    by_y = np.argsort(lm[..., 1], axis=-1, kind="stable")  # (..., 17, 4)
    lm = np.take_along_axis(lm, by_y[..., None], axis=-2)
    top, bottom = lm[..., :2, :], lm[..., 2:, :]
    top = np.take_along_axis(top, np.argsort(top[..., 0], axis=-1, kind="stable")[..., None], axis=-2)
    bottom = np.take_along_axis(bottom, np.argsort(bottom[..., 0], axis=-1, kind="stable")[..., None], axis=-2)
    lm = np.concatenate([top, bottom], axis=-2)
    order = np.argsort(centers(lm)[..., 1], axis=-1, kind="stable")  # (..., 17)
    return np.take_along_axis(lm, order[..., None, None], axis=-3)


def hflip(landmarks: np.ndarray, width: float) -> np.ndarray:
    """Mirror landmarks in an image of ``width`` pixels, swapping left and right corners."""
    lm = np.array(landmarks, dtype=np.float64, copy=True)
    lm[..., 0] = (width - 1) - lm[..., 0]
    return lm[..., [TR, TL, BR, BL], :]
