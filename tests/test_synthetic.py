"""Synthetic radiographs: spine geometry, image content, and the AASCE layout on disk."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import scipy.io

from cobbnet.errors import InputError
from cobbnet.io.synthetic import (
    KINDS,
    make_radiograph,
    random_spine,
    render,
    synth_samples,
    write_dataset,
)
from cobbnet.spine.cobb import cobb_angles_batch
from cobbnet.spine.landmarks import BL, BR, TL, TR, canonical_order, centers, from_csv_row, from_p2

SMALL = (256, 128)  # (H, W)


def _spines(n: int, seed: int, kind: str | None = None, size=SMALL) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.stack([random_spine(rng, size[1], size[0], kind) for _ in range(n)])  # (n, 17, 4, 2)


def _sizes(lm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Widths and heights ``(..., 17)``: distances between edge and endplate midpoints."""
    across = (lm[..., TR, :] + lm[..., BR, :] - lm[..., TL, :] - lm[..., BL, :]) / 2
    down = (lm[..., BL, :] + lm[..., BR, :] - lm[..., TL, :] - lm[..., TR, :]) / 2
    return np.linalg.norm(across, axis=-1), np.linalg.norm(down, axis=-1)


@pytest.mark.parametrize("size", [SMALL, (1024, 512), (2400, 800)])
@pytest.mark.parametrize("kind", KINDS)
def test_spines_lie_inside_the_image_in_canonical_order(size, kind):
    lm = _spines(40, 1, kind, size)
    h, w = size
    assert lm[..., 0].min() >= 0 and lm[..., 0].max() <= w - 1
    assert lm[..., 1].min() >= 0 and lm[..., 1].max() <= h - 1
    np.testing.assert_array_equal(canonical_order(lm), lm)
    assert np.all(np.diff(centers(lm)[..., 1], axis=-1) > 0)


def test_angle_distribution_spans_straight_to_severe_c_and_s():
    lm = _spines(200, 2)
    angles, _, is_s = cobb_angles_batch(lm, np.full(len(lm), SMALL[0]))
    largest = angles[:, 0]
    assert largest.min() < 10 and largest.max() > 60
    assert np.mean(largest > 40) > 0.2  # not only mild curves
    assert is_s.any() and (~is_s).any()


def test_kinds_shape_the_curve():
    h = SMALL[0]
    straight = cobb_angles_batch(_spines(60, 3, "straight"), np.full(60, h))
    c_curve = cobb_angles_batch(_spines(60, 3, "C"), np.full(60, h))
    s_curve = cobb_angles_batch(_spines(60, 3, "S"), np.full(60, h))
    assert straight[0][:, 0].max() < 15
    assert c_curve[0][:, 0].max() > 50 and s_curve[0][:, 0].max() > 50
    assert s_curve[2].mean() > 0.7 > c_curve[2].mean()  # the challenge's S test agrees


def test_unknown_kind_is_refused():
    with pytest.raises(ValueError, match="spiral"):
        random_spine(np.random.default_rng(0), 128, 256, "spiral")


def test_vertebrae_grow_from_t1_to_l5_with_disc_gaps():
    lm = _spines(50, 4)
    widths, heights = _sizes(lm)
    level = np.arange(17)
    for w, h in zip(widths, heights, strict=True):
        assert np.corrcoef(level, w)[0, 1] > 0.9
        assert np.corrcoef(level, h)[0, 1] > 0.8
    assert 1.3 < np.median(widths[:, -1] / widths[:, 0]) < 1.7
    assert 1.2 < np.median(heights[:, -1] / heights[:, 0]) < 1.6
    c = centers(lm)
    gap = np.linalg.norm(c[:, 1:] - c[:, :-1], axis=-1) - (heights[:, 1:] + heights[:, :-1]) / 2
    ratio = gap / heights[:, 1:]
    assert 0.15 < np.median(ratio) < 0.45 and ratio.min() > 0.05


