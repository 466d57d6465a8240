"""Encode a spine's landmarks into the head targets (the mirror image of ``decode.py``).

Map conventions (docs/architecture.md): maps have stride ``heads.STRIDE``; an input pixel p
is at map coordinate p / STRIDE; map cell (ix, iy) covers [ix, ix+1) x [iy, iy+1) and its
centre is at (ix + 0.5, iy + 0.5). A vertebra whose centre c falls in cell (ix, iy) is
written at the flat index ``ind = iy * w + ix``.
"""

from __future__ import annotations

import numpy as np

from cobbnet.infer.preprocess import INPUT_SIZE
from cobbnet.nn.heads import HEADS, STRIDE
from cobbnet.spine import landmarks as lmk

MIN_OVERLAP = 0.7  # CenterNet's IoU a box built from points within the radius keeps
# The corrected radius is 0 or 1 cell for 91% of AASCE vertebrae at 1024x512: a one-cell
# peak gives the focal loss almost no positives to learn from. CenterNet's original (too
# large) formula gave 3-5 cells; a floor of 2 keeps peaks learnable yet far apart (vertebra
# centres are at least ~2.5 cells apart even at 256x128, where a 2-cell Gaussian is ~0.01).
MIN_RADIUS = 2
POLYGON_ORDER = [lmk.TL, lmk.TR, lmk.BR, lmk.BL]  # the corners walked round the outline
TARGET_KEYS: tuple[str, ...] = ("hm", "reg", "cnr", "mask", "ind", "valid")


def map_size(input_size: tuple[int, int] = INPUT_SIZE) -> tuple[int, int]:
    """Output map size ``(h, w)`` of an input of ``(H, W)`` pixels."""
    H, W = input_size
    return H // STRIDE, W // STRIDE


def gaussian_radius(height: float, width: float, min_overlap: float = MIN_OVERLAP) -> float:
    """Largest displacement r of a box's corners that keeps IoU >= ``min_overlap``.

    CornerNet's rule, which CenterNet reuses: the two corners of a ``height x width`` box each
    move by at most r along each axis; the worst cases are the three configurations

    1. both corners move the same way (box shifted by (r, r)):
       ``(h-r)(w-r) / (2hw - (h-r)(w-r)) = o``  ->  ``r^2 - (h+w) r + hw (1-o)/(1+o) = 0``;
    2. both move inwards (box shrunk by 2r): ``(h-2r)(w-2r) / hw = o``
       ->  ``4 r^2 - 2(h+w) r + (1-o) hw = 0``;
    3. both move outwards (box grown by 2r): ``hw / ((h+2r)(w+2r)) = o``
       ->  ``4o r^2 + 2o(h+w) r - (1-o) hw = 0``;

    and r is the smallest of the three valid roots. The original CenterNet code takes
    ``(b + sqrt(b^2 - 4ac)) / 2`` in every case: the wrong root of cases 1 and 2 (their valid
    root is the smaller, ``(b - sq) / (2a)``) and no division by ``2a`` in cases 2 and 3,
    which inflates the radius several-fold. Here every root is the one CornerNet's later fix
    (princeton-vl/CornerNet commit 3e71377) uses, written as ``2c / (b + sq)`` so it does not
    lose precision when ``c`` is small. Returns a float; callers truncate it as CenterNet does.
    """
    if not 0.0 < min_overlap <= 1.0:
        raise ValueError(f"min_overlap must lie in (0, 1], got {min_overlap}")
    h, w, o = float(height), float(width), float(min_overlap)
    if h <= 0.0 or w <= 0.0:
        return 0.0
    area = h * w
    b1, c1 = h + w, area * (1.0 - o) / (1.0 + o)
    r1 = 2.0 * c1 / (b1 + np.sqrt(b1 * b1 - 4.0 * c1))
    b2, c2 = 2.0 * (h + w), (1.0 - o) * area
    r2 = 2.0 * c2 / (b2 + np.sqrt(b2 * b2 - 16.0 * c2))
    b3, c3 = 2.0 * o * (h + w), (1.0 - o) * area
    r3 = 2.0 * c3 / (b3 + np.sqrt(b3 * b3 + 16.0 * o * c3))
    return float(min(r1, r2, r3))


