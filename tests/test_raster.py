"""FWT: the hard fill against an independent point-in-polygon test, the soft fill's limit and gradient."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from matplotlib.path import Path

from cobbnet.io import synthetic
from cobbnet.nn import targets
from cobbnet.nn.heads import STRIDE
from cobbnet.nn.raster import fill_quads
from cobbnet.spine.landmarks import BL, BR, TL, TR

MAP = (256, 128)  # the output map of the default 1024 x 512 input


def _spine_map_units(seed: int) -> np.ndarray:
    """A synthetic spine ``(17, 4, 2)`` in map units of a 1024 x 512 input."""
    lm = synthetic.random_spine(np.random.default_rng(seed), width=512, height=1024)
    return lm / STRIDE


def _reference_fill(quads: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Cells whose centre (ix + 0.5, iy + 0.5) lies in any quad, by matplotlib's test."""
    h, w = size
    yy, xx = np.mgrid[0:h, 0:w]
    centres = np.stack([xx.ravel() + 0.5, yy.ravel() + 0.5], axis=1)
    inside = np.zeros(h * w, dtype=bool)
    for q in quads:
        inside |= Path(q[[TL, TR, BR, BL]]).contains_points(centres)
    return inside.reshape(h, w)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_hard_fill_matches_point_in_polygon(seed: int) -> None:
    quads = _spine_map_units(seed)
    hard = fill_quads(torch.from_numpy(quads)[None], MAP, mode="hard")
    assert hard.shape == (1, 1, *MAP)
    expected = _reference_fill(quads, MAP)
    # a centre lying exactly on an edge may go either way; vertebrae have no such cells here
    assert (hard[0, 0].numpy() > 0.5).tolist() == expected.tolist()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_soft_fill_tends_to_hard_as_tau_shrinks(seed: int) -> None:
    corners = torch.from_numpy(_spine_map_units(seed))[None]
    hard = fill_quads(corners, MAP, mode="hard")[0, 0].numpy() > 0.5
    assert _iou(fill_quads(corners, MAP, "soft", tau=0.02)[0, 0].numpy() > 0.5, hard) > 0.98
    err = [
        np.abs(fill_quads(corners, MAP, "soft", tau)[0, 0].numpy() - hard).mean()
        for tau in (1.0, 0.1, 0.01)
    ]
    assert err[0] > err[1] > err[2]


def test_soft_fill_is_a_probability_and_ignores_corner_orientation() -> None:
    quads = torch.from_numpy(_spine_map_units(0))[None]
    soft = fill_quads(quads, MAP)
    assert soft.min() >= 0 and soft.max() <= 1
    mirrored = quads[:, :, [TR, TL, BR, BL], :]  # same quads walked the other way round
    torch.testing.assert_close(fill_quads(mirrored, MAP), soft)


def test_invalid_vertebrae_are_left_out() -> None:
    quads = torch.from_numpy(_spine_map_units(1))[None]
    valid = torch.ones(1, 17)
    valid[0, 5] = 0
    for mode in ("soft", "hard"):
        full = fill_quads(quads, MAP, mode)
        part = fill_quads(quads, MAP, mode, valid=valid)
        alone = fill_quads(quads[:, 5:6], MAP, mode)
        assert part.sum() < full.sum()
        # what the dropped vertebra alone covers is (almost) all that went missing
        assert float((full - part).sum()) == pytest.approx(float(alone.sum()), rel=0.05)


def test_degenerate_quad_fills_nothing() -> None:
    point = torch.full((1, 1, 4, 2), 5.3, dtype=torch.float64)
    assert fill_quads(point, (12, 10)).abs().max() == 0
    assert fill_quads(point, (12, 10), "hard").abs().max() == 0


def test_hard_fill_is_the_ground_truth_mask() -> None:
    quads = _spine_map_units(2)
    hard = fill_quads(torch.from_numpy(quads)[None], MAP, mode="hard")[0, 0].numpy()
    np.testing.assert_array_equal(hard, targets.fill_mask(quads, MAP))


def test_hard_fill_carries_no_gradient() -> None:
    corners = torch.from_numpy(_spine_map_units(0))[None].requires_grad_()
    assert not fill_quads(corners, MAP, mode="hard").requires_grad
    fill_quads(corners, MAP, mode="soft").sum().backward()
    assert corners.grad is not None and corners.grad.abs().sum() > 0


def test_soft_fill_gradient_matches_finite_differences() -> None:
    # two small tilted vertebrae on a 9 x 8 map, float64 for gradcheck
    quads = torch.tensor(
        [
            [[1.2, 1.1], [5.9, 1.7], [1.0, 3.8], [5.6, 4.3]],
            [[2.1, 5.0], [6.8, 5.4], [1.7, 7.9], [6.5, 8.2]],
        ],
        dtype=torch.float64,
    )[None].requires_grad_()
    assert torch.autograd.gradcheck(lambda c: fill_quads(c, (9, 8), "soft", tau=0.7), (quads,))


def test_moving_a_corner_outwards_grows_the_soft_fill() -> None:
    quads = torch.tensor([[[[2.0, 2.0], [6.0, 2.0], [2.0, 6.0], [6.0, 6.0]]]], requires_grad=True)
    fill_quads(quads, (8, 8), "soft").sum().backward()
    # d(area)/d(corner) points away from the quad: BR's x and y, TL's -x and -y
    assert quads.grad[0, 0, BR, 0] > 0 and quads.grad[0, 0, BR, 1] > 0
    assert quads.grad[0, 0, TL, 0] < 0 and quads.grad[0, 0, TL, 1] < 0


def test_bad_arguments_are_refused() -> None:
    quads = torch.zeros(1, 17, 4, 2)
    with pytest.raises(ValueError, match="mode"):
        fill_quads(quads, MAP, mode="fuzzy")
    with pytest.raises(ValueError, match="tau"):
        fill_quads(quads, MAP, tau=0.0)
    with pytest.raises(ValueError, match="shape"):
        fill_quads(torch.zeros(1, 17, 8), MAP)
