"""What a clinician looks at: overlay PNGs, per-image records and the batch CSV.

Evaluation plots are in :mod:`cobbnet.report.plots`. Overlays keep the image's own resolution; line widths and fonts scale with its height. Text
goes in a panel appended to the right of the radiograph so that only short level and angle
tags sit beside the spine. All colours are RGB; ``save_overlay`` converts to OpenCV's BGR.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import cv2
import matplotlib
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from cobbnet.spine.cobb import ANGLE_COLUMNS, CobbResult, direction_vectors
from cobbnet.spine.landmarks import BL, BR, CORNERS, LEVELS, TL, TR, centers, check
from cobbnet.io.outputs import atomic_path, write_text

LOW_CONFIDENCE = 0.3  # vertebrae scored below this are drawn dashed in WARNING
ANGLE_COLOURS = {"pt": (255, 160, 0), "mt": (0, 200, 255), "tl": (255, 60, 220)}
OUTLINE_COLOURS = ((40, 230, 40), (210, 255, 60))  # alternate so touching vertebrae stay apart
WARNING = (255, 40, 40)
PANEL_BG, TEXT, DIM = (22, 22, 26), (240, 240, 240), (170, 170, 170)
Rgb = tuple[int, int, int]


@lru_cache(maxsize=64)
def _font(size: int, bold: bool = False) -> ImageFont.FreeTypeFont:
    """DejaVu Sans from matplotlib's data (it has the degree sign and the en dash)."""
    name = "DejaVuSans-Bold.ttf" if bold else "DejaVuSans.ttf"
    path = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / name
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


def _cobb_segments(lm: np.ndarray, result: CobbResult, s: dict) -> list:
    """(start, end, colours) of each end vertebra's direction line through its centre.

    A vertebra shared by several angles gets one line striped in all their colours. Lines
    stop just left of the vertebra (where its level tag sits) and run on to the brackets.
    """
    users: dict[int, list[Rgb]] = {}
    for col, pair in zip(ANGLE_COLUMNS, result.pairs, strict=True):
        for v in dict.fromkeys(int(i) for i in pair):  # a (v, v) pair draws one line
            users.setdefault(v, []).append(ANGLE_COLOURS[col])
    d, c, w = direction_vectors(lm), centers(lm), s["width"]
    segments = []
    for v, colours in users.items():
        u = d[v] / max(np.hypot(*d[v]), 1e-9)
        u = -u if u[0] < 0 else u  # long end towards the brackets even for a flipped vertebra
        segments.append((c[v] - 0.7 * w * u, c[v] + 1.6 * w * u, colours))
    return segments


def _layout(lm: np.ndarray, result: CobbResult, height: int, s: dict) -> dict:
    """Where the level tags (left of the spine), brackets and angle tags (right of it) go.

    ``lo``/``hi`` are the x extent everything needs, so the caller can widen the canvas.
    """
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    level_font, font = _font(s["level_font"], bold=True), _font(s["font"], bold=True)
    c, gap = centers(lm), 0.3 * s["width"]
    segments = _cobb_segments(lm, result, s)
    level_x = lm[..., 0].min(axis=1) - gap  # right end of each level tag
    level_w = np.array([probe.textlength(name, font=level_font) for name in LEVELS])
    right = max([lm[..., 0].max()] + [max(a[0], b[0]) for a, b, _ in segments])
    step = 3 * s["cobb"]
    bracket_x = right + gap + step * np.arange(len(ANGLE_COLUMNS))
    tag_x = bracket_x[-1] + gap
    tags = [f"{col.upper()} {angle:.1f}°" for col, angle in zip(ANGLE_COLUMNS, result.angles, strict=True)]
    mids = np.array([(c[a, 1] + c[b, 1]) / 2 for a, b in result.pairs])
    lf, f = s["level_font"], s["font"]
    return {
        "segments": segments, "level_x": level_x, "level_font": level_font, "font": font,
        "level_y": _spread(c[:, 1], lf * 1.05, lf / 2, height - lf / 2),
        "bracket_x": bracket_x, "step": step, "tag_x": tag_x, "tags": tags, "mids": mids,
        "tag_y": _spread(mids, f * 1.3, f, height - f),
        "lo": float((level_x - level_w).min() - 2 * s["outline"]),
        "hi": float(tag_x + max(probe.textlength(t, font=font) for t in tags) + f / 2),
    }