def gaussian_2d(radius: int) -> np.ndarray:
    """``(2r+1, 2r+1)`` Gaussian with sigma = (2r+1)/6, exactly 1 at the centre."""
    sigma = (2 * radius + 1) / 6.0
    d = np.arange(-radius, radius + 1, dtype=np.float64)
    g = np.exp(-(d[None, :] ** 2 + d[:, None] ** 2) / (2.0 * sigma * sigma))
    g[g < np.finfo(np.float64).eps * g.max()] = 0.0  # as CenterNet: no denormal tails
    return g


def draw_gaussian(heatmap: np.ndarray, center_int: tuple[int, int], radius: int) -> np.ndarray:
    """Draw a Gaussian peak into ``heatmap (h, w)`` in place, keeping the element-wise maximum.

    ``center_int`` is the cell ``(ix, iy)``; the peak is exactly 1 there. Parts of the
    Gaussian outside the map are cropped. Returns ``heatmap``.
    """
    radius = max(0, int(radius))
    g = gaussian_2d(radius)
    x, y = int(center_int[0]), int(center_int[1])
    h, w = heatmap.shape
    left, right = min(x, radius), min(w - x, radius + 1)
    top, bottom = min(y, radius), min(h - y, radius + 1)
    if left + right <= 0 or top + bottom <= 0:
        return heatmap  # centre too far outside the map to touch it
    patch = heatmap[y - top : y + bottom, x - left : x + right]
    g_patch = g[radius - top : radius + bottom, radius - left : radius + right]
    np.maximum(patch, g_patch.astype(heatmap.dtype), out=patch)
    return heatmap


