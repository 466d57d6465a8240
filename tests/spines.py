"""Spines built from known vertebra tilts, and the AASCE data location, for several test modules."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

# The licensed data lives beside the checkout, never inside it: resolve from the repository.
AASCE = Path(__file__).resolve().parents[2] / "shared" / "boostnet_labeldata"
needs_aasce = pytest.mark.skipif(not AASCE.exists(), reason="AASCE boostnet_labeldata not present")


def tilted_spine(tilts_deg, x0=300.0, y0=100.0, spacing=40.0, width=50.0, height=30.0) -> np.ndarray:
    """``(17, 4, 2)`` rectangles of ``width x height`` tilted by ``tilts_deg`` (image y down),
    their centres stepping ``spacing`` along the spine, each step perpendicular to the mean
    tilt of the two vertebrae it joins."""
    t = np.radians(np.asarray(tilts_deg, dtype=np.float64))
    u = np.stack([np.cos(t), np.sin(t)], -1)  # left to right across the vertebra
    n = np.stack([-np.sin(t), np.cos(t)], -1)  # top to bottom
    mid = (t[1:] + t[:-1]) / 2
    steps = spacing * np.stack([-np.sin(mid), np.cos(mid)], -1)
    c = np.array([x0, y0]) + np.concatenate([np.zeros((1, 2)), np.cumsum(steps, 0)])
    hw, hh = width / 2, height / 2
    return np.stack([c - hw * u - hh * n, c + hw * u - hh * n, c - hw * u + hh * n,
                     c + hw * u + hh * n], axis=1)
