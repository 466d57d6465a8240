"""Tests of data.py: the network input, keypoint-aware augmentation, datasets and folds."""

from __future__ import annotations

import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from cobbnet.errors import InputError
from cobbnet.io.aasce import Sample
from cobbnet.nn.decode import to_input
from cobbnet.nn.targets import encode
from cobbnet.spine import landmarks as lmk
from cobbnet.training.data import (
    JPEG_REDUCE,
    Augment,
    SpineDataset,
    augment,
    kfold_indices,
    load_radiograph,
    prepare_image,
    set_dataset_epoch,
)

AASCE = Path(__file__).resolve().parents[2] / "shared" / "boostnet_labeldata"
INPUT = (256, 128)
BG = 30  # background grey of the dot images


def _grid_spine(top: int = 40, step: int = 24, height: int = 12) -> np.ndarray:
    """``(17, 4, 2)`` landmarks at pixel centres (i + 0.5), corners at least 10 px apart."""
    lm = np.zeros((lmk.N_VERTEBRAE, lmk.N_CORNERS, 2))
    for k in range(lmk.N_VERTEBRAE):
        y0, shift = top + step * k, round(8 * np.sin(k / 5))
        lm[k, :, 0] = np.array([90, 150, 92, 148]) + shift
        lm[k, :, 1] = [y0, y0 + 1, y0 + height, y0 + height]
    return lm + 0.5


def _dot_image(shape: tuple[int, int], landmarks: np.ndarray) -> np.ndarray:
    """A dark image with a bright 3x3 dot centred on the pixel of every landmark."""
    img = np.full(shape, BG, np.uint8)
    for x, y in np.floor(landmarks.reshape(-1, 2)).astype(int):
        img[y - 1 : y + 2, x - 1 : x + 2] = 255
    return img


def _centroid(img: np.ndarray, point: np.ndarray, radius: int = 4) -> np.ndarray:
    """Brightness centroid, in edge coordinates (pixel i's centre at i + 0.5), near ``point``."""
    x, y = np.floor(point).astype(int)
    patch = img[y - radius : y + radius + 1, x - radius : x + radius + 1].astype(np.float64)
    weight = np.clip(patch - BG, 0, None)
    ys, xs = np.mgrid[y - radius : y + radius + 1, x - radius : x + radius + 1] + 0.5
    return np.array([(weight * xs).sum(), (weight * ys).sum()]) / weight.sum()


def _dot_errors(img: np.ndarray, landmarks: np.ndarray, margin: int = 6) -> np.ndarray:
    """Distance from each landmark well inside the image to the dot found around it."""
    H, W = img.shape
    pts = landmarks.reshape(-1, 2)
    inside = (pts[:, 0] > margin) & (pts[:, 0] < W - margin) & (pts[:, 1] > margin) & (pts[:, 1] < H - margin)
    return np.array([np.linalg.norm(_centroid(img, p) - p) for p in pts[inside]])


# ---- the network input ----


@pytest.mark.parametrize("shape", [(600, 300), (100, 40), (200, 300), (256, 128)])
def test_prepare_image_shape_and_range(shape):
    img = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    x = prepare_image(img, INPUT)
    assert x.shape == (1, *INPUT) and x.dtype == np.float32
    assert 0.0 <= x.min() and x.max() <= 1.0
    assert abs(x.mean() - img.mean() / 255) < 0.02  # resizing keeps the mean grey
    assert np.all(prepare_image(np.full(shape, 255, np.uint8), INPUT) == 1.0)


def test_prepare_image_rejects_colour_and_float():
    with pytest.raises(ValueError):
        prepare_image(np.zeros((10, 10, 3), np.uint8), INPUT)
    with pytest.raises(ValueError):
        prepare_image(np.zeros((10, 10), np.float32), INPUT)


