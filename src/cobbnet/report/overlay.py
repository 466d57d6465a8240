"""What a clinician looks at: overlay PNGs and the batch CSV.

Evaluation plots are in :mod:`cobbnet.report.plots`, the result JSON in
:mod:`cobbnet.report.result`. Overlays keep the image's own resolution; line widths and fonts
scale with its height. Each curve is drawn in its region's colour (proximal thoracic, main
thoracic, thoracolumbar/lumbar) with a bracket over its end vertebrae and a tag naming its
region; text goes in a panel appended to the right of the radiograph, whose legend shows
exactly the colours drawn. All colours are RGB; ``save_overlay`` converts to OpenCV's BGR.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Sequence
from functools import lru_cache
from importlib.util import find_spec
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from cobbnet.io.outputs import atomic_path, write_text
from cobbnet.report.result import result_record  # noqa: F401  (the record's old home)
from cobbnet.spine.cobb import ANGLE_COLUMNS, REGIONS, CobbResult, Curve, direction_vectors
from cobbnet.spine.landmarks import BL, BR, LEVELS, TL, TR, centers, check

LOW_CONFIDENCE = 0.3  # vertebrae scored below this are drawn dashed in WARNING
REGION_COLOURS: dict[str, tuple[int, int, int]] = dict(zip(
    REGIONS, ((255, 160, 0), (0, 200, 255), (255, 60, 220)), strict=True))
# evaluation plots colour the challenge's three columns; they are not regions
ANGLE_COLOURS = dict(zip(ANGLE_COLUMNS, REGION_COLOURS.values(), strict=True))
OUTLINE_COLOURS = ((40, 230, 40), (210, 255, 60))  # alternate so touching vertebrae stay apart
WARNING = (255, 40, 40)
PANEL_BG, TEXT, DIM = (22, 22, 26), (240, 240, 240), (170, 170, 170)
Rgb = tuple[int, int, int]


@lru_cache(maxsize=64)
def _font(size: int, bold: bool = False) -> ImageFont.FreeTypeFont:
    """DejaVu Sans from matplotlib's data (it has the degree sign and the en dash).

    Found without importing matplotlib, which would add about 0.2 s to every prediction.
    """
    name = "DejaVuSans-Bold.ttf" if bold else "DejaVuSans.ttf"
    spec = find_spec("matplotlib")
    root = Path(next(iter(spec.submodule_search_locations))) if spec else Path()
    path = root / "mpl-data" / "fonts" / "ttf" / name
    try:
        return ImageFont.truetype(str(path), size)
    except OSError:
        return ImageFont.load_default(size=size)


def _fixed(p: np.ndarray) -> tuple[int, int]:
    """A point in OpenCV's fixed-point form (``shift=4``) so anti-aliased lines stay sub-pixel."""
    return int(round(p[0] * 16)), int(round(p[1] * 16))


def _pattern_line(img: np.ndarray, p: np.ndarray, q: np.ndarray, pattern: Sequence[Rgb | None],
                  thickness: int, dash: float) -> None:
    """Draw p -> q in pieces of ``dash`` px cycling through ``pattern`` (None leaves a gap)."""
    p, q = np.asarray(p, float), np.asarray(q, float)
    if len(pattern) == 1:
        cv2.line(img, _fixed(p), _fixed(q), pattern[0], thickness, cv2.LINE_AA, 4)
        return
    n = max(1, int(np.ceil(np.hypot(*(q - p)) / dash)))
    ts = np.linspace(0.0, 1.0, n + 1)
    for k in range(n):
        colour = pattern[k % len(pattern)]
        if colour is not None:
            a, b = p + (q - p) * ts[k], p + (q - p) * ts[k + 1]
            cv2.line(img, _fixed(a), _fixed(b), colour, thickness, cv2.LINE_AA, 4)


def _spread(ys: Sequence[float], gap: float, lo: float, hi: float) -> np.ndarray:
    """Move sorted-by-value positions apart to at least ``gap``, kept inside [lo, hi]."""
    ys = np.asarray(ys, dtype=float)
    order = np.argsort(ys, kind="stable")
    out = np.clip(ys[order], lo, hi)
    for k in range(1, len(out)):
        out[k] = max(out[k], out[k - 1] + gap)
    overflow = out[-1] - hi if len(out) else 0.0
    if overflow > 0:  # pushed past the bottom: shift the stack up, never above ``lo``
        out = np.maximum(out - overflow, lo + gap * np.arange(len(out)))
    result = np.empty_like(out)
    result[order] = out
    return result


