"""Stage 2's vertebra patches: cutting and mapping back are exact inverses (no torch)."""

from __future__ import annotations

import numpy as np

from cobbnet.spine import patches


def test_to_patch_inverts_to_image() -> None:
    rng = np.random.default_rng(0)
    frame = np.column_stack([rng.uniform(100, 400, 5), rng.uniform(100, 900, 5), rng.uniform(-0.6, 0.6, 5),
                             rng.uniform(40, 200, 5)])
    pts = rng.uniform(0, 64, (5, 4, 2))
    np.testing.assert_allclose(patches.to_patch(patches.to_image(pts, frame), frame), pts, atol=1e-9)


def test_a_bright_dot_lands_where_the_mapping_says() -> None:
    image = np.zeros((600, 400), np.uint8)
    image[300:302, 200:202] = 255  # a dot centred at (201, 301)
    for angle, width in ((0.0, 30.0), (0.4, 60.0), (-0.3, 150.0)):  # scale 1 to 5 px per patch px
        frame = np.array([[190.0, 290.0, angle, width]])
        patch = patches.cut(image, frame)[0].astype(np.float64)
        ys, xs = np.mgrid[0:patches.PATCH_SIZE, 0:patches.PATCH_SIZE] + 0.5
        w = patch / patch.sum()
        found = patches.to_image(np.array([[[(xs * w).sum(), (ys * w).sum()]]]), frame)[0, 0]
        np.testing.assert_allclose(found, [201.0, 301.0], atol=0.35 * width / 32)


def test_frames_of_a_level_vertebra() -> None:
    corners = np.array([[[10.0, 20.0], [50.0, 20.0], [10.0, 40.0], [50.0, 40.0]]])  # TL, TR, BL, BR
    np.testing.assert_allclose(patches.frames(corners)[0], [30.0, 30.0, 0.0, 40.0])
    tilted = patches.frames(corners @ np.array([[np.cos(0.3), np.sin(0.3)], [-np.sin(0.3), np.cos(0.3)]]))
    np.testing.assert_allclose(tilted[0, 2], 0.3, atol=1e-9)  # y down: a positive angle turns clockwise


def test_jitter_is_reproducible_and_bounded() -> None:
    frame = np.tile([[100.0, 200.0, 0.1, 50.0]], (1000, 1))
    a = patches.jitter(frame, np.random.default_rng(1), 0.1, 5.0, 0.1)
    np.testing.assert_array_equal(a, patches.jitter(frame, np.random.default_rng(1), 0.1, 5.0, 0.1))
    assert np.abs(a[:, 0] - 100).max() <= 2.5 * 0.1 * 50 + 1e-9
    assert np.abs(np.degrees(a[:, 2] - 0.1)).max() <= 12.5 + 1e-9
    assert 0.04 < np.std(np.log(a[:, 3] / 50)) < 0.12