@pytest.mark.parametrize("shape", [(1200, 500), (300, 100), (200, 300)])
def test_prepare_image_is_linear_in_the_pixel_values(shape):
    """Twice the grey levels give exactly twice the input, and one grey level more adds 1/255:
    the resize does not round, so two encodings of one radiograph that differ by contrast or
    brightness reach the model (which standardises each image) as the same input."""
    img = np.random.default_rng(1).integers(0, 120, shape, dtype=np.uint8)
    x = prepare_image(img, INPUT)
    np.testing.assert_allclose(prepare_image(img * 2, INPUT), 2 * x, rtol=0, atol=1e-6)
    np.testing.assert_allclose(prepare_image(img + 1, INPUT), x + np.float32(1 / 255), rtol=0, atol=1e-6)


def test_prepare_image_moves_content_as_landmarks_scale():
    lm = _grid_spine()
    img = _dot_image((480, 240), lm)
    x = prepare_image(img, (320, 200))[0]  # shrinks y, shrinks x less
    lm_in = to_input(lm, original_size=img.shape, input_size=(320, 200))
    errors = _dot_errors(np.rint(x * 255).astype(np.uint8), lm_in)
    assert len(errors) == lmk.N_POINTS and errors.max() < 0.4


# ---- augmentation ----


@pytest.mark.parametrize("flip", [False, True])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_augment_moves_landmarks_with_the_image(flip, seed):
    lm = _grid_spine()
    img = _dot_image((480, 240), lm)
    cfg = Augment(photometric=False, hflip=flip, p=1.0)  # crop/expand, rotation and scale always
    out_img, out_lm = augment(img, lm, np.random.default_rng(seed), cfg)
    assert out_lm.shape == (17, 4, 2) and out_lm.dtype == np.float64
    assert not np.allclose(out_lm - out_lm.mean((0, 1)), lm - lm.mean((0, 1)), atol=1.0)  # it moved
    errors = _dot_errors(out_img, out_lm)
    assert len(errors) >= 24  # the view may cut off up to (1 - keep) of the spine
    assert errors.max() < 0.75, errors.max()
    # corners keep their meaning: mirrored or not, the layout is already canonical
    np.testing.assert_allclose(lmk.canonical_order(out_lm), out_lm)


def test_flip_mirrors_and_relabels_corners():
    lm = _grid_spine()
    img = _dot_image((480, 240), lm)
    only_flip = Augment(photometric=False, expand_crop=False, affine=False, hflip=True, p=1.0)
    out_img, out_lm = augment(img, lm, np.random.default_rng(0), only_flip)
    np.testing.assert_array_equal(out_img, img[:, ::-1])
    assert np.all(out_lm[:, lmk.TL, 0] < out_lm[:, lmk.TR, 0])
    assert np.all(out_lm[:, lmk.BL, 0] < out_lm[:, lmk.BR, 0])
    # edge coordinates: a mirrored x is W - x, and the mirrored TR is the new TL
    np.testing.assert_allclose(out_lm[:, lmk.TL, 0], 240 - lm[:, lmk.TR, 0], atol=1e-4)
    np.testing.assert_allclose(out_lm[:, lmk.BR, 1], lm[:, lmk.BL, 1], atol=1e-4)
    np.testing.assert_allclose(lmk.canonical_order(out_lm), out_lm)


def test_crop_keeps_landmarks_that_leave_and_encode_marks_them_invalid():
    lm = _grid_spine()
    img = _dot_image((480, 240), lm)
    cfg = Augment(photometric=False, affine=False, hflip=False, expand=0.0, crop=0.6, keep=0.3, p=1.0)
    for seed in range(20):
        out_img, out_lm = augment(img, lm, np.random.default_rng(seed), cfg)
        H, W = out_img.shape
        c = lmk.centers(out_lm)
        outside = (c[:, 0] < 0) | (c[:, 0] >= W) | (c[:, 1] < 0) | (c[:, 1] >= H)
        if outside.any():
            break
    else:
        pytest.fail("no crop moved a vertebra out of view")
    assert outside.sum() < lmk.N_VERTEBRAE  # most of the spine stays in view
    shift = out_lm - lm  # a crop is a translation: every point kept, none re-ordered
    np.testing.assert_allclose(shift, np.broadcast_to(shift[0, 0], shift.shape), atol=1e-4)
    lm_in = to_input(out_lm, original_size=out_img.shape, input_size=INPUT)
    valid = encode(lm_in, INPUT)["valid"]
    np.testing.assert_array_equal(valid, (~outside).astype(np.float32))