def _text(draw: ImageDraw.ImageDraw, xy: tuple[float, float], text: str, font, fill: Rgb,
          anchor: str) -> None:
    """Text with a dark outline, legible on bright bone and dark soft tissue alike."""
    draw.text(xy, text, font=font, fill=fill, anchor=anchor,
              stroke_width=max(1, font.size // 9), stroke_fill=(0, 0, 0))


def _scale(height: int, lm: np.ndarray) -> dict:
    """Line widths and font sizes for an image ``height`` px tall and its spine ``(17, 4, 2)``."""
    spacing = float(np.median(np.diff(centers(lm)[:, 1]))) if len(lm) > 1 else height / 20
    font = int(np.clip(height / 50, 11, 64))
    return {
        "outline": max(1, round(height / 800)),
        "cobb": max(2, round(height / 360)),
        "dash": max(4.0, height / 150),
        "font": font,
        "level_font": int(np.clip(0.5 * abs(spacing), 8, font)),
        "width": float(np.median(np.hypot(*direction_vectors(lm).T))),
    }


def _draw_spine(img: np.ndarray, lm: np.ndarray, low: np.ndarray, s: dict) -> None:
    for i, quad in enumerate(lm[:, [TL, TR, BR, BL]]):
        colour = WARNING if low[i] else OUTLINE_COLOURS[i % 2]
        pattern = [colour, None] if low[i] else [colour]
        for k in range(4):
            _pattern_line(img, quad[k], quad[(k + 1) % 4], pattern, s["outline"], s["dash"] / 2)


def curve_label(curve: Curve) -> str:
    """The curve's tag: its region and angle, e.g. ``Main thoracic 72.9°``."""
    return f"{curve.region.capitalize()} {curve.angle:.1f}°"


def _convexity(curve: Curve) -> str:
    """Convexity on the image and, by the AP display convention, on the patient."""
    side = curve.convex_to.removeprefix("image ")
    return f"convex to image {side} (patient {'left' if side == 'right' else 'right'})"


def _cobb_segments(lm: np.ndarray, curves: Sequence[Curve], s: dict) -> list:
    """(start, end, colours) of each end vertebra's direction line through its centre.

    A vertebra that ends several curves gets one line striped in all their colours. Lines
    stop just left of the vertebra (where its level tag sits) and run on to the brackets.
    """
    users: dict[int, list[Rgb]] = {}
    for curve in curves:
        for v in (curve.upper, curve.lower):
            users.setdefault(v, []).append(REGION_COLOURS[curve.region])
    d, c, w = direction_vectors(lm), centers(lm), s["width"]
    segments = []
    for v, colours in users.items():
        u = d[v] / max(np.hypot(*d[v]), 1e-9)
        u = -u if u[0] < 0 else u  # long end towards the brackets even for a flipped vertebra
        segments.append((c[v] - 0.7 * w * u, c[v] + 1.6 * w * u, colours))
    return segments


def _layout(lm: np.ndarray, curves: Sequence[Curve], height: int, s: dict) -> dict:
    """Where the level tags (left of the spine), brackets and curve tags (right of it) go.

    ``lo``/``hi`` are the x extent everything needs, so the caller can widen the canvas.
    """
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    level_font, font = _font(s["level_font"], bold=True), _font(s["font"], bold=True)
    c, gap = centers(lm), 0.3 * s["width"]
    segments = _cobb_segments(lm, curves, s)
    level_x = lm[..., 0].min(axis=1) - gap  # right end of each level tag
    level_w = np.array([probe.textlength(name, font=level_font) for name in LEVELS])
    right = max([lm[..., 0].max()] + [max(a[0], b[0]) for a, b, _ in segments])
    step = 3 * s["cobb"]
    bracket_x = right + gap + step * np.arange(max(1, len(curves)))
    tag_x = bracket_x[-1] + gap
    tags = [curve_label(curve) for curve in curves]
    mids = np.array([(c[cv.upper, 1] + c[cv.lower, 1]) / 2 for cv in curves])
    lf, f = s["level_font"], s["font"]
    return {
        "segments": segments, "level_x": level_x, "level_font": level_font, "font": font,
        "level_y": _spread(c[:, 1], lf * 1.05, lf / 2, height - lf / 2),
        "bracket_x": bracket_x, "step": step, "tag_x": tag_x, "tags": tags, "mids": mids,
        "tag_y": _spread(mids, f * 1.3, f, height - f),
        "lo": float((level_x - level_w).min() - 2 * s["outline"]),
        "hi": float(tag_x + max([probe.textlength(t, font=font) for t in tags], default=0) + f / 2),
    }


def _draw_cobb_lines(img: np.ndarray, layout: dict, s: dict) -> None:
    for a, b, colours in layout["segments"]:
        _pattern_line(img, a, b, colours, s["cobb"], s["dash"])


def _annotate(img: np.ndarray, lm: np.ndarray, curves: Sequence[Curve], low: np.ndarray,
              layout: dict, s: dict) -> np.ndarray:
    """Level tags, a bracket per curve over its end vertebrae, and the curve tags."""
    c = centers(lm)
    pil = Image.fromarray(img)
    draw = ImageDraw.Draw(pil)
    for i, (x, y) in enumerate(zip(layout["level_x"], layout["level_y"], strict=True)):
        _text(draw, (x, y), LEVELS[i], layout["level_font"], WARNING if low[i] else TEXT, "rm")
    step, tag_x = layout["step"], layout["tag_x"]
    for k, curve in enumerate(curves):
        colour, bx = REGION_COLOURS[curve.region], layout["bracket_x"][k]
        ya, yb, ym, yt = c[curve.upper, 1], c[curve.lower, 1], layout["mids"][k], layout["tag_y"][k]
        draw.line([(bx - step, ya), (bx, ya), (bx, yb), (bx - step, yb)], fill=colour,
                  width=s["cobb"], joint="curve")
        draw.line([(bx, ym), (tag_x, yt)], fill=colour, width=max(1, s["cobb"] // 2))
        _text(draw, (tag_x, yt), layout["tags"][k], layout["font"], colour, "lm")
    return np.asarray(pil)


def _panel_lines(result: CobbResult, scores: np.ndarray | None, title: str | None) -> list:
    """(text, colour, bold, swatch) rows of the side panel; swatch is a line pattern or None.

    Every colour drawn on the radiograph has a row here with its swatch, and no other:
    each curve's, the two alternating outline colours, and the low-confidence dashes.
    """
    rows: list = [(title, TEXT, True, None)] if title else []
    curves = result.curves
    rows.append(("Curves by region", TEXT, True, None))
    major = max(curves, key=lambda cv: cv.angle) if curves else None
    for curve in curves:
        up, lo, apex = curve.levels
        text = curve_label(curve) + (" (major)" if curve is major else "")
        rows.append((text, REGION_COLOURS[curve.region], True, [REGION_COLOURS[curve.region]]))
        rows.append((f"   {up}–{lo}, apex {apex}, {_convexity(curve)}", DIM, False, None))
    if not curves:
        rows.append(("no curve measured", DIM, False, None))
    rows.append((f"{result.shape}-shaped spine", TEXT, False, None))
    rows.append(("", TEXT, False, None))
    rows.append(("AASCE 2019 challenge angles", TEXT, True, None))
    for k, ((up, lo), angle) in enumerate(zip(result.pair_levels, result.angles, strict=True)):
        rows.append((f"   angle {k + 1}: {angle:.1f}° ({up}–{lo})", DIM, False, None))
    rows.append(("", TEXT, False, None))
    low_any = False
    if scores is not None:
        rows.append((f"Mean confidence {float(np.mean(scores)):.2f}", TEXT, False, None))
        low = [LEVELS[i] for i in np.flatnonzero(scores < LOW_CONFIDENCE)]
        if low:
            low_any = True
            rows.append((f"Low confidence: {', '.join(low)}", WARNING, False, None))
    rows.append(("vertebra outline", TEXT, False, list(OUTLINE_COLOURS)))
    if low_any:
        rows.append((f"confidence < {LOW_CONFIDENCE}", TEXT, False, [WARNING, None]))
    if curves:
        rows.append(("end vertebrae, in their curve's colour", TEXT, False,
                     list(dict.fromkeys(REGION_COLOURS[cv.region] for cv in curves))))
    return rows


def _panel(height: int, rows: list, font_size: int) -> np.ndarray:
    """Render the panel rows ``height`` px tall, shrinking the font until they fit."""
    while font_size > 8 and (len(rows) + 1.5) * font_size * 1.45 > height:
        font_size -= 1
    pad, line_h, swatch = font_size, font_size * 1.45, 2.5 * font_size
    fonts = {b: _font(font_size, b) for b in (False, True)}
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    width = max(probe.textlength(t, font=fonts[b]) + (swatch + pad / 2 if sw else 0)
                for t, _, b, sw in rows)
    out = np.full((height, int(width + 2 * pad), 3), PANEL_BG, np.uint8)
    ys = pad + line_h / 2 + line_h * np.arange(len(rows))
    for (_, _, _, pattern), y in zip(rows, ys, strict=True):
        if pattern:
            _pattern_line(out, np.array([pad, y]), np.array([pad + swatch, y]), pattern,
                          max(2, font_size // 6), swatch / 5)
    pil = Image.fromarray(out)
    draw = ImageDraw.Draw(pil)
    for (text, colour, bold, pattern), y in zip(rows, ys, strict=True):
        x = pad + (swatch + pad / 2 if pattern else 0)
        draw.text((x, y), text, font=fonts[bold], fill=colour, anchor="lm")
    return np.asarray(pil)


def draw_curves(image: np.ndarray, landmarks: np.ndarray, curves: Sequence[Curve],
                scores: np.ndarray | None = None) -> np.ndarray:
    """Vertebrae and each curve in its region's colour with its tag, without the text panel.

    Args:
        image: ``(H, W)`` uint8 grayscale (or ``(H, W, 3)`` RGB).
        landmarks: ``(17, 4, 2)`` corners in pixels of ``image``.
        curves: the curves to draw (``CobbResult.curves``).
        scores: ``(17,)`` per-vertebra confidence; below ``LOW_CONFIDENCE`` is drawn dashed red.

    Returns:
        ``(H, W', 3)`` uint8 RGB: the image, widened where tags need room.
    """
    lm = check(landmarks)
    img = np.asarray(image, dtype=np.uint8)
    img = cv2.cvtColor(img, cv2.COLOR_GRAY2RGB) if img.ndim == 2 else img[..., :3].copy()
    sc = None if scores is None else np.asarray(scores, dtype=np.float64).reshape(len(LEVELS))
    low = np.zeros(len(LEVELS), bool) if sc is None else sc < LOW_CONFIDENCE
    H, W = img.shape[:2]
    s = _scale(H, lm)
    layout = _layout(lm, curves, H, s)
    # widen the canvas where tags would fall outside the image, instead of covering anatomy
    pad_l, pad_r = int(np.ceil(max(0.0, -layout["lo"]))), int(np.ceil(max(0.0, layout["hi"] - W)))
    if pad_l or pad_r:
        img = np.concatenate([np.full((H, pad_l, 3), PANEL_BG, np.uint8), img,
                              np.full((H, pad_r, 3), PANEL_BG, np.uint8)], axis=1)
        lm = lm + np.array([pad_l, 0.0])
        layout = _layout(lm, curves, H, s)
    _draw_spine(img, lm, low, s)
    _draw_cobb_lines(img, layout, s)
    return _annotate(img, lm, curves, low, layout, s)


def draw_overlay(image: np.ndarray, landmarks: np.ndarray, result: CobbResult,
                 scores: np.ndarray | None = None, title: str | None = None) -> np.ndarray:
    """``draw_curves`` of ``result.curves`` with a text panel appended on the right.

    ``image`` ``(H, W)`` or ``(H, W, 3)``, ``landmarks (17, 4, 2)``, ``scores (17,)`` as in
    ``draw_curves``; ``title`` is the panel's first line, e.g. the file name. Returns
    ``(H, W', 3)`` uint8 RGB.
    """
    img = draw_curves(image, landmarks, result.curves, scores)
    sc = None if scores is None else np.asarray(scores, dtype=np.float64).reshape(len(LEVELS))
    panel = _panel(img.shape[0], _panel_lines(result, sc, title), _scale(img.shape[0], check(landmarks))["font"])
    return np.concatenate([img, panel], axis=1)


def save_overlay(path: str | os.PathLike, image: np.ndarray, landmarks: np.ndarray,
                 result: CobbResult, scores: np.ndarray | None = None,
                 title: str | None = None) -> Path:
    """Write ``draw_overlay(...)`` to ``path`` atomically; the suffix picks the format (PNG)."""
    rgb = draw_overlay(image, landmarks, result, scores, title)
    with atomic_path(path) as tmp:
        if not cv2.imwrite(str(tmp), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)):
            raise OSError(f"{path}: could not write the overlay image")
    return Path(path)


# -- the batch CSV ----------------------------------------------------------------------------

ENDS = ("upper", "lower")
ANGLE_CSV_COLUMNS: tuple[str, ...] = (
    "filename", *ANGLE_COLUMNS, "shape", *(f"{c}_{e}" for c in ANGLE_COLUMNS for e in ENDS))
REGION_CSV_KEYS: tuple[str, ...] = tuple(
    r.replace("/", "_").replace(" ", "_") for r in REGIONS)  # proximal_thoracic, ...
BATCH_CSV_COLUMNS: tuple[str, ...] = (
    "input", "status", *(f"{k}_{v}" for k in REGION_CSV_KEYS for v in ("deg", "levels")),
    "major_region", *(f"challenge_angle_{i}_deg" for i in (1, 2, 3)), "warnings")


def _csv_text(columns: Sequence[str] | None, rows: Sequence[Sequence]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    if columns is not None:
        writer.writerow(columns)
    writer.writerows(rows)
    return buf.getvalue()


def batch_csv_row(record: dict) -> list:
    """One ``BATCH_CSV_COLUMNS`` row of a result record (:mod:`cobbnet.report.result`).

    Per region the angle and ``upper-lower`` levels (two curves of one region are joined
    with ``;``); a rejected input has empty angle cells.
    """
    cells: dict[str, list[str]] = {r: [] for r in REGIONS}
    levels: dict[str, list[str]] = {r: [] for r in REGIONS}
    major = ""
    for c in record["curves"]:
        cells[c["region"]].append(f"{c['cobb_angle']:.1f}")
        levels[c["region"]].append(f"{c['upper_end_vertebra']}-{c['lower_end_vertebra']}")
        if c["major"]:
            major = c["region"]
    challenge = record.get("challenge") or {}
    angles = [challenge.get(f"angle_{i}", {}).get("degrees") for i in (1, 2, 3)]
    return [record["input"]["path"] or "", record["status"],
            *(cell for r in REGIONS for cell in (";".join(cells[r]), ";".join(levels[r]))),
            major, *("" if a is None else f"{a:.1f}" for a in angles), "; ".join(record["warnings"])]


def write_batch_csv(path: str | os.PathLike, records: Sequence[dict]) -> Path:
    """``results.csv``: one ``batch_csv_row`` per result record, written atomically."""
    write_text(path, _csv_text(BATCH_CSV_COLUMNS, [batch_csv_row(r) for r in records]))
    return Path(path)


def _angle_row(name: str, angles: Sequence[float], levels: Sequence[tuple[str, str]],
               shape: str) -> list:
    return [name, *(round(float(a), 4) for a in angles), shape, *(lv for pair in levels for lv in pair)]


def angles_csv(names: Sequence[str], angles: np.ndarray, pairs: np.ndarray, is_s: np.ndarray) -> str:
    """CSV text (``ANGLE_CSV_COLUMNS``, the challenge's columns) of ``cobb_angles_batch``
    output for labelled spines: angles ``(N, 3)``, pairs ``(N, 3, 2)``, is_s ``(N,)``."""
    rows = [_angle_row(n, a, [(LEVELS[u], LEVELS[v]) for u, v in p], "S" if s else "C")
            for n, a, p, s in zip(names, angles, pairs, is_s, strict=True)]
    return _csv_text(ANGLE_CSV_COLUMNS, rows)
