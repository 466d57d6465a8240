"""Encoding of landmarks into head targets: radius rule, Gaussians, polygon fill, encode."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from matplotlib.path import Path as MplPath

from cobbnet.nn.heads import HEADS, STRIDE
from cobbnet.nn.targets import (
    MIN_RADIUS,
    collate,
    draw_gaussian,
    encode,
    encode_batch,
    fill_mask,
    gaussian_radius,
    map_size,
)

SMALL = (256, 128)  # input (H, W) for fast tests: maps of 64 x 32


def ladder(input_size=SMALL, x0=0.35, width=0.3, top=0.06, step=0.05, height=0.035):
    """A straight spine: 17 axis-aligned boxes, fractions of the input size -> (17, 4, 2)."""
    H, W = input_size
    lm = np.zeros((17, 4, 2))
    for i in range(17):
        x1, x2 = x0 * W, (x0 + width) * W
        y1 = (top + i * step) * H
        y2 = y1 + height * H
        lm[i] = [[x1, y1], [x2, y1], [x1, y2], [x2, y2]]
    return lm


def box_iou(a, b):
    """IoU of boxes (x1, y1, x2, y2)."""
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    area = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1])
    return inter / (area - inter)


def worst_iou(h, w, r, steps=(-1.0, -0.5, 0.0, 0.5, 1.0)):
    """Smallest IoU with the (w x h) box over corner moves of up to r along each axis."""
    gt = (0.0, 0.0, w, h)
    moves = itertools.product(steps, repeat=4)
    return min(box_iou(gt, (r * a, r * b, w + r * c, h + r * d)) for a, b, c, d in moves)


# ---------------------------------------------------------------- gaussian_radius


BOXES = [(12.5, 26.0), (7.5, 15.0), (10.0, 10.0), (3.0, 20.0), (40.0, 5.0), (1.0, 1.0), (0.7, 30.0)]


@pytest.mark.parametrize("min_overlap", [0.3, 0.5, 0.7, 0.9])
@pytest.mark.parametrize(("height", "width"), BOXES)
def test_radius_keeps_overlap_in_every_corner_configuration(height, width, min_overlap):
    r = gaussian_radius(height, width, min_overlap)
    assert r > 0
    # shifted by (r, r), shrunk by r at each corner, grown by r at each corner
    configs = [
        (r, r, width + r, height + r),
        (r, r, width - r, height - r),
        (-r, -r, width + r, height + r),
    ]
    ious = [box_iou((0.0, 0.0, width, height), box) for box in configs]
    assert min(ious) >= min_overlap - 1e-9
    # and over a grid of all corner moves within r, mixed directions included
    assert worst_iou(height, width, r) >= min_overlap - 1e-9


@pytest.mark.parametrize(("height", "width"), BOXES)
def test_radius_is_the_largest_such_radius(height, width):
    r = gaussian_radius(height, width, 0.7)
    assert worst_iou(height, width, r) == pytest.approx(0.7, abs=1e-9)
    assert worst_iou(height, width, r * 1.001) < 0.7


def test_radius_grows_with_the_box_and_is_zero_for_an_empty_box():
    radii = [gaussian_radius(s, 2 * s) for s in (1.0, 2.0, 5.0, 10.0, 50.0)]
    assert all(a < b for a, b in zip(radii, radii[1:], strict=False))
    assert gaussian_radius(0.0, 10.0) == 0.0
    assert gaussian_radius(5.0, 10.0, min_overlap=1.0) == 0.0


@pytest.mark.parametrize("bad", [0.0, -0.1, 1.5])
def test_radius_rejects_an_overlap_outside_0_1(bad):
    with pytest.raises(ValueError, match="min_overlap"):
        gaussian_radius(5.0, 5.0, bad)


# ---------------------------------------------------------------- draw_gaussian


@pytest.mark.parametrize("radius", [0, 1, 2, 5])
def test_gaussian_peaks_at_exactly_one_and_falls_off_with_its_sigma(radius):
    hm = np.zeros((20, 20), dtype=np.float32)
    draw_gaussian(hm, (9, 11), radius)
    assert hm[11, 9] == 1.0
    assert np.count_nonzero(hm == 1.0) == 1
    assert np.count_nonzero(hm) == (2 * radius + 1) ** 2
    if radius > 0:
        sigma = (2 * radius + 1) / 6
        assert hm[11, 10] == pytest.approx(np.exp(-1 / (2 * sigma**2)), rel=1e-6)
        assert hm[12, 10] == pytest.approx(np.exp(-2 / (2 * sigma**2)), rel=1e-6)
    patch = hm[11 - radius : 12 + radius, 9 - radius : 10 + radius]
    np.testing.assert_array_equal(patch, patch[::-1])  # symmetric both ways
    np.testing.assert_array_equal(patch, patch.T)


def test_overlapping_gaussians_keep_the_elementwise_maximum():
    a, b, both = (np.zeros((30, 30), dtype=np.float32) for _ in range(3))
    draw_gaussian(a, (10, 12), 4)
    draw_gaussian(b, (14, 13), 3)
    draw_gaussian(both, (10, 12), 4)
    draw_gaussian(both, (14, 13), 3)
    np.testing.assert_array_equal(both, np.maximum(a, b))


@pytest.mark.parametrize("center", [(0, 0), (29, 3), (2, 19), (31, 25), (-2, 5)])
def test_gaussian_near_the_border_is_the_crop_of_an_uncut_one(center):
    pad = 6
    hm = np.zeros((20, 30), dtype=np.float32)
    big = np.zeros((20 + 2 * pad, 30 + 2 * pad), dtype=np.float32)
    draw_gaussian(hm, center, 4)
    draw_gaussian(big, (center[0] + pad, center[1] + pad), 4)
    np.testing.assert_array_equal(hm, big[pad:-pad, pad:-pad])


# ---------------------------------------------------------------- fill_mask


def centres_inside(quads, shape):
    """Reference fill: cells whose centre matplotlib finds inside any TL,TR,BR,BL polygon."""
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w]
    centres = np.stack([xx.ravel() + 0.5, yy.ravel() + 0.5], axis=1)
    out = np.zeros(h * w, dtype=bool)
    for q in quads:
        out |= MplPath(q[[0, 1, 3, 2]]).contains_points(centres)
    return out.reshape(h, w)


def test_fill_mask_fills_cells_whose_centre_is_inside():
    lm = np.zeros((17, 4, 2))
    lm[:] = [[2.0, 2.0], [5.0, 2.0], [2.0, 5.0], [5.0, 5.0]]  # covers centres 2.5, 3.5, 4.5
    expected = np.zeros((8, 8), dtype=np.float32)
    expected[2:5, 2:5] = 1.0
    np.testing.assert_array_equal(fill_mask(lm, (8, 8)), expected)
    lm[:] = [[2.6, 2.6], [5.4, 2.6], [2.6, 5.4], [5.4, 5.4]]  # now only 3.5 and 4.5
    expected[:] = 0.0
    expected[3:5, 3:5] = 1.0
    np.testing.assert_array_equal(fill_mask(lm, (8, 8)), expected)


def test_fill_mask_matches_a_point_in_polygon_reference_on_random_quadrilaterals():
    rng = np.random.default_rng(3)
    for _ in range(40):
        centre = rng.uniform(0, 24, size=(17, 1, 2))
        quads = centre + rng.uniform(-5, 5, size=(17, 4, 2))
        # corners by angle round the centre, then laid out as TL, TR, BL, BR of a convex outline
        ang = np.arctan2(*(quads - quads.mean(1, keepdims=True)).transpose(2, 0, 1)[::-1])
        ring = np.take_along_axis(quads, np.argsort(ang, axis=1)[..., None], axis=1)
        lm = ring[:, [0, 1, 3, 2]]
        np.testing.assert_array_equal(fill_mask(lm, (24, 20)) > 0, centres_inside(lm, (24, 20)))


def test_fill_mask_leaves_no_gap_between_vertebrae_sharing_an_edge():
    lm = np.zeros((17, 4, 2))
    lm[:] = [[0.0, 2.0], [3.0, 2.0], [0.0, 4.5], [3.0, 4.5]]  # bottom edge on centre line 4.5
    lm[1] = [[0.0, 4.5], [3.0, 4.5], [0.0, 7.0], [3.0, 7.0]]
    mask = fill_mask(lm, (9, 4))
    np.testing.assert_array_equal(mask[2:7, :3], 1.0)
    assert mask.sum() == 15


def test_fill_mask_of_quadrilaterals_outside_the_map_is_empty():
    lm = np.zeros((17, 4, 2))
    lm[:] = [[-9.0, -9.0], [-5.0, -9.0], [-9.0, -5.0], [-5.0, -5.0]]
    assert fill_mask(lm, (8, 8)).sum() == 0


# ---------------------------------------------------------------- encode


def test_encode_shapes_and_dtypes_follow_the_heads_spec():
    t = encode(ladder(SMALL), SMALL)
    h, w = map_size(SMALL)
    assert (h, w) == (SMALL[0] // STRIDE, SMALL[1] // STRIDE)
    assert t["hm"].shape == (HEADS["hm"], h, w) and t["hm"].dtype == np.float32
    assert t["mask"].shape == (HEADS["mask"], h, w) and t["mask"].dtype == np.float32
    assert t["reg"].shape == (17, HEADS["reg"]) and t["reg"].dtype == np.float32
    assert t["cnr"].shape == (17, HEADS["cnr"]) and t["cnr"].dtype == np.float32
    assert t["ind"].shape == (17,) and t["ind"].dtype == np.int64
    assert t["valid"].shape == (17,) and t["valid"].dtype == np.float32
    assert map_size() == (256, 128)


def test_encode_puts_a_unit_peak_at_each_centre_cell_and_offsets_rebuild_the_corners():
    lm = ladder(SMALL) + np.random.default_rng(0).uniform(-1.5, 1.5, size=(17, 4, 2))
    t = encode(lm, SMALL)
    h, w = map_size(SMALL)
    c = lm.mean(axis=1)  # (17, 2) input pixels
    ix, iy = t["ind"] % w, t["ind"] // w
    np.testing.assert_array_equal(ix, np.floor(c[:, 0] / STRIDE))
    np.testing.assert_array_equal(iy, np.floor(c[:, 1] / STRIDE))
    assert np.all(t["valid"] == 1)
    assert np.all(t["hm"][0, iy, ix] == 1.0)
    assert np.count_nonzero(t["hm"] == 1.0) == 17
    assert np.all((t["reg"] >= 0) & (t["reg"] < 1))
    centre = (np.stack([ix, iy], axis=1) + t["reg"]) * STRIDE
    np.testing.assert_allclose(centre, c, atol=1e-4)
    corners = centre[:, None, :] + t["cnr"].reshape(17, 4, 2) * STRIDE
    np.testing.assert_allclose(corners, lm, atol=1e-4)


def test_encode_mask_is_the_filled_quadrilaterals_in_map_units():
    lm = ladder(SMALL)
    t = encode(lm, SMALL)
    np.testing.assert_array_equal(t["mask"][0], fill_mask(lm / STRIDE, map_size(SMALL)))
    np.testing.assert_array_equal(t["mask"][0] > 0, centres_inside(lm / STRIDE, map_size(SMALL)))
    inside = t["mask"][0, t["ind"] // 32, t["ind"] % 32]
    assert np.all(inside == 1.0)  # every centre lies in its own vertebra


def test_a_vertebra_centred_outside_the_map_is_invalid_and_has_no_peak():
    lm = ladder(SMALL)
    lm[0, :, 1] -= 40.0  # T1 well above the image
    lm[16, :, 0] += 200.0  # L5 right of it
    t = encode(lm, SMALL)
    np.testing.assert_array_equal(t["valid"], [0] + [1] * 15 + [0])
    assert t["ind"][0] == 0 and t["ind"][16] == 0
    assert not t["reg"][[0, 16]].any() and not t["cnr"][[0, 16]].any()
    assert np.count_nonzero(t["hm"] == 1.0) == 15


def test_peak_width_follows_the_radius_of_the_vertebra_box():
    lm = ladder((1024, 512), width=0.5, step=0.05, height=0.04)  # boxes 64 x 10.24 map units
    t = encode(lm, (1024, 512))
    r = max(MIN_RADIUS, int(gaussian_radius(0.04 * 1024 / STRIDE, 0.5 * 512 / STRIDE)))
    assert r >= 1
    iy, ix = t["ind"][8] // 128, t["ind"][8] % 128
    row = t["hm"][0, iy, ix - r - 2 : ix + r + 3]
    assert np.count_nonzero(row) == 2 * r + 1


def test_small_vertebrae_get_the_minimum_radius():
    lm = ladder((1024, 512), width=0.05, step=0.05, height=0.01)  # tiny boxes: corrected radius 0
    assert int(gaussian_radius(0.01 * 1024 / STRIDE, 0.05 * 512 / STRIDE)) == 0
    t = encode(lm, (1024, 512))
    iy, ix = t["ind"][8] // 128, t["ind"][8] % 128
    row = t["hm"][0, iy, ix - MIN_RADIUS - 2 : ix + MIN_RADIUS + 3]
    assert np.count_nonzero(row) == 2 * MIN_RADIUS + 1


def test_encode_batch_stacks_per_spine_targets():
    spines = [ladder(SMALL), ladder(SMALL, x0=0.2)]
    batch = encode_batch(spines, SMALL)
    assert batch["hm"].shape == (2, 1, 64, 32)
    assert batch["cnr"].shape == (2, 17, 8)
    assert batch["ind"].dtype == np.int64
    single = encode(spines[1], SMALL)
    for key, value in collate([encode(spines[0], SMALL), single]).items():
        np.testing.assert_array_equal(batch[key][1], single[key], err_msg=key)
        np.testing.assert_array_equal(batch[key], value, err_msg=key)


def test_encode_rejects_a_wrong_landmark_shape():
    from cobbnet.errors import InputError

    with pytest.raises(InputError):
        encode(np.zeros((16, 4, 2)), SMALL)