@pytest.mark.parametrize("keep", [0.9, 0.6])
def test_crop_keeps_the_promised_share_of_the_spine_in_view(keep):
    lm = _grid_spine(top=0, step=28, height=27) + [0.0, 0.3]  # the spine fills the image's height
    img = _dot_image((476, 240), lm)
    cfg = Augment(photometric=False, affine=False, hflip=False, expand=0.0, crop=0.5, keep=keep, p=1.0)
    for seed in range(30):
        out_img, out_lm = augment(img, lm, np.random.default_rng(seed), cfg)
        ys = out_lm[..., 1]
        visible = np.clip(ys.max(), 0, out_img.shape[0]) - np.clip(ys.min(), 0, out_img.shape[0])
        assert visible >= keep * (ys.max() - ys.min()) - 1e-6


def test_expansion_pads_with_the_image_dark_grey():
    lm = _grid_spine()
    img = _dot_image((480, 240), lm)
    cfg = Augment(photometric=False, affine=False, hflip=False, crop=0.0, expand=0.5, p=1.0)
    out_img, out_lm = augment(img, lm, np.random.default_rng(3), cfg)
    assert out_img.shape[0] > 480 and out_img.shape[1] > 240
    assert np.count_nonzero(out_img == 255) == np.count_nonzero(img == 255)  # no dot lost
    assert set(np.unique(out_img)) == {BG, 255}
    assert _dot_errors(out_img, out_lm).max() < 1e-6


def test_augment_is_deterministic_for_a_seed():
    lm = _grid_spine()
    img = _dot_image((480, 240), lm)
    img = cv2.GaussianBlur(img, (0, 0), 3)  # grey levels for the photometric transforms to change
    a = augment(img, lm, np.random.default_rng(11))
    b = augment(img, lm, np.random.default_rng(11))
    c = augment(img, lm, np.random.default_rng(12))
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert a[0].shape != c[0].shape or not np.array_equal(a[0], c[0])


def test_disabled_augment_returns_the_input():
    lm = _grid_spine()
    img = _dot_image((480, 240), lm)
    off = Augment(photometric=False, expand_crop=False, affine=False, hflip=False)
    out_img, out_lm = augment(img, lm, np.random.default_rng(0), off)
    np.testing.assert_array_equal(out_img, img)
    np.testing.assert_array_equal(out_lm, lm)


@pytest.mark.parametrize("bad", [{"keep": 0.0}, {"crop": 1.0}, {"expand": -0.1}, {"p": 1.5}])
def test_augment_config_rejects_impossible_strengths(bad):
    with pytest.raises(ValueError):
        Augment(**bad)


# ---- datasets ----


def _synthetic(n: int = 4, augment_cfg: Augment | None = None) -> SpineDataset:
    return SpineDataset.from_synthetic(n, 5, (320, 140), INPUT, augment_cfg, 9)


@pytest.mark.parametrize("aug", [None, Augment()])
def test_item_shapes_and_dtypes(aug):
    item = _synthetic(2, aug)[1]
    h, w = INPUT[0] // 4, INPUT[1] // 4
    expected = {
        "image": ((1, *INPUT), torch.float32), "hm": ((1, h, w), torch.float32),
        "reg": ((17, 2), torch.float32), "cnr": ((17, 8), torch.float32),
        "mask": ((1, h, w), torch.float32), "ind": ((17,), torch.int64),
        "valid": ((17,), torch.float32), "landmarks_input": ((17, 4, 2), torch.float32),
        "landmarks": ((17, 4, 2), torch.float64), "orig_size": ((2,), torch.int64),
    }
    for key, (shape, dtype) in expected.items():
        assert tuple(item[key].shape) == shape and item[key].dtype == dtype, key
    assert isinstance(item["name"], str) and item["orig_size"].tolist() == [320, 140]
    assert 0.0 <= item["image"].min() and item["image"].max() <= 1.0
    assert item["hm"].max() == 1.0 and item["mask"].sum() > 0


