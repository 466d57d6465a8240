"""A one-page PDF report of one radiograph (``cobbnet predict --report``).

The page holds the overlay (vertebrae and curves drawn on the radiograph), the curves table
(the table's colour swatches are the overlay's), the AASCE challenge angles, the model and its
version, the date, any warnings and the decision-support disclaimer. It is built from the
result record alone (:mod:`cobbnet.report.result`) plus the radiograph, with matplotlib's PDF
backend and no pyplot, so the report always says what the JSON says.
"""

from __future__ import annotations

import datetime as dt
import io
import os
import textwrap
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_pdf import FigureCanvasPdf
from matplotlib.figure import Figure

from cobbnet.io.outputs import write_bytes
from cobbnet.report.overlay import LOW_CONFIDENCE, REGION_COLOURS, draw_curves
from cobbnet.spine.cobb import Curve
from cobbnet.spine.landmarks import LEVELS

DISCLAIMER = (
    "Decision support only. cobbnet is a research tool, not a diagnostic device: the "
    "vertebrae and angles it finds can be wrong. A qualified clinician must check them on the "
    "radiograph before they inform any clinical decision.")
A4 = (8.27, 11.69)  # inches, portrait
INK, DIM = "0.1", "0.4"
PAGE_PIXELS = 1300  # rows of the radiograph on the page
_RC = {"pdf.fonttype": 3}  # glyph subsets: TrueType (42) subsetting costs about 1 s a font


def _rgb(colour: tuple[int, int, int]) -> tuple[float, float, float]:
    return tuple(v / 255 for v in colour)


def record_landmarks(result: dict) -> np.ndarray | None:
    """``(17, 4, 2)`` corners from a result record, or None when it has none (rejected)."""
    vertebrae = result.get("vertebrae") or []
    if len(vertebrae) != len(LEVELS):
        return None
    return np.array([v["corners"] for v in vertebrae], dtype=np.float64)


def record_curves(result: dict) -> list[Curve]:
    """The record's curves as :class:`cobbnet.spine.cobb.Curve`, to draw exactly what it says."""
    return [Curve(c["region"], float(c["cobb_angle"]), LEVELS.index(c["upper_end_vertebra"]),
                  LEVELS.index(c["lower_end_vertebra"]), LEVELS.index(c["apex"]),
                  f"image {c['convexity']['image']}") for c in result.get("curves", [])]