def test_spine_spans_neck_to_pelvis():
    lm = _spines(100, 5)
    top = lm[:, 0, :, 1].min(axis=1) / SMALL[0]
    bottom = lm[:, -1, :, 1].max(axis=1) / SMALL[0]
    assert np.all(top > 0.02) and np.all(top < 0.1)
    assert np.all(bottom > 0.65) and np.all(bottom < 0.92)
    assert np.median(bottom) > 0.75


def test_make_radiograph_is_deterministic_and_sized():
    a_img, a_lm = make_radiograph(np.random.default_rng(7), SMALL)
    b_img, b_lm = make_radiograph(np.random.default_rng(7), SMALL)
    c_img, _ = make_radiograph(np.random.default_rng(8), SMALL)
    assert a_img.shape == SMALL and a_img.dtype == np.uint8
    np.testing.assert_array_equal(a_img, b_img)
    np.testing.assert_array_equal(a_lm, b_lm)
    assert not np.array_equal(a_img, c_img)


def test_drawn_sizes_follow_the_aasce_range_and_scale():
    rng = np.random.default_rng(9)
    for _ in range(5):
        img, lm = make_radiograph(rng, None, scale=0.1)
        h, w = img.shape
        assert 95 <= h <= 305 and 1.8 < h / w < 3.5
        assert lm[..., 0].max() <= w - 1 and lm[..., 1].max() <= h - 1
    img, _ = make_radiograph(rng, (400, 200), scale=0.5)
    assert img.shape == (200, 100)


