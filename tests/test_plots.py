"""Evaluation plots: valid PNGs, every panel, bad shapes refused with nothing written."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from cobbnet.report.plots import plot_bland_altman, plot_error_by_level, plot_evaluation

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _angle_sets(n: int = 20, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    true = rng.uniform(0, 60, size=(n, 3))
    return true, true + rng.normal(0, 3, size=(n, 3))


def test_plot_evaluation_writes_three_valid_pngs(tmp_path):
    true, pred = _angle_sets()
    errors = np.random.default_rng(1).gamma(2.0, 3.0, size=(20, 17))
    paths = plot_evaluation(tmp_path / "eval", true, pred, errors)
    assert len(paths) == 3 and len({p.name for p in paths}) == 3
    for p in paths:
        assert p.read_bytes()[:8] == PNG_MAGIC
        img = cv2.imread(str(p), cv2.IMREAD_COLOR)
        assert img is not None and img.shape[0] > 200 and img.std() > 5
    assert sorted(q.name for q in (tmp_path / "eval").iterdir()) == sorted(p.name for p in paths)


def test_error_by_level_takes_per_level_means_and_rejects_bad_shapes(tmp_path):
    path = plot_error_by_level(tmp_path / "lvl.png", np.linspace(2, 9, 17))
    assert path.read_bytes()[:8] == PNG_MAGIC
    with pytest.raises(ValueError):
        plot_error_by_level(tmp_path / "bad.png", np.ones((4, 16)))
    assert not (tmp_path / "bad.png").exists()


def test_bland_altman_handles_a_single_image(tmp_path):
    true, pred = _angle_sets(n=1)
    assert plot_bland_altman(tmp_path / "ba.png", true, pred).read_bytes()[:8] == PNG_MAGIC
