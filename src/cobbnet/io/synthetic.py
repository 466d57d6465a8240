"""Synthetic AP spine radiographs with known corners, written in the AASCE layout.

Everything that must run without the research-licensed AASCE images (tests, the demo, smoke
training) draws its data here. A spine is a smooth curve: the tangent angle theta(u) along the
normalised arc length u is interpolated between a few knots, the centre line is its integral,
and every vertebra is tilted to the tangent at its centre, so Cobb angles arise from tilt as in
real spines. ``render`` then paints a radiograph around the landmarks.

Corners are ordered in each vertebra's own frame (upper endplate first, left to right along
it), so ``landmarks.canonical_order`` leaves every generated spine exactly as it is.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import cv2
import numpy as np

from cobbnet.errors import InputError
from cobbnet.io import matfile, outputs
from cobbnet.spine.cobb import cobb_angles_batch
from cobbnet.spine.landmarks import BL, BR, N_VERTEBRAE, TL, TR, centers, check, to_csv_row, to_p2

__all__ = ["KINDS", "make_radiograph", "random_size", "random_spine", "render", "synth_sample",
           "synth_samples", "write_dataset"]

# Drawn image sizes follow the AASCE training images: heights ~1000-3000, aspect H/W ~2-3.2.
HEIGHT_RANGE = (1000, 3000)
ASPECT_RANGE = (2.0, 3.2)
# The 17 vertebrae span from TOP_RANGE to BOTTOM_RANGE of the image height.
TOP_RANGE = (0.03, 0.08)
BOTTOM_RANGE = (0.75, 0.90)
MAX_WIDTH_SHARE = 0.30  # the widest vertebra covers at most this share of the image width
MARGIN_SHARE = 0.02  # every corner stays this share of the width inside the image
JPEG_QUALITY = 90
NAME_FORMAT = "synth-{:04d} A AP.jpg"  # spaces and mixed case, as the AASCE names have
# savemat stamps the creation time into the header; a fixed text keeps the bytes reproducible.
MAT_HEADER = b"MATLAB 5.0 MAT-file, written by cobbnet.io.synthetic"


# --- the curve: knots (u, theta in degrees) of the tangent angle along the spine -------------

def _straight(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    return np.array([0.0, 0.5, 1.0]), rng.normal(0.0, 1.5, 3)


def _c_curve(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    apex, half = rng.uniform(0.3, 0.7), rng.uniform(0.17, 0.28)
    cobb = rng.uniform(8.0, 80.0) * rng.choice([-1.0, 1.0])
    ends = rng.uniform(0.0, 0.6, 2)  # beyond the end vertebrae the spine turns back upright
    u = np.concatenate([[0.0], np.clip([apex - half, apex + half], 0.04, 0.96), [1.0]])
    return u, cobb / 2 * np.array([ends[0], 1.0, -1.0, -ends[1]])


def _s_curve(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    major = rng.uniform(15.0, 80.0)
    minor = major * rng.uniform(0.4, 1.0)
    upper, lower = (major, minor) if rng.random() < 0.6 else (minor, major)
    middle = min(upper, lower) * rng.uniform(0.35, 0.65)  # the tilt shared by both curves
    theta = np.array([upper - middle, -middle, lower - middle])
    ends = rng.uniform(0.0, 0.6, 2) * theta[[0, 2]]
    u = [0.0, rng.uniform(0.05, 0.16), rng.uniform(0.42, 0.58), rng.uniform(0.84, 0.95), 1.0]
    return np.array(u), np.concatenate([[ends[0]], theta, [ends[1]]]) * rng.choice([-1.0, 1.0])


Profile = Callable[[np.random.Generator], tuple[np.ndarray, np.ndarray]]
# curve kind -> (its tangent profile, how often it is drawn when no kind is asked for)
_KINDS: dict[str, tuple[Profile, float]] = {
    "straight": (_straight, 0.2), "C": (_c_curve, 0.4), "S": (_s_curve, 0.4)}
KINDS: tuple[str, ...] = tuple(_KINDS)


def _tangent(u: np.ndarray, knots_u: np.ndarray, knots_deg: np.ndarray) -> np.ndarray:
    """Tangent angle in radians at ``u``: cosine-eased between knots, flat beyond them."""
    u = np.clip(u, knots_u[0], knots_u[-1])
    k = np.clip(np.searchsorted(knots_u, u, side="right") - 1, 0, len(knots_u) - 2)
    t = (u - knots_u[k]) / (knots_u[k + 1] - knots_u[k])
    ease = (1 - np.cos(np.pi * t)) / 2
    return np.radians(knots_deg[k] + (knots_deg[k + 1] - knots_deg[k]) * ease)


def _axis(angle: np.ndarray) -> np.ndarray:
    """Unit vectors down the spine for tilt ``angle`` (radians): ``(n,) -> (n, 2)``."""
    return np.stack([np.sin(angle), np.cos(angle)], axis=-1)


def _endplate(angle: np.ndarray) -> np.ndarray:
    """Unit vectors left to right along an endplate tilted by ``angle``: ``(n,) -> (n, 2)``."""
    return np.stack([np.cos(angle), -np.sin(angle)], axis=-1)


def _spine_shape(rng: np.random.Generator, kind: str) -> tuple[np.ndarray, float]:
    """Landmarks ``(17, 4, 2)`` in units of the base vertebra height, and the widest width."""
    knots_u, knots_deg = _KINDS[kind][0](rng)
    # balance: the head stands about above the pelvis, leaning a little
    u = np.linspace(0.0, 1.0, 200)
    knots_deg = knots_deg - np.degrees(_tangent(u, knots_u, knots_deg).mean()) + rng.normal(0, 1.5)
    r = np.linspace(0.0, 1.0, N_VERTEBRAE)  # T1 -> L5
    heights = (0.7 + 0.3 * r) * (1 + rng.normal(0, 0.015, N_VERTEBRAE))
    widths = rng.uniform(1.55, 1.85) * (1 + 0.5 * r ** 1.3) * (1 + rng.normal(0, 0.01, N_VERTEBRAE))
    gaps = rng.uniform(0.25, 0.35) * (heights[:-1] + heights[1:]) / 2
    gaps = gaps * (1 + rng.normal(0, 0.06, N_VERTEBRAE - 1))
    s_top = np.concatenate([[0.0], np.cumsum(heights[:-1] + gaps)])
    s_mid, s_bot = s_top + heights / 2, s_top + heights
    length = s_bot[-1]

    # centre line: integrate the tangent along the arc
    s = np.linspace(0.0, length, 600)
    th = _tangent(s / length, knots_u, knots_deg)
    ds = np.diff(s)
    x = np.concatenate([[0.0], np.cumsum(ds * (np.sin(th[1:]) + np.sin(th[:-1])) / 2)])
    y = np.concatenate([[0.0], np.cumsum(ds * (np.cos(th[1:]) + np.cos(th[:-1])) / 2)])
    centre = np.stack([np.interp(s_mid, s, x), np.interp(s_mid, s, y)], axis=1)  # (17, 2)

    th_mid = _tangent(s_mid / length, knots_u, knots_deg)
    tilt = th_mid + np.radians(rng.normal(0, 1.2, N_VERTEBRAE))
    # endplates turn part of the way towards the local tangent: wedging where the curve bends
    wedge = rng.uniform(0.4, 0.8)
    top = tilt + wedge * (_tangent(s_top / length, knots_u, knots_deg) - th_mid)
    bottom = tilt + wedge * (_tangent(s_bot / length, knots_u, knots_deg) - th_mid)
    top = top + np.radians(rng.normal(0, 0.6, N_VERTEBRAE))
    bottom = bottom + np.radians(rng.normal(0, 0.6, N_VERTEBRAE))
    taper = rng.uniform(-0.03, 0.06, N_VERTEBRAE)  # slight trapezoid, wider below
    axis = _axis(tilt)
    top_mid = centre - axis * heights[:, None] / 2
    bot_mid = centre + axis * heights[:, None] / 2
    half_top = (widths * (1 - taper / 2) / 2)[:, None] * _endplate(top)
    half_bot = (widths * (1 + taper / 2) / 2)[:, None] * _endplate(bottom)
    lm = np.stack([top_mid - half_top, top_mid + half_top, bot_mid - half_bot, bot_mid + half_bot],
                  axis=1)
    return lm, float(widths.max())


def _fit(lm: np.ndarray, rng: np.random.Generator, width: int, height: int,
         widest: float) -> np.ndarray:
    """Scale and place base-unit landmarks in a ``width`` x ``height`` image."""
    top, bottom = rng.uniform(*TOP_RANGE) * height, rng.uniform(*BOTTOM_RANGE) * height
    lo, hi = lm[..., 1].min(), lm[..., 1].max()
    scale = (bottom - top) / (hi - lo)
    centre = lm.mean(axis=1)  # vertebrae narrower than MAX_WIDTH_SHARE of the image width
    narrow = min(1.0, MAX_WIDTH_SHARE * width / (scale * widest))
    lm = centre[:, None] + (lm - centre[:, None]) * narrow
    lm = (lm - [0.0, lo]) * scale
    margin = max(2.0, MARGIN_SHARE * width)
    x_lo, x_hi = lm[..., 0].min(), lm[..., 0].max()
    shrink = min(1.0, (width - 1 - 2 * margin) / (x_hi - x_lo))  # a wide curve: smaller spine
    lm = lm * shrink
    x_lo, x_hi = lm[..., 0].min(), lm[..., 0].max()
    want = width / 2 + rng.normal(0, 0.04 * width) - (x_lo + x_hi) / 2
    dx = np.clip(want, margin - x_lo, width - 1 - margin - x_hi)
    return lm + [dx, top]


def random_spine(rng: np.random.Generator, width: int, height: int,
                 kind: str | None = None) -> np.ndarray:
    """A random spine's landmarks ``(17, 4, 2)`` in pixels of a ``width`` x ``height`` image.

    ``kind`` is one of ``KINDS`` ("straight", "C", "S"), drawn at random when None.
    Largest Cobb angles spread over about 0-80 degrees; all corners lie inside the image.
    """
    if kind is None:
        kind = str(rng.choice(KINDS, p=[weight for _, weight in _KINDS.values()]))
    if kind not in _KINDS:
        raise ValueError(f"unknown spine kind {kind!r}; expected one of {', '.join(KINDS)}")
    lm, widest = _spine_shape(rng, kind)
    return _fit(lm, rng, width, height, widest)


# --- rendering: attenuation layers in float32, then exposure, blur and noise -----------------

_SHIFT = 4  # cv2 draws with 4 fractional bits, so corners keep sub-pixel positions
_LOWRES = 8  # soft tissue is smooth: draw it at 1/8 size, blur there, then upsample
SIDES = (-1.0, 1.0)


def _pts(p: np.ndarray, f: float = 1.0) -> np.ndarray:
    return np.round(np.asarray(p, dtype=np.float64) * f * (1 << _SHIFT)).astype(np.int32)


def _poly(img: np.ndarray, pts: np.ndarray, value: float, f: float = 1.0) -> None:
    cv2.fillPoly(img, [_pts(pts, f).reshape(-1, 2)], float(value), cv2.LINE_8, _SHIFT)


def _line(img: np.ndarray, pts: np.ndarray, value: float, thick: float,
          closed: bool = False) -> None:
    cv2.polylines(img, [_pts(pts).reshape(-1, 2)], closed, float(value), max(1, round(thick)),
                  cv2.LINE_8, _SHIFT)


def _ellipse(img: np.ndarray, centre: np.ndarray, axes: tuple[float, float], angle: float,
             value: float, thick: float = -1, arc: tuple[float, float] = (0, 360),
             f: float = 1.0) -> None:
    c = tuple(int(v) for v in _pts(centre, f))
    ax = tuple(max(1, int(v)) for v in _pts(axes, f))
    cv2.ellipse(img, c, ax, angle, arc[0], arc[1], float(value),
                -1 if thick < 0 else max(1, round(thick)), cv2.LINE_8, _SHIFT)


def _noise(rng: np.random.Generator, h: int, w: int, cell: float) -> np.ndarray:
    """Smooth noise ``(h, w)`` float32 of unit-ish scale with blobs about ``cell`` pixels wide."""
    grid_shape = (max(2, int(h / cell) + 2), max(2, int(w / cell) + 2))
    grid = rng.standard_normal(grid_shape, dtype=np.float32)
    return cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC)


def _frame(lm: np.ndarray) -> tuple[np.ndarray, ...]:
    """Per vertebra: centre, unit axis down, unit endplate direction, width, height, tilt."""
    c = centers(lm)
    down = (lm[:, BL] + lm[:, BR] - lm[:, TL] - lm[:, TR]) / 2
    across = (lm[:, TR] + lm[:, BR] - lm[:, TL] - lm[:, BL]) / 2
    h, w = np.linalg.norm(down, axis=1), np.linalg.norm(across, axis=1)
    return c, down / h[:, None], across / w[:, None], w, h, np.arctan2(-across[:, 1], across[:, 0])


def _extra_vertebrae(lm: np.ndarray) -> np.ndarray:
    """Two cervical vertebrae above T1, unlabelled, so that T1 is not simply the top bone."""
    c, down, _, _, h, _ = _frame(lm)
    out, cur = [], lm[0]
    for _ in range(2):
        centre = cur.mean(axis=0)
        cur = centre + (cur - centre) * 0.88 - down[0] * h[0] * 1.3
        out.append(cur)
    return np.array(out)


def _soft_tissue(lm: np.ndarray, w: int, h: int, rng: np.random.Generator,
                 unit: float) -> np.ndarray:
    """Air, trunk, lungs, heart and bowel gas, drawn at low resolution: ``(h, w)`` float32."""
    f = 1.0 / _LOWRES
    sh, sw = max(8, int(np.ceil(h * f))), max(4, int(np.ceil(w * f)))
    c, _, _, vw, _, _ = _frame(lm)
    ys = np.linspace(-0.1 * h, 1.1 * h, 25)
    spine_x = np.interp(ys, c[:, 1], c[:, 0])
    half = rng.uniform(0.4, 0.62) * w * (1 - 0.1 * np.exp(-(((ys - c[13, 1]) / (0.12 * h)) ** 2)))
    body = np.zeros((sh, sw), np.float32)
    outline = [np.stack([spine_x - half, ys], 1), np.stack([spine_x + half, ys], 1)[::-1]]
    _poly(body, np.concatenate(outline), 1.0, f)
    lungs, heart, gas = (np.zeros_like(body) for _ in range(3))
    for side in SIDES:
        # the diaphragm's right dome (image left) stands higher
        dome = c[rng.integers(9, 12), 1] + (0.8 * unit if side > 0 else -0.2 * unit)
        top = c[0, 1] - rng.uniform(1.5, 3.5) * unit
        inner = vw[5] / 2 + rng.uniform(0.2, 0.8) * unit
        reach = max(inner + unit, half[12] * rng.uniform(0.85, 1.0))
        centre = np.array([c[5, 0] + side * (inner + reach) / 2, (top + dome) / 2])
        _ellipse(lungs, centre, ((reach - inner) / 2, (dome - top) / 2), 0, 1.0, f=f)
    apex = np.array([c[8, 0] + rng.uniform(0.3, 1.2) * vw[8], c[8, 1] + unit])
    heart_axes = (vw[8] * rng.uniform(1.0, 1.6), 3.5 * unit)
    _ellipse(heart, apex, heart_axes, rng.uniform(-30, 10), 1.0, f=f)
    for _ in range(rng.integers(3, 14)):  # bowel gas below the diaphragm
        at = np.array([c[12, 0] + rng.normal(0, 0.25 * w), rng.uniform(c[11, 1], 1.05 * h)])
        _ellipse(gas, at, tuple(rng.uniform(0.3, 1.3, 2) * unit), rng.uniform(0, 180), 1.0, f=f)
    k = max(0.7, unit * f * 0.35)
    lungs = cv2.GaussianBlur(lungs * body, (0, 0), k) * (1 + 0.12 * _noise(rng, sh, sw, 2.0))
    soft = (rng.uniform(0.18, 0.3) * cv2.GaussianBlur(body, (0, 0), 1.5 * k)
            - rng.uniform(0.15, 0.25) * lungs + 0.08 * cv2.GaussianBlur(heart, (0, 0), 2 * k) * body
            - rng.uniform(0.02, 0.08) * cv2.GaussianBlur(gas, (0, 0), k))
    soft *= 1 + 0.12 * _noise(rng, sh, sw, 4.0)
    band = np.zeros_like(body)  # paravertebral soft tissue along the spine
    _line(band, c * f, 1.0, 1.3 * vw.mean() * f)
    soft += 0.05 * cv2.GaussianBlur(band, (0, 0), k)
    return cv2.resize(soft, (w, h), interpolation=cv2.INTER_LINEAR) + rng.uniform(0.0, 0.04)


def _draw_vertebra(img: np.ndarray, q: np.ndarray, value: float, rng: np.random.Generator,
                   lumbar: float) -> None:
    """One vertebra: transverse processes, textured body with cortical rim, pedicles, spine."""
    (c,), (down,), (across,), (w,), (h,), (tilt,) = _frame(q[None])
    deg = -np.degrees(tilt)
    for side in SIDES:  # transverse processes, longer in the lumbar spine
        root = c - 0.15 * h * down + side * 0.45 * w * across
        tip = root + side * (0.12 + 0.3 * lumbar) * w * across - 0.1 * h * down
        _line(img, np.array([root, tip]), 0.9 * value, 0.25 * h)
    waist = 0.05 * w * across
    body = np.array([q[TL], q[TR], (q[TR] + q[BR]) / 2 - waist, q[BR], q[BL],
                     (q[TL] + q[BL]) / 2 + waist])
    _poly(img, body, value)
    _line(img, body, 1.5 * value, max(1.0, 0.06 * h), closed=True)
    _line(img, q[[TL, TR]], 1.8 * value, max(1.0, 0.08 * h))
    _line(img, q[[BL, BR]], 1.8 * value, max(1.0, 0.08 * h))
    for side in SIDES:
        at = c - 0.18 * h * down + side * 0.3 * w * across
        axes = (0.08 * w * rng.uniform(0.85, 1.15), 0.17 * h * rng.uniform(0.85, 1.15))
        _ellipse(img, at, axes, deg, 1.2 * value)
        _ellipse(img, at, axes, deg, 1.6 * value, thick=max(1.0, 0.04 * w))
    spinous = c + 0.3 * h * down + rng.normal(0, 0.03) * w * across
    _ellipse(img, spinous, (0.05 * w, 0.3 * h), deg, 1.5 * value)


def _ribs(img: np.ndarray, lm: np.ndarray, w: int, rng: np.random.Generator, unit: float) -> None:
    """Posterior rib arcs from T1..T12 and the clavicles, cortex brighter than the middle."""
    c, down, across, vw, vh, tilt = _frame(lm)
    t = np.linspace(0.0, 1.0, 24)
    reach = rng.uniform(0.3, 0.42) * w
    for i in range(12):
        value = 0.1 * (1 - 0.04 * i)  # lower ribs lie under more soft tissue
        length = reach * (0.45 + 0.55 * np.sin(np.pi * min(1.0, (i + 2) / 12)))
        length *= 0.55 if i >= 10 else 1.0  # T11, T12: short floating ribs
        drop = rng.uniform(0.3, 0.45) + 0.25 * (i < 3)
        for side in SIDES:
            root = c[i] - 0.25 * vh[i] * down[i] + side * 0.5 * vw[i] * across[i]
            lat, fall = length * t, length * (drop * t**2 - 0.12 * np.sin(np.pi * t))
            # ribs turn with their vertebra, half as much: the chest wall resists
            ang = tilt[i] / 2
            ex, ey = np.cos(ang), -np.sin(ang)
            pts = root + np.stack([side * lat * ex - fall * ey, side * lat * ey + fall * ex], 1)
            _line(img, pts, value, 0.45 * vh[i])
            _line(img, pts, 0.5 * value, 0.2 * vh[i])
    for side in SIDES:
        start = c[0] + side * 0.55 * vw[0] * across[0] - 1.2 * unit * down[0]
        end = start + np.array([side * rng.uniform(0.3, 0.45) * w, -rng.uniform(1.0, 3.0) * unit])
        _line(img, np.array([start, end]), 0.16, 0.6 * unit)


def _bezier(p0: np.ndarray, p1: np.ndarray, p2: np.ndarray, n: int = 16) -> np.ndarray:
    t = np.linspace(0.0, 1.0, n)[:, None]
    return (1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t**2 * p2


def _pelvis(img: np.ndarray, lm: np.ndarray, rng: np.random.Generator, value: float) -> None:
    """Sacrum below L5 and the iliac wings, fan shapes with brighter crests."""
    _, _, _, vw, vh, tilt = _frame(lm)
    level = 0.3 * tilt[-1]  # the pelvis stays about level however L5 is tilted
    base = (lm[-1, BL] + lm[-1, BR]) / 2
    a, d = vw[-1] * _endplate(level), vh[-1] * _axis(level)
    top = base + 0.4 * d
    _poly(img, np.array([top - 0.6 * a, top + 0.6 * a, top + 3.5 * d]), 0.8 * value)
    for side in SIDES:
        joint = base + side * 0.55 * a + 0.4 * d  # sacroiliac joint, where the crest starts
        tip = base + side * rng.uniform(1.5, 1.9) * a + rng.uniform(0.8, 1.6) * d
        crest_top = base + side * rng.uniform(0.9, 1.2) * a - rng.uniform(1.8, 2.6) * d
        crest = _bezier(joint, crest_top, tip)
        foot = tip + rng.uniform(1.5, 2.5) * d - side * 0.3 * a  # towards the hip joint
        lower = _bezier(foot, base + side * a + 2.5 * d, joint + 2.2 * d)
        _poly(img, np.concatenate([crest, lower]), 0.45 * value)
        _line(img, crest, 1.0 * value, 0.2 * vh[-1])


def _markers(img: np.ndarray, rng: np.random.Generator, unit: float) -> None:
    """Now and then a side letter or a ruler, as burnt into many radiographs."""
    h, w = img.shape
    mark = np.zeros((h, w), np.uint8)  # cv2 writes text into 8-bit images only
    if rng.random() < 0.3:
        scale = max(0.3, unit / 25)
        x = int(w * (rng.uniform(0.03, 0.1) if rng.random() < 0.5 else rng.uniform(0.75, 0.85)))
        y = int(rng.uniform(0.03, 0.1) * h + 20 * scale)
        cv2.putText(mark, str(rng.choice(["L", "R", "AP"])), (x, y), cv2.FONT_HERSHEY_SIMPLEX,
                    scale, 255, max(1, round(2 * scale)))
    if rng.random() < 0.25:
        x = int(w * (0.02 if rng.random() < 0.5 else 0.96))
        y0, y1 = int(rng.uniform(0.05, 0.3) * h), int(rng.uniform(0.6, 0.95) * h)
        cv2.line(mark, (x, y0), (x, y1), 255, max(1, round(unit / 20)))
        for k, y in enumerate(range(y0, y1, max(2, round(unit / 4)))):
            cv2.line(mark, (x, y), (x + round(unit * (0.4 if k % 5 == 0 else 0.2)), y), 255, 1)
    np.maximum(img, mark * np.float32(rng.uniform(0.8, 1.0) / 255), out=img)


def render(landmarks: np.ndarray, width: int, height: int, rng: np.random.Generator) -> np.ndarray:
    """Paint an AP spine radiograph ``(height, width)`` uint8 around landmarks ``(17, 4, 2)``."""
    lm = check(landmarks)
    h, w = int(height), int(width)
    unit = float(np.mean(_frame(lm)[4]))  # mean vertebra height: the scale of every structure
    bone, ribs = np.zeros((h, w), np.float32), np.zeros((h, w), np.float32)
    value = rng.uniform(0.15, 0.22)
    _pelvis(bone, lm, rng, value)
    for q in _extra_vertebrae(lm):
        _draw_vertebra(bone, q, 0.9 * value, rng, 0.0)
    for i, q in enumerate(lm):
        density = value * (0.9 + 0.2 * i / 16) * rng.uniform(0.9, 1.1)  # lumbar bodies thicker
        _draw_vertebra(bone, q, density, rng, float(i >= 12))
    _ribs(ribs, lm, w, rng, unit)
    texture = 1 + rng.uniform(0.2, 0.35) * _noise(rng, h, w, max(1.5, 0.15 * unit))
    img = _soft_tissue(lm, w, h, rng, unit) + (bone + ribs) * texture
    img = cv2.GaussianBlur(img, (0, 0), max(0.5, unit * rng.uniform(0.015, 0.04)))
    # exposure: window between low and high percentiles, then a random gamma
    window = np.percentile(img[::4, ::4], [rng.uniform(0, 3), rng.uniform(99, 99.9)])
    lo, hi = float(window[0]), float(window[1])
    img = np.clip((img - lo) / (hi - lo) * rng.uniform(0.85, 1.05), 0.0, 1.0)
    img **= rng.uniform(0.8, 1.5)
    _markers(img, rng, unit)
    noise = rng.standard_normal((h, w), dtype=np.float32)
    img += noise * (rng.uniform(0.005, 0.03) + rng.uniform(0.01, 0.04) * np.sqrt(img))
    return (np.clip(img, 0.0, 1.0) * 255 + 0.5).astype(np.uint8)


def random_size(rng: np.random.Generator, scale: float = 1.0) -> tuple[int, int]:
    """An image size (H, W) in the AASCE range, times ``scale``."""
    h = rng.uniform(*HEIGHT_RANGE)
    w = h / rng.uniform(*ASPECT_RANGE)
    return max(16, round(h * scale)), max(8, round(w * scale))


def make_radiograph(rng: np.random.Generator, size: tuple[int, int] | None = None,
                    scale: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """A synthetic radiograph ``(H, W)`` uint8 and its landmarks ``(17, 4, 2)``.

    ``size`` is (H, W); None draws one in the AASCE range. ``scale`` multiplies either.
    """
    if size is None:
        h, w = random_size(rng, scale)
    else:
        h, w = max(16, round(size[0] * scale)), max(8, round(size[1] * scale))
    lm = random_spine(rng, w, h)
    return render(lm, w, h, rng), lm


def synth_sample(index: int, seed: int, size: tuple[int, int] | None = None,
                 scale: float = 1.0) -> tuple[str, np.ndarray, np.ndarray]:
    """Sample ``index`` of the synthetic set ``seed``: (name, image (H, W) uint8, landmarks).

    Each sample has its own random stream, so sample i is the same whatever n is asked for.
    """
    rng = np.random.default_rng([seed, index])
    image, lm = make_radiograph(rng, size, scale)
    return NAME_FORMAT.format(index + 1), image, lm


def synth_samples(n: int, seed: int, size: tuple[int, int] | None = None,
                  scale: float = 1.0) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
    """Yield ``n`` samples (name, image (H, W) uint8, landmarks (17, 4, 2)) without disk."""
    for i in range(n):
        yield synth_sample(i, seed, size, scale)


def _mat_bytes(p2: np.ndarray) -> bytes:
    return matfile.mat_bytes({"p2": p2}, header=MAT_HEADER)


def _prepare(folders: list[Path], overwrite: bool) -> None:
    """Refuse non-empty split folders unless ``overwrite``; then empty them."""
    for folder in folders:
        if folder.is_dir() and any(folder.iterdir()):
            if not overwrite:
                raise InputError(f"{folder}: dataset folder is not empty; pass overwrite=True "
                                 "to replace it")
            shutil.rmtree(folder)


def write_dataset(out: str | Path, n: int, seed: int, size: tuple[int, int] | None = None,
                  split: str = "training", overwrite: bool = False, scale: float = 1.0) -> Path:
    """Write ``n`` synthetic radiographs in the AASCE ``boostnet_labeldata`` layout; return ``out``.

    - ``out/data/<split>/<name>`` JPEG images (quality ``JPEG_QUALITY``);
    - ``out/labels/<split>/<name>.mat`` with ``p2`` (68, 2) pixel corners. The AASCE files hold
      uint16; these hold float64 to keep sub-pixel corners (``landmarks.from_p2`` takes both);
    - ``out/labels/<split>/filenames.csv`` one name a line, ``landmarks.csv`` 136 normalised
      values a row, ``angles.csv`` the three challenge Cobb angles a row; no headers.

    The same ``seed`` gives the same bytes. Non-empty split folders are refused (InputError)
    unless ``overwrite``, which replaces them.
    """
    out = Path(out)
    images, labels = out / "data" / split, out / "labels" / split
    _prepare([images, labels], overwrite)
    names, rows, spines, heights = [], [], [], []
    for name, image, lm in synth_samples(n, seed, size, scale):
        ok, jpg = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        if not ok:
            raise RuntimeError(f"JPEG encoding failed for {name}")
        outputs.write_bytes(images / name, jpg.tobytes())
        outputs.write_bytes(labels / f"{name}.mat", _mat_bytes(to_p2(lm)))
        h, w = image.shape
        names.append(name)
        rows.append(to_csv_row(check(lm), w, h))
        spines.append(lm)
        heights.append(h)
    angles = cobb_angles_batch(np.reshape(spines, (-1, N_VERTEBRAE, 4, 2)), np.array(heights))[0]
    outputs.write_text(labels / "filenames.csv", "".join(f"{nm}\n" for nm in names))
    outputs.write_text(labels / "landmarks.csv", _csv(rows, "%.9g"))
    outputs.write_text(labels / "angles.csv", _csv(angles, "%.6f"))
    return out


def _csv(rows: np.ndarray | list, fmt: str) -> str:
    return "".join(",".join(fmt % v for v in row) + "\n" for row in rows)