def fill_mask(landmarks_map: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Fill the vertebra quadrilaterals into a ``(h, w)`` float32 mask of 0 and 1.

    ``landmarks_map (K, 4, 2)`` (K quadrilaterals, 17 for a whole spine) is in MAP units
    (input pixels / STRIDE), corners TL, TR, BL, BR, walked as the polygon POLYGON_ORDER
    (TL, TR, BR, BL). Cell (ix, iy) is filled when its centre (ix + 0.5, iy + 0.5) lies inside
    at least one polygon: even-odd crossing rule, half-open at the edges, so a centre on an
    edge two vertebrae share counts for one of them.

    Exact at sub-cell precision on purpose: ``cv2.fillPoly`` (even with ``shift``) rounds each
    span's ends to the nearest pixel and draws the outline, which grows every quadrilateral by
    about half a cell on all sides: 13 % more area over the AASCE labels at the default size.
    """
    h, w = shape
    a = np.asarray(landmarks_map, dtype=np.float64)[:, POLYGON_ORDER, :, None]  # (K, 4, 2, 1)
    b = np.roll(a, -1, axis=1)  # each edge runs a -> b
    py = np.arange(h) + 0.5  # (h,) the row of cell centres each scanline passes through
    ax, ay, bx, by = a[:, :, 0], a[:, :, 1], b[:, :, 0], b[:, :, 1]  # (K, 4, 1)
    crosses = (ay > py) != (by > py)  # (K, 4, h); never true on a horizontal edge
    with np.errstate(divide="ignore", invalid="ignore"):
        x_at = ax + (py - ay) * (bx - ax) / (by - ay)
    x_at = np.sort(np.where(crosses, x_at, np.inf), axis=1)  # (K, 4, h) crossings, then inf
    # a centre px is inside when it lies in [x0, x1) or [x2, x3); cell ix has px = ix + 0.5
    cols = np.clip(np.ceil(x_at - 0.5), 0, w).astype(np.intp)  # first cell at or after each
    flat = np.arange(h) * (w + 1) + cols  # (K, 4, h) indices into an (h, w + 1) grid
    size = h * (w + 1)
    runs = np.bincount(flat[:, 0::2].ravel(), minlength=size)  # +1 where a span starts
    runs -= np.bincount(flat[:, 1::2].ravel(), minlength=size)  # -1 where it ends
    return (np.cumsum(runs.reshape(h, w + 1)[:, :w], axis=1) > 0).astype(np.float32)


def encode(
    landmarks: np.ndarray,
    input_size: tuple[int, int] = INPUT_SIZE,
    min_overlap: float = MIN_OVERLAP,
) -> dict[str, np.ndarray]:
    """Head targets of one spine whose ``(17, 4, 2)`` landmarks are in INPUT pixels.

    Returns, with ``(h, w) = map_size(input_size)``:

    - ``hm (1, h, w)`` float32: a Gaussian per vertebra at its centre cell, radius from
      ``gaussian_radius`` of its axis-aligned box in map units, truncated to an int, at least ``MIN_RADIUS``;
    - ``reg (17, 2)`` float32: c/STRIDE - floor(c/STRIDE) of the centre c (mean of corners);
    - ``cnr (17, 8)`` float32: (corner - c)/STRIDE, (x, y) per corner TL, TR, BL, BR;
    - ``mask (1, h, w)`` float32: the filled quadrilaterals (``fill_mask``);
    - ``ind (17,)`` int64: iy * w + ix of the centre cell;
    - ``valid (17,)`` float32: 1 where the centre cell lies inside the map; a vertebra
      outside gets valid 0, ind 0, zero reg and cnr, and no heatmap peak.
    """
    lm = lmk.check(landmarks)
    h, w = map_size(input_size)
    pts = lm / STRIDE  # (17, 4, 2) map units
    c = pts.mean(axis=1)  # (17, 2)
    cell = np.floor(c)
    inside = (cell[:, 0] >= 0) & (cell[:, 0] < w) & (cell[:, 1] >= 0) & (cell[:, 1] < h)

    hm = np.zeros((h, w), dtype=np.float32)
    sizes = pts.max(axis=1) - pts.min(axis=1)  # (17, 2) box (width, height)
    for k in np.flatnonzero(inside):
        r = max(MIN_RADIUS, int(gaussian_radius(sizes[k, 1], sizes[k, 0], min_overlap)))
        draw_gaussian(hm, (int(cell[k, 0]), int(cell[k, 1])), r)

    valid = inside.astype(np.float32)
    reg = (c - cell) * valid[:, None]
    cnr = (pts - c[:, None, :]).reshape(lmk.N_VERTEBRAE, 2 * lmk.N_CORNERS) * valid[:, None]
    ind = np.where(inside, cell[:, 1] * w + cell[:, 0], 0).astype(np.int64)
    out = {
        "hm": hm[None],
        "reg": reg.astype(np.float32),
        "cnr": cnr.astype(np.float32),
        "mask": fill_mask(pts, (h, w))[None],
        "ind": ind,
        "valid": valid,
    }
    # the heads spec is the one source of truth for every target's channel count
    channels = {
        "hm": out["hm"].shape[0],
        "reg": out["reg"].shape[1],
        "cnr": out["cnr"].shape[1],
        "mask": out["mask"].shape[0],
    }
    assert channels == HEADS, f"targets {channels} disagree with heads.HEADS {HEADS}"
    return out


def encode_batch(
    batch: list[np.ndarray],
    input_size: tuple[int, int] = INPUT_SIZE,
    min_overlap: float = MIN_OVERLAP,
) -> dict[str, np.ndarray]:
    """Encode several spines and stack each target along a new leading axis ``B``."""
    encoded = [encode(lm, input_size, min_overlap) for lm in batch]
    return collate(encoded)


def collate(encoded: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Stack a list of ``encode`` outputs: ``hm (B, 1, h, w)``, ``reg (B, 17, 2)``, ..."""
    return {key: np.stack([e[key] for e in encoded]) for key in TARGET_KEYS}