def _page_scale(image: np.ndarray, landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The radiograph and its ``(17, 4, 2)`` corners shrunk to ``PAGE_PIXELS`` rows at most:
    the page shows it about 6.5 inches tall, so more pixels only make the file bigger."""
    import cv2

    scale = min(1.0, PAGE_PIXELS / image.shape[0])
    if scale == 1.0:
        return image, landmarks
    size = (max(1, round(image.shape[1] * scale)), PAGE_PIXELS)
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA), landmarks * np.array(
        [size[0] / image.shape[1], size[1] / image.shape[0]])


def _model_line(result: dict) -> str:
    model = result.get("model") or {}
    if not model:
        return "Model: none recorded"
    sha = (model.get("sha256") or "")[:12]
    return f"Model: {model.get('name')} (sha256 {sha}…, {model.get('engine')})"


def _header(fig: Figure, result: dict, date: dt.date) -> None:
    path = result["input"]["path"] or "image array"
    fig.text(0.06, 0.965, "Cobb angle report", fontsize=16, weight="bold", color=INK, va="top")
    fig.text(0.94, 0.965, date.isoformat(), fontsize=10, color=INK, va="top", ha="right")
    lines = [
        f"Radiograph: {path} ({result['input']['width']} x {result['input']['height']} px)",
        _model_line(result),
        f"cobbnet {result['cobbnet_version']}, result schema {result['schema_version']}; "
        f"status: {result['status']}" + (f" ({result['reason']})" if result.get("reason") else ""),
    ]
    for k, line in enumerate(lines):
        fig.text(0.06, 0.935 - 0.018 * k, line, fontsize=8.5, color=DIM, va="top")


def _curves_table(fig: Figure, result: dict, top: float) -> float:
    """The curves table from ``top`` (figure fraction) down; returns where it ends."""
    ax = fig.add_axes((0.06, top - 0.16, 0.88, 0.16))
    ax.set_axis_off()
    ax.set(xlim=(0, 1), ylim=(0, 1))
    cols = [(0.035, "Region"), (0.30, "Cobb angle"), (0.42, "End vertebrae"), (0.59, "Apex"),
            (0.67, "Convex to"), (0.92, "Major")]
    for x, name in cols:
        ax.text(x, 0.93, name, fontsize=9, weight="bold", color=INK, va="top")
    ax.plot([0, 1], [0.8, 0.8], color="0.6", lw=0.6)
    curves = result.get("curves") or []
    if not curves:
        ax.text(0.035, 0.65, "No curve measured.", fontsize=9, color=DIM, va="top")
    for k, c in enumerate(curves):
        y = 0.65 - 0.22 * k
        ax.plot([0.0, 0.022], [y - 0.05] * 2, color=_rgb(REGION_COLOURS[c["region"]]), lw=4,
                solid_capstyle="butt")
        cells = [c["region"].capitalize(), f"{c['cobb_angle']:.1f}°",
                 f"{c['upper_end_vertebra']}–{c['lower_end_vertebra']}", c["apex"],
                 f"patient {c['convexity']['patient']} (image {c['convexity']['image']})",
                 "yes" if c["major"] else ""]
        for (x, _), text in zip(cols, cells, strict=True):
            ax.text(x, y, text, fontsize=9, color=INK, va="top",
                    weight="bold" if c["major"] and x < 0.4 else "normal")
    return top - 0.17


def _side_notes(fig: Figure, result: dict, top: float) -> None:
    """Challenge angles, confidence and warnings in the right-hand column."""
    x, y = 0.62, top
    def line(text: str, size: float = 8.5, colour: str = INK, bold: bool = False, gap: float = 0.018):
        nonlocal y
        fig.text(x, y, text, fontsize=size, color=colour, va="top", weight="bold" if bold else "normal")
        y -= gap

    challenge = result.get("challenge")
    if challenge:
        line("AASCE 2019 challenge angles", 9.5, bold=True, gap=0.02)
        for k in (1, 2, 3):
            a = challenge[f"angle_{k}"]
            deg = "undefined" if a["degrees"] is None else f"{a['degrees']:.1f}°"
            line(f"angle {k}: {deg} ({a['upper_end_vertebra']}–{a['lower_end_vertebra']})")
        line("angle 1 is the largest; these are the", 7.5, DIM, gap=0.014)
        line("challenge's values, not regions", 7.5, DIM, gap=0.03)
    vertebrae = result.get("vertebrae") or []
    scored = [v["score"] for v in vertebrae if v["score"] is not None]
    if scored:
        line("Vertebrae", 9.5, bold=True, gap=0.02)
        line(f"mean confidence {np.mean(scored):.2f}")
        line("outlines green and yellow in turn;", 7.5, DIM, gap=0.014)
        line(f"dashed red: confidence below {LOW_CONFIDENCE}", 7.5, DIM, gap=0.018)
        for flag in ("low_confidence", "interpolated"):
            levels = [v["level"] for v in vertebrae if flag in v["flags"]]
            if levels:
                line(f"{flag.replace('_', ' ')}: {', '.join(levels)}", colour="#b00000")
        y -= 0.012
    if result.get("warnings"):
        line("Warnings", 9.5, bold=True, gap=0.02)
        for w in result["warnings"]:
            for k, part in enumerate(textwrap.wrap(w, 48)):
                line(("" if k == 0 else "  ") + part, 8, "#b00000", gap=0.015)


def report_pdf(result: dict, image: np.ndarray | None, date: dt.date | None = None) -> bytes:
    """The one-page PDF of a result record (version 1) and its radiograph.

    Args:
        result: the record, as ``result_record`` builds it.
        image: the radiograph ``(H, W)`` uint8 (or ``(H, W, 3)``) the record's coordinates
            refer to, or None (the page then says there is no image).
        date: the date printed on the page; default today.

    Returns:
        The PDF file's bytes.
    """
    import matplotlib

    date = date or dt.date.today()
    with matplotlib.rc_context(_RC):
        fig = Figure(figsize=A4)
        FigureCanvasPdf(fig)
        _header(fig, result, date)
        below = _curves_table(fig, result, 0.87)
        ax = fig.add_axes((0.06, 0.1, 0.52, below - 0.11))
        ax.set_axis_off()
        lm = record_landmarks(result)
        if image is not None and lm is not None:
            scores = np.array([np.nan if v["score"] is None else v["score"] for v in result["vertebrae"]])
            image, lm = _page_scale(np.asarray(image), lm)
            overlay = draw_curves(image, lm, record_curves(result), None if np.isnan(scores).any() else scores)
            ax.imshow(overlay, interpolation="none")  # embedded as drawn, at about 200 dpi
            ax.set_anchor("N")
        else:
            why = result.get("reason") if result["status"] == "rejected" else "no image given"
            ax.text(0.5, 0.5, textwrap.fill(f"No overlay: {why}", 50), ha="center", va="center",
                    fontsize=10, color=DIM)
        _side_notes(fig, result, below - 0.01)
        fig.text(0.06, 0.075, textwrap.fill(DISCLAIMER, 118), fontsize=8, color=INK, va="top",
                 linespacing=1.4)
        fig.text(0.06, 0.03, f"cobbnet {result['cobbnet_version']}", fontsize=7, color=DIM)
        buf = io.BytesIO()
        fig.savefig(buf, format="pdf", metadata={
            "Title": f"Cobb angle report: {result['input']['path'] or 'image array'}",
            "Creator": f"cobbnet {result['cobbnet_version']}", "CreationDate": None})
    return buf.getvalue()


def write_report(result: dict, image: np.ndarray | None, path: str | os.PathLike) -> Path:
    """Write ``report_pdf(result, image)`` to ``path`` atomically (whole or not at all)."""
    data = report_pdf(result, image)
    write_bytes(path, data)
    return Path(path)