def _region_labels(lm: np.ndarray, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Label images: vertebra interiors 1..17 and the disc spaces between them 1..16."""
    vert, disc = np.zeros(shape, np.int32), np.zeros(shape, np.int32)
    c = centers(lm)
    for i, q in enumerate(lm):
        inner = c[i] + (q - c[i]) * 0.6  # clear of the brighter rim and endplates
        cv2.fillPoly(vert, [np.round(inner[[TL, TR, BR, BL]]).astype(np.int32)], i + 1)
    for i, (upper, lower) in enumerate(zip(lm[:-1], lm[1:], strict=True)):
        quad = np.array([upper[BL], upper[BR], lower[TR], lower[TL]])
        mid = quad.mean(axis=0)
        quad = mid + (quad - mid) * [0.5, 0.4]  # the middle of the disc, away from endplates
        cv2.fillPoly(disc, [np.round(quad).astype(np.int32)], i + 1)
    return vert, disc


def _label_means(img: np.ndarray, labels: np.ndarray, n: int) -> np.ndarray:
    return (
        np.bincount(labels.ravel(), img.ravel(), n + 1) / np.bincount(labels.ravel(), None, n + 1)
    )[1:]


@pytest.mark.parametrize("seed", [11, 12, 13])
def test_rendered_vertebrae_are_textured_and_brighter_than_discs(seed):
    rng = np.random.default_rng(seed)
    lm = random_spine(rng, 512, 1024)
    img = render(lm, 512, 1024, rng).astype(np.float64)
    vert, disc = _region_labels(lm, img.shape)
    v_mean, d_mean = _label_means(img, vert, 17), _label_means(img, disc, 16)
    assert v_mean.mean() > d_mean.mean() + 10
    # each disc is darker than the vertebra above it and the one below, nearly everywhere
    assert np.mean((d_mean < v_mean[:-1]) & (d_mean < v_mean[1:])) >= 0.8
    assert v_mean.mean() > img.mean()
    # bone has trabecular texture: a band-pass image varies far more inside the lumbar
    # vertebrae than in the same shapes moved sideways into the soft tissue beside them
    band = cv2.GaussianBlur(img, (0, 0), 1.2) - cv2.GaussianBlur(img, (0, 0), 4)
    widths = _sizes(lm)[0]
    bone, soft = [], []
    for i in range(12, 15):  # L1-L3: no ribs beside them, the pelvis still below
        ys, xs = np.nonzero(vert == i + 1)
        for side in (-1, 1):
            moved = xs + round(side * 1.3 * widths[i])
            if moved.min() >= 0 and moved.max() < img.shape[1]:
                bone.append(band[ys, xs].std())
                soft.append(band[ys, moved].std())
    assert len(bone) >= 2
    assert np.mean(bone) > 2.5 * np.mean(soft)


def test_render_shape_and_dtype_follow_arguments():
    rng = np.random.default_rng(12)
    lm = random_spine(rng, 100, 300)
    img = render(lm, 100, 300, rng)
    assert img.shape == (300, 100) and img.dtype == np.uint8
    assert img.std() > 10  # not blank


def _read_split(root, split="training"):
    labels = root / "labels" / split
    names = (labels / "filenames.csv").read_text().splitlines()
    rows = np.loadtxt(labels / "landmarks.csv", delimiter=",", ndmin=2)
    angles = np.loadtxt(labels / "angles.csv", delimiter=",", ndmin=2)
    return labels, names, rows, angles


def test_write_dataset_layout_and_files_agree(tmp_path):
    root = write_dataset(tmp_path / "synth", n=4, seed=3, size=SMALL)
    labels, names, rows, angles = _read_split(root)
    assert len(names) == 4 and len(set(names)) == 4
    assert all(" " in n and n.endswith(".jpg") and n != n.lower() for n in names)
    assert rows.shape == (4, 136) and angles.shape == (4, 3)
    assert sorted(p.name for p in (root / "data" / "training").iterdir()) == sorted(names)
    spines, heights = [], []
    for name, row in zip(names, rows, strict=True):
        img = cv2.imread(str(root / "data" / "training" / name), cv2.IMREAD_GRAYSCALE)
        assert img.shape == SMALL
        p2 = scipy.io.loadmat(labels / f"{name}.mat")["p2"]
        assert p2.shape == (68, 2)
        lm = from_p2(p2)
        np.testing.assert_allclose(from_csv_row(row, SMALL[1], SMALL[0]), lm, atol=1e-5)
        spines.append(lm)
        heights.append(img.shape[0])
    expected = cobb_angles_batch(np.stack(spines), np.array(heights))[0]
    np.testing.assert_allclose(angles, expected, atol=1e-5)


def test_write_dataset_matches_synth_samples(tmp_path):
    root = write_dataset(tmp_path / "synth", n=3, seed=5, size=SMALL, split="test")
    labels, names, _, _ = _read_split(root, "test")
    samples = list(synth_samples(3, 5, SMALL))
    assert [s[0] for s in samples] == names
    for name, img, lm in samples:
        np.testing.assert_allclose(from_p2(scipy.io.loadmat(labels / f"{name}.mat")["p2"]), lm)
        on_disk = cv2.imread(str(root / "data" / "test" / name), cv2.IMREAD_GRAYSCALE)
        assert np.abs(on_disk.astype(int) - img).mean() < 4  # JPEG quality 90


def test_write_dataset_is_byte_for_byte_deterministic(tmp_path):
    def files(root):
        return {p.relative_to(root): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}

    a = files(write_dataset(tmp_path / "a", n=3, seed=21, size=SMALL))
    b = files(write_dataset(tmp_path / "b", n=3, seed=21, size=SMALL))
    c = files(write_dataset(tmp_path / "c", n=3, seed=22, size=SMALL))
    assert a.keys() == b.keys() and len(a) == 3 * 2 + 3
    assert a == b
    assert a != c


def test_write_dataset_refuses_a_non_empty_folder_unless_overwrite(tmp_path):
    root = tmp_path / "synth"
    write_dataset(root, n=3, seed=1, size=SMALL)
    with pytest.raises(InputError) as err:
        write_dataset(root, n=2, seed=2, size=SMALL)
    assert str(err.value).startswith(str(root / "data" / "training"))
    write_dataset(root, n=2, seed=2, size=SMALL, overwrite=True)
    _, names, rows, _ = _read_split(root)
    assert len(names) == 2 and rows.shape == (2, 136)
    assert len(list((root / "data" / "training").iterdir())) == 2  # no stale images left
    # another split beside an existing one is fine
    write_dataset(root, n=1, seed=3, size=SMALL, split="test")
    assert len(_read_split(root, "test")[1]) == 1
