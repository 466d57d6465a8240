"""Evaluation plots: predicted against true angles, Bland-Altman, landmark error by level.

Figures are made without pyplot (no display, no global state) and written atomically.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from cobbnet.io.outputs import atomic_path
from cobbnet.report.overlay import ANGLE_COLOURS
from cobbnet.spine.cobb import ANGLE_COLUMNS
from cobbnet.spine.landmarks import LEVELS
from cobbnet.spine.metrics import angle_mae, pearson_r


def _figure(ncols: int, width: float = 4.2, height: float = 4.2) -> tuple[Figure, np.ndarray]:
    """A pyplot-free figure, so plotting never touches a display or global state."""
    fig = Figure(figsize=(width * ncols, height), dpi=120, layout="constrained")
    FigureCanvasAgg(fig)
    return fig, np.atleast_1d(fig.subplots(1, ncols))


def _save(fig: Figure, path: str | os.PathLike) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", bbox_inches="tight", pad_inches=0.08)
    return Path(path)


def _mpl(col: str) -> tuple[float, float, float]:
    """The angle's overlay colour, darkened a little to read on white."""
    return tuple(0.8 * v / 255 for v in ANGLE_COLOURS[col])


def plot_pred_vs_true(path: str | os.PathLike, true: np.ndarray, pred: np.ndarray) -> Path:
    """Scatter of predicted against true angles ``(N, 3)``, one panel per column."""
    t, p = np.asarray(true, float), np.asarray(pred, float)
    r, mae = pearson_r(p, t), angle_mae(p, t)
    hi = 1.05 * max(1.0, float(np.nanmax(np.concatenate([t.ravel(), p.ravel()]))))
    fig, axes = _figure(len(ANGLE_COLUMNS), height=4.6)
    for k, (ax, col) in enumerate(zip(axes, ANGLE_COLUMNS, strict=True)):
        ax.plot([0, hi], [0, hi], ls="--", lw=1, color="0.5", label="identity")
        ax.scatter(t[:, k], p[:, k], s=14, alpha=0.7, color=_mpl(col))
        ax.set_box_aspect(1)  # square panels (equal limits), laid out without clipping titles
        ax.set(xlim=(0, hi), ylim=(0, hi), xlabel="true (°)",
               ylabel="predicted (°)", title=f"{col.upper()}: r = {r[k]:.3f}, MAE = {mae[k]:.2f}°")
        ax.legend(loc="upper left", fontsize="small")
    return _save(fig, path)


def plot_bland_altman(path: str | os.PathLike, true: np.ndarray, pred: np.ndarray) -> Path:
    """Difference against mean of predicted and true angles ``(N, 3)``, with 95% limits."""
    t, p = np.asarray(true, float), np.asarray(pred, float)
    angle_mae(p, t)  # validates the two shapes
    mean, diff = (t + p) / 2, p - t
    fig, axes = _figure(len(ANGLE_COLUMNS))
    for k, (ax, col) in enumerate(zip(axes, ANGLE_COLUMNS, strict=True)):
        md = float(diff[:, k].mean())
        sd = float(diff[:, k].std(ddof=1)) if len(diff) > 1 else 0.0
        ax.scatter(mean[:, k], diff[:, k], s=14, alpha=0.7, color=_mpl(col))
        # lines labelled at their right end, so no legend box hides points
        for y, label, style in ((md, f"mean {md:+.2f}", "-"), (md + 1.96 * sd, "+1.96 SD", "--"),
                                (md - 1.96 * sd, "−1.96 SD", "--")):
            ax.axhline(y, color="0.25", ls=style, lw=1)
            ax.text(1.0, y, f" {label}", transform=ax.get_yaxis_transform(), va="center",
                    ha="left", fontsize="small", color="0.25")
        ax.set(xlabel="mean of true and predicted (°)", ylabel="predicted − true (°)",
               title=f"{col.upper()}: bias {md:+.2f}°, limits {md - 1.96 * sd:+.1f} to {md + 1.96 * sd:+.1f}°")
    return _save(fig, path)


def plot_error_by_level(path: str | os.PathLike, errors: np.ndarray) -> Path:
    """Landmark error per vertebra level: boxes for ``(N, 17)``, bars for a ``(17,)`` mean."""
    e = np.asarray(errors, dtype=np.float64)
    if e.ndim not in (1, 2) or e.shape[-1] != len(LEVELS):
        raise ValueError(f"errors must have shape (17,) or (N, 17), got {e.shape}")
    fig, (ax,) = _figure(1, width=9.0)
    if e.ndim == 1:
        ax.bar(LEVELS, e, color="0.45")
    else:
        ax.boxplot([col[np.isfinite(col)] for col in e.T], tick_labels=list(LEVELS))
    ax.set(xlabel="vertebra level", ylabel="landmark error (px)", title="Landmark error by level")
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)


def plot_evaluation(out_dir: str | os.PathLike, true_angles: np.ndarray, pred_angles: np.ndarray,
                    level_errors: np.ndarray) -> list[Path]:
    """All evaluation plots into ``out_dir``; returns their paths."""
    out = Path(out_dir)
    return [plot_pred_vs_true(out / "pred_vs_true.png", true_angles, pred_angles),
            plot_bland_altman(out / "bland_altman.png", true_angles, pred_angles),
            plot_error_by_level(out / "error_by_level.png", level_errors)]