def _draw_cobb_lines(img: np.ndarray, layout: dict, s: dict) -> None:
    for a, b, colours in layout["segments"]:
        _pattern_line(img, a, b, colours, s["cobb"], s["dash"])


def _annotate(img: np.ndarray, lm: np.ndarray, result: CobbResult, low: np.ndarray,
              layout: dict, s: dict) -> np.ndarray:
    """Level tags, a bracket per angle over its vertebrae, and the angle tags."""
    c = centers(lm)
    pil = Image.fromarray(img)
    draw = ImageDraw.Draw(pil)
    for i, (x, y) in enumerate(zip(layout["level_x"], layout["level_y"], strict=True)):
        _text(draw, (x, y), LEVELS[i], layout["level_font"], WARNING if low[i] else TEXT, "rm")
    step, tag_x = layout["step"], layout["tag_x"]
    for k, (col, (a, b)) in enumerate(zip(ANGLE_COLUMNS, result.pairs, strict=True)):
        colour, bx = ANGLE_COLOURS[col], layout["bracket_x"][k]
        ya, yb, ym, yt = c[a, 1], c[b, 1], layout["mids"][k], layout["tag_y"][k]
        draw.line([(bx - step, ya), (bx, ya), (bx, yb), (bx - step, yb)], fill=colour,
                  width=s["cobb"], joint="curve")
        draw.line([(bx, ym), (tag_x, yt)], fill=colour, width=max(1, s["cobb"] // 2))
        _text(draw, (tag_x, yt), layout["tags"][k], layout["font"], colour, "lm")
    return np.asarray(pil)


def _panel_lines(result: CobbResult, scores: np.ndarray | None, title: str | None) -> list:
    """(text, colour, bold, swatch) rows of the side panel; swatch is a line pattern or None."""
    rows: list = [(title, TEXT, True, None)] if title else []
    rows.append(("Cobb angles (challenge order)", TEXT, True, None))
    for col, (up, lo), angle in zip(ANGLE_COLUMNS, result.pair_levels, result.angles, strict=True):
        rows.append((f"{col.upper()} {angle:.1f}° ({up}–{lo})", ANGLE_COLOURS[col], True, None))
    rows.append((f"{result.shape}-shaped spine", TEXT, False, None))
    rows.append(("", TEXT, False, None))
    rows.append(("Curves by region", TEXT, True, None))
    for curve in result.curves or []:
        up, lo, apex = curve.levels
        rows.append((f"{curve.region.capitalize()} {curve.angle:.1f}°", TEXT, False, None))
        rows.append((f"   {up}–{lo}, apex {apex}, convex to {curve.convex_to}", DIM, False, None))
    if not result.curves:
        rows.append(("none measured", DIM, False, None))
    rows.append(("", TEXT, False, None))
    if scores is not None:
        rows.append((f"Mean confidence {float(np.mean(scores)):.2f}", TEXT, False, None))
        low = [LEVELS[i] for i in np.flatnonzero(scores < LOW_CONFIDENCE)]
        if low:
            rows.append((f"Low confidence: {', '.join(low)}", WARNING, False, None))
    rows.append(("vertebra outline", TEXT, False, [OUTLINE_COLOURS[0]]))
    rows.append((f"confidence < {LOW_CONFIDENCE}", TEXT, False, [WARNING, None]))
    rows.append(("end-vertebra direction", TEXT, False, list(ANGLE_COLOURS.values())))
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


def draw_overlay(image: np.ndarray, landmarks: np.ndarray, result: CobbResult,
                 scores: np.ndarray | None = None, title: str | None = None) -> np.ndarray:
    """Vertebrae, end-vertebra lines, angles and a text panel over a radiograph.

    Args:
        image: ``(H, W)`` uint8 grayscale (or ``(H, W, 3)`` RGB).
        landmarks: ``(17, 4, 2)`` corners in pixels of ``image``.
        result: the Cobb angles of ``landmarks``.
        scores: ``(17,)`` per-vertebra confidence; below ``LOW_CONFIDENCE`` is drawn dashed red.
        title: first line of the panel, e.g. the file name.

    Returns:
        ``(H, W', 3)`` uint8 RGB: the image, widened where tags need room, then the panel.
    """
    lm = check(landmarks)
    img = np.asarray(image, dtype=np.uint8)
    img = cv2.cvtColor(img, cv2.COLOR_GRAY2RGB) if img.ndim == 2 else img[..., :3].copy()
    sc = None if scores is None else np.asarray(scores, dtype=np.float64).reshape(len(LEVELS))
    low = np.zeros(len(LEVELS), bool) if sc is None else sc < LOW_CONFIDENCE
    H, W = img.shape[:2]
    s = _scale(H, lm)
    layout = _layout(lm, result, H, s)
    # widen the canvas where tags would fall outside the image, instead of covering anatomy
    pad_l, pad_r = int(np.ceil(max(0.0, -layout["lo"]))), int(np.ceil(max(0.0, layout["hi"] - W)))
    if pad_l or pad_r:
        img = np.concatenate([np.full((H, pad_l, 3), PANEL_BG, np.uint8), img,
                              np.full((H, pad_r, 3), PANEL_BG, np.uint8)], axis=1)
        lm = lm + np.array([pad_l, 0.0])
        layout = _layout(lm, result, H, s)
    _draw_spine(img, lm, low, s)
    _draw_cobb_lines(img, layout, s)
    img = _annotate(img, lm, result, low, layout, s)
    panel = _panel(H, _panel_lines(result, sc, title), s["font"])
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


# -- per-image records and CSV ---------------------------------------------------------------

CORNER_KEYS: tuple[str, ...] = tuple(c.replace("-", "_") for c in CORNERS)  # top_left, ...
ENDS = ("upper", "lower")
ANGLE_CSV_COLUMNS: tuple[str, ...] = (
    "filename", *ANGLE_COLUMNS, "shape", *(f"{c}_{e}" for c in ANGLE_COLUMNS for e in ENDS))
BATCH_CSV_COLUMNS: tuple[str, ...] = (*ANGLE_CSV_COLUMNS, "mean_confidence")


def result_record(name: str, landmarks: np.ndarray, result: CobbResult,
                  scores: np.ndarray | None, image_size: tuple[int, int]) -> dict:
    """One image's JSON content: size, angles with their vertebrae, C/S, curves, landmarks.

    ``landmarks`` is ``(17, 4, 2)`` pixels, ``scores`` ``(17,)`` or None, ``image_size``
    (width, height). Landmarks are nested by level and corner: ``{"T1": {"top_left": [x, y]}}``.
    """
    lm = check(landmarks, name)
    width, height = image_size
    record = {"name": name, "width": int(width), "height": int(height), **result.as_dict()}
    record["landmarks"] = {
        level: {key: [round(float(x), 3), round(float(y), 3)] for key, (x, y) in zip(CORNER_KEYS, quad, strict=True)}
        for level, quad in zip(LEVELS, lm, strict=True)}
    sc = None if scores is None else np.asarray(scores, dtype=np.float64).reshape(len(LEVELS))
    record["confidence"] = None if sc is None else {
        level: round(float(v), 4) for level, v in zip(LEVELS, sc, strict=True)}
    record["mean_confidence"] = None if sc is None else round(float(sc.mean()), 4)
    return record


def _angle_row(name: str, angles: Sequence[float], levels: Sequence[tuple[str, str]],
               shape: str) -> list:
    return [name, *(round(float(a), 4) for a in angles), shape, *(lv for pair in levels for lv in pair)]


def _csv_text(columns: Sequence[str], rows: Sequence[Sequence]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows(rows)
    return buf.getvalue()


def write_batch_csv(path: str | os.PathLike, records: Sequence[dict]) -> Path:
    """One row per ``result_record``, columns ``BATCH_CSV_COLUMNS``, written atomically."""
    rows = []
    for r in records:
        levels = [(r["angle_vertebrae"][c]["upper"], r["angle_vertebrae"][c]["lower"]) for c in ANGLE_COLUMNS]
        mean = r.get("mean_confidence")
        rows.append(_angle_row(r["name"], [r["angles"][c] for c in ANGLE_COLUMNS], levels, r["shape"])
                    + ["" if mean is None else mean])
    write_text(path, _csv_text(BATCH_CSV_COLUMNS, rows))
    return Path(path)


def angles_csv(names: Sequence[str], angles: np.ndarray, pairs: np.ndarray, is_s: np.ndarray) -> str:
    """CSV text (``ANGLE_CSV_COLUMNS``) of ``cobb_angles_batch`` output: angles ``(N, 3)``,
    pairs ``(N, 3, 2)``, is_s ``(N,)``."""
    rows = [_angle_row(n, a, [(LEVELS[u], LEVELS[v]) for u, v in p], "S" if s else "C")
            for n, a, p, s in zip(names, angles, pairs, is_s, strict=True)]
    return _csv_text(ANGLE_CSV_COLUMNS, rows)