def test_item_without_augmentation_scales_landmarks_per_axis():
    item = _synthetic()[0]
    expected = to_input(item["landmarks"].numpy(), original_size=(320, 140), input_size=INPUT)
    np.testing.assert_allclose(item["landmarks_input"].numpy(), expected, atol=1e-4)
    assert item["valid"].sum() == 17


def test_dataloader_collates_batches_of_two():
    batch = next(iter(DataLoader(_synthetic(4, Augment()), batch_size=2)))
    assert batch["image"].shape == (2, 1, *INPUT)
    assert batch["landmarks"].shape == (2, 17, 4, 2) and batch["orig_size"].shape == (2, 2)
    assert batch["ind"].dtype == torch.int64 and len(batch["name"]) == 2


def test_dataset_is_deterministic_and_set_epoch_changes_augmentation():
    ds = _synthetic(3, Augment())
    first = ds[2]["image"]
    assert torch.equal(first, ds[2]["image"])
    assert torch.equal(first, _synthetic(3, Augment())[2]["image"])  # a rebuilt dataset agrees
    set_dataset_epoch(torch.utils.data.ConcatDataset([ds]), 1)
    assert ds.epoch == 1 and not torch.equal(first, ds[2]["image"])
    ds.set_epoch(0)
    assert torch.equal(first, ds[2]["image"])


def test_set_epoch_reaches_persistent_workers():
    ds = SpineDataset.from_synthetic(2, 1, (200, 90), (128, 64), Augment(), 3)
    loader = DataLoader(ds, batch_size=2, num_workers=1, persistent_workers=True)
    epoch0 = next(iter(loader))["image"]
    ds.set_epoch(1)
    epoch1 = next(iter(loader))["image"]
    assert not torch.equal(epoch0, epoch1)
    assert torch.equal(epoch1[1], ds[1]["image"])


# ---- reading radiographs at reduced resolution ----


def _jpeg_sample(tmp_path: Path, shape: tuple[int, int]) -> tuple[Sample, np.ndarray]:
    lm = _grid_spine(top=60, step=40, height=20) * [shape[1] / 240, 1.0]
    lm = np.floor(lm) + 0.5
    img = cv2.GaussianBlur(_dot_image(shape, lm), (0, 0), 1.0)  # smooth dots survive JPEG well
    path = tmp_path / "spine 1.jpg"
    cv2.imwrite(str(path), img, [cv2.IMWRITE_JPEG_QUALITY, 98])
    return Sample("spine 1.jpg", path, lm, None, shape[1], shape[0]), img


def test_large_jpeg_decodes_reduced_with_landmarks_in_place(tmp_path):
    sample, _ = _jpeg_sample(tmp_path, (801, 261))  # odd sizes: the last reduced pixel is partial
    size = (384, 128)  # dots stay apart at this scale
    image, reduce = load_radiograph(sample.image_path, (801, 261), size)
    assert reduce == JPEG_REDUCE and image.shape == (401, 131)
    item = SpineDataset.from_aasce([sample], size)[0]
    assert item["orig_size"].tolist() == [801, 261]
    np.testing.assert_array_equal(item["landmarks"].numpy(), sample.landmarks)
    x = np.rint(item["image"][0].numpy() * 255).astype(np.uint8)
    errors = _dot_errors(x, item["landmarks_input"].numpy())
    assert len(errors) == lmk.N_POINTS and np.median(errors) < 0.1 and errors.max() < 0.25


def test_reduced_decode_matches_the_full_decode(tmp_path):
    sample, _ = _jpeg_sample(tmp_path, (800, 260))
    png = tmp_path / "spine 1.png"
    cv2.imwrite(str(png), cv2.imread(str(sample.image_path), cv2.IMREAD_GRAYSCALE))
    reduced_item = SpineDataset.from_aasce([sample], INPUT)[0]
    full = SpineDataset.from_aasce([Sample("p", png, sample.landmarks, None, 260, 800)], INPUT)[0]
    diff = (reduced_item["image"] - full["image"]).abs()
    assert diff.mean() < 0.01 and diff.max() < 0.2
    np.testing.assert_allclose(reduced_item["landmarks_input"], full["landmarks_input"], atol=1e-4)


def test_reduced_decode_falls_back_to_the_full_reader(tmp_path):
    sample, img = _jpeg_sample(tmp_path, (800, 260))
    wrong_size = load_radiograph(sample.image_path, (900, 300), INPUT)  # header disagrees
    small_input = load_radiograph(sample.image_path, (800, 260), (512, 256))  # needs full size
    for image, reduce in (wrong_size, small_input):
        assert reduce == 1 and image.shape == (800, 260)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    with pytest.raises(InputError, match="broken.jpg"):
        load_radiograph(broken, (800, 260), INPUT)


# ---- folds ----


@pytest.mark.parametrize("n,k", [(23, 5), (481, 15), (4, 2)])
def test_kfold_partitions(n, k):
    vals = []
    for fold in range(k):
        train, val = kfold_indices(n, k, fold, seed=3)
        assert np.intersect1d(train, val).size == 0
        np.testing.assert_array_equal(np.union1d(train, val), np.arange(n))
        vals.append(val)
    np.testing.assert_array_equal(np.sort(np.concatenate(vals)), np.arange(n))
    sizes = [len(v) for v in vals]
    assert max(sizes) - min(sizes) <= 1


def test_kfold_is_stable_and_seeded():
    a = kfold_indices(50, 5, 2, seed=0)[1]
    np.testing.assert_array_equal(a, kfold_indices(50, 5, 2, seed=0)[1])
    assert not np.array_equal(a, kfold_indices(50, 5, 2, seed=1)[1])
    assert not np.array_equal(a, np.arange(20, 30))  # shuffled, not contiguous


@pytest.mark.parametrize("n,k,fold", [(10, 5, 5), (10, 5, -1), (10, 1, 0), (3, 5, 0)])
def test_kfold_rejects_bad_arguments(n, k, fold):
    with pytest.raises(ValueError):
        kfold_indices(n, k, fold)


# ---- the AASCE data, when present ----


@pytest.mark.skipif(not AASCE.exists(), reason="AASCE boostnet_labeldata not available")
def test_aasce_item_loads():
    from cobbnet.io.aasce import read_split

    samples = read_split(AASCE, "training")[:1]
    ds = SpineDataset.from_aasce(samples, augment=Augment(), seed=0)
    start = time.perf_counter()
    item = ds[0]
    elapsed = time.perf_counter() - start
    assert item["image"].shape == (1, *ds.input_size)
    assert item["landmarks_input"].shape == (17, 4, 2)
    assert item["orig_size"].tolist() == [samples[0].height, samples[0].width]
    np.testing.assert_allclose(item["landmarks"].numpy(), samples[0].landmarks)
    assert item["valid"].sum() >= 12  # augmentation keeps most of the spine in view
    assert elapsed < 5.0  # generous: shared CPUs; typical is tens of milliseconds


@pytest.mark.parametrize("keep", [0.9, 1.0])
def test_the_configured_crop_keep_reaches_the_augmentation(keep: float) -> None:
    from cobbnet.training.config import Config
    from cobbnet.training.train import build_datasets

    cfg = Config()
    cfg.data.source, cfg.data.synthetic_train, cfg.data.synthetic_val = "synthetic", 2, 1
    cfg.data.augment_keep = keep
    train, val = build_datasets(cfg)
    assert train.augment.keep == keep and val.augment is None


def test_a_crop_keep_out_of_range_is_a_one_line_config_error() -> None:
    from cobbnet.training.config import from_dict

    with pytest.raises(InputError, match="x.yaml: section 'data': augment_keep 1.5"):
        from_dict({"data": {"augment_keep": 1.5}}, "x.yaml")
