"""Datasets, the network input, augmentation and cross-validation folds.

The flow of one training item::

    radiograph (H0, W0) uint8 + landmarks (17, 4, 2) in its pixels
      -> augment (optional; keypoint-aware, at the decoded resolution)
      -> prepare_image: resize to the input (H, W), no aspect preservation -> (1, H, W) float
      -> landmarks scaled per axis to input pixels (decode.to_input) -> targets.encode

``prepare_image`` is the one place the network input is made: training, prediction and
evaluation all call it. Coordinates measure distance from the image's top-left edge
(``decode.to_input``): pixel i spans [i, i + 1), so a mirrored x is ``width - x``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, Protocol

import cv2
import numpy as np
import torch
from torch.utils.data import ConcatDataset, Dataset, Subset

from cobbnet.infer.preprocess import prepare_image, to_input
from cobbnet.io.aasce import Sample
from cobbnet.io.images import read_image
from cobbnet.io.splits import holdout_indices, kfold_indices, split_indices  # noqa: F401  (their home: io.splits)
from cobbnet.io.synthetic import synth_sample
from cobbnet.nn.targets import INPUT_SIZE, encode
from cobbnet.spine import landmarks as lmk

# keep keypoints that leave the image: encode marks their vertebrae invalid instead
KEYPOINT_PARAMS: dict[str, Any] = {"format": "xy", "remove_invisible": False}
DARK_PERCENTILE = 1.0  # grey level of padding: this percentile of the image, so borders look like film edge
JPEG_SUFFIXES: tuple[str, ...] = (".jpg", ".jpeg")
JPEG_REDUCE = 2  # libjpeg decodes at 1/2 size when the full size is not needed
_FLIP_ORDER = [lmk.TR, lmk.TL, lmk.BR, lmk.BL]  # a mirrored left corner is a right corner
# albumentations (like cv2.warpAffine) puts pixel centres at integers, ours at i + 0.5
_ALBU_SHIFT = 0.5


# ---- augmentation ----


@dataclass
class Augment:
    """Training augmentation: each group switched on or off, with its strength.

    ``p`` is the probability with which each enabled group (and each photometric transform)
    is applied to an image.
    """

    photometric: bool = True
    brightness: float = 0.2  # +- fraction of the full grey range
    contrast: float = 0.2  # +- relative contrast change
    gamma: tuple[float, float] = (0.8, 1.2)
    expand_crop: bool = True
    expand: float = 0.3  # the view grows up to (1 + expand) x the image, padded with a dark grey
    crop: float = 0.2  # or shrinks down to (1 - crop) x the image
    keep: float = 0.9  # share of the spine's extent, per axis, that stays in view
    affine: bool = True
    rotate: float = 10.0  # degrees, +-
    scale: tuple[float, float] = (0.9, 1.1)
    hflip: bool = True
    p: float = 0.5

    def __post_init__(self) -> None:
        if not (0.0 < self.keep <= 1.0 and 0.0 <= self.crop < 1.0 and self.expand >= 0.0 and 0.0 <= self.p <= 1.0):
            raise ValueError(f"augment: need 0 < keep <= 1, 0 <= crop < 1, expand >= 0, 0 <= p <= 1; got {self}")


def _view_box(rng: np.random.Generator, landmarks: np.ndarray, shape: tuple[int, int],
              cfg: Augment) -> tuple[int, int, int, int]:
    """A random view ``(x0, y0, x1, y1)``, possibly reaching outside the image.

    One relative size for both axes keeps the anatomy's aspect; per axis the view always
    contains the spine's extent less ``(1 - keep) / 2`` of it at either end.
    """
    H0, W0 = shape
    s = rng.uniform(1.0 - cfg.crop, 1.0 + cfg.expand)
    pts = landmarks.reshape(-1, 2)
    edges = []
    for axis, size in ((0, W0), (1, H0)):
        lo = min(max(pts[:, axis].min(), 0.0), float(size))  # the spine's part inside the image
        hi = max(min(pts[:, axis].max(), float(size)), lo)
        margin = (1.0 - cfg.keep) * (hi - lo) / 2.0
        length = max(s * size, hi - lo - 2.0 * margin, 1.0)
        high = lo + margin
        start = int(np.floor(rng.uniform(min(hi - margin - length, high), high)))  # min: rounding
        edges.append((start, start + int(np.ceil(length))))
    (x0, x1), (y0, y1) = edges
    return x0, y0, x1, y1


def _view_transforms(box: tuple[int, int, int, int], shape: tuple[int, int], fill: float) -> list:
    """Pad then crop: the pixels of ``box`` with the part outside the image filled."""
    import albumentations as A
    x0, y0, x1, y1 = box
    H0, W0 = shape
    left, top = max(0, -x0), max(0, -y0)
    pad = (left, top, max(0, x1 - W0), max(0, y1 - H0))  # (left, top, right, bottom)
    out = [A.Pad(padding=pad, fill=fill, border_mode=cv2.BORDER_CONSTANT)] if any(pad) else []
    return out + [A.Crop(x_min=x0 + left, y_min=y0 + top, x_max=x1 + left, y_max=y1 + top)]


def augment(image: np.ndarray, landmarks: np.ndarray, rng: np.random.Generator,
            config: Augment | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Randomly augment a radiograph and its landmarks together.

    ``image (H, W)`` uint8, ``landmarks (17, 4, 2)`` in its pixels -> an image of possibly
    another size and ``(17, 4, 2)`` float64 landmarks in ITS pixels. Landmarks that leave the
    image are kept. After a mirror the corners are re-labelled (TL <-> TR, BL <-> BR) so the
    layout's promises hold. Every random choice comes from ``rng``: the same generator state
    gives the same result.
    """
    import albumentations as A  # here, not at the top: prediction needs no augmentation (~1 s import)

    cfg = config or Augment()
    lm = lmk.check(landmarks)
    shape = image.shape[:2]
    fill = float(np.percentile(image[::4, ::4], DARK_PERCENTILE))
    draws = rng.random(2)  # drawn whatever the config: one switch leaves the other choices alone
    box = _view_box(rng, lm, shape, cfg)
    flip = cfg.hflip and draws[1] < cfg.p
    transforms: list[Any] = []
    if cfg.expand_crop and draws[0] < cfg.p:
        transforms += _view_transforms(box, shape, fill)
    if cfg.affine:
        transforms.append(A.Affine(scale=cfg.scale, rotate=(-cfg.rotate, cfg.rotate), keep_ratio=True,
                                   border_mode=cv2.BORDER_CONSTANT, fill=fill, p=cfg.p))
    if flip:
        transforms.append(A.HorizontalFlip(p=1.0))
    if cfg.photometric:
        transforms += [
            A.RandomBrightnessContrast(brightness_limit=cfg.brightness, contrast_limit=cfg.contrast, p=cfg.p),
            A.RandomGamma(gamma_limit=(100.0 * cfg.gamma[0], 100.0 * cfg.gamma[1]), p=cfg.p),
        ]
    seed = int(rng.integers(2**31))
    if not transforms:
        return image.copy(), lm
    compose = A.Compose(transforms, keypoint_params=A.KeypointParams(**KEYPOINT_PARAMS), seed=seed)
    out = compose(image=image, keypoints=lmk.to_p2(lm) - _ALBU_SHIFT)
    lm_out = np.asarray(out["keypoints"], dtype=np.float64).reshape(lm.shape) + _ALBU_SHIFT
    return out["image"], (lm_out[:, _FLIP_ORDER] if flip else lm_out)


# ---- reading ----


class Loaded(NamedTuple):
    """A decoded radiograph: ``image`` may be ``reduce`` times smaller than the original
    ``orig_size (H0, W0)``; ``landmarks (17, 4, 2)`` are in original pixels, so in the
    image's pixels they are ``landmarks / reduce``."""

    name: str
    image: np.ndarray
    landmarks: np.ndarray
    orig_size: tuple[int, int]
    reduce: int = 1


def load_radiograph(path: str | os.PathLike, size: tuple[int, int] | None,
                    input_size: tuple[int, int] = INPUT_SIZE) -> tuple[np.ndarray, int]:
    """Decode a radiograph at the resolution the input needs: ``(image, reduce)``.

    ``size`` is the full ``(H0, W0)`` when known. A JPEG at least JPEG_REDUCE times the input
    along both axes is decoded at 1/JPEG_REDUCE size by libjpeg's DCT scaling (several times
    faster, and still no smaller than the input): each of its pixels covers JPEG_REDUCE x
    JPEG_REDUCE original pixels, so ``reduce = JPEG_REDUCE``. Anything else, or a reduced decode
    that fails or has an unexpected size, goes through ``images.read_image`` with ``reduce = 1``.
    """
    path = Path(path)
    if size is not None and path.suffix.lower() in JPEG_SUFFIXES:
        H0, W0 = (int(s) for s in size)
        H, W = input_size
        if H0 >= JPEG_REDUCE * H and W0 >= JPEG_REDUCE * W:
            # stored orientation, as images.read_image: the landmarks describe that pixel grid
            flags = cv2.IMREAD_REDUCED_GRAYSCALE_2 | cv2.IMREAD_IGNORE_ORIENTATION
            img = cv2.imread(str(path), flags)
            if img is not None and img.shape == (-(-H0 // JPEG_REDUCE), -(-W0 // JPEG_REDUCE)):
                return img, JPEG_REDUCE
    return read_image(path), 1


class Item(Protocol):
    """One radiograph a dataset can load."""

    def load(self, input_size: tuple[int, int]) -> Loaded: ...


@dataclass(frozen=True)
class AasceItem:
    """A labelled file (an ``aasce.Sample``), read lazily."""

    sample: Sample

    def load(self, input_size: tuple[int, int]) -> Loaded:
        s = self.sample
        known = (int(s.height), int(s.width)) if s.height and s.width else None
        image, reduce = load_radiograph(s.image_path, known, input_size)
        orig = known if reduce != 1 else image.shape
        return Loaded(s.name, image, np.asarray(s.landmarks, dtype=np.float64), orig, reduce)


@dataclass(frozen=True)
class SyntheticItem:
    """Synthetic radiograph ``index`` of set ``seed`` (``synthetic.synth_sample``), made on every load."""

    seed: int
    index: int
    size: tuple[int, int] | None = None

    def load(self, input_size: tuple[int, int]) -> Loaded:
        name, image, lm = synth_sample(self.index, self.seed, self.size)
        return Loaded(name, image, np.asarray(lm, dtype=np.float64), image.shape)


# ---- the dataset ----


class SpineDataset(Dataset):
    """Radiographs as network inputs and head targets.

    An item is a dict: ``image (1, H, W)`` float32; the ``targets.encode`` tensors ``hm``,
    ``reg``, ``cnr``, ``mask``, ``ind``, ``valid``; ``landmarks_input (17, 4, 2)`` float32 in
    input pixels after augmentation; ``landmarks (17, 4, 2)`` float64 in original pixels,
    unaugmented; ``orig_size (2,)`` int64 ``[H0, W0]``; ``name`` str.

    With ``augment``, item i of epoch e is augmented with the generator
    ``default_rng([seed, e, i])``: reproducible, and new each epoch after ``set_epoch``. The
    epoch lives in shared memory, so ``set_epoch`` reaches DataLoader workers, persistent ones
    included.
    """

    def __init__(self, items: Sequence[Item], input_size: tuple[int, int] = INPUT_SIZE,
                 augment: Augment | None = None, seed: int = 0):
        self.items = list(items)
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.augment = augment
        self.seed = int(seed)
        self._epoch = torch.zeros(1, dtype=torch.int64).share_memory_()

    @classmethod
    def from_aasce(cls, samples: Sequence[Sample], input_size: tuple[int, int] = INPUT_SIZE,
                   augment: Augment | None = None, seed: int = 0) -> SpineDataset:
        """Labelled radiographs (``aasce.Sample``), each image read when its item is asked for."""
        return cls([AasceItem(s) for s in samples], input_size, augment, seed)

    @classmethod
    def from_synthetic(cls, n: int, seed: int = 0, size: tuple[int, int] | None = None,
                       input_size: tuple[int, int] = INPUT_SIZE, augment: Augment | None = None,
                       aug_seed: int | None = None) -> SpineDataset:
        """``n`` synthetic radiographs, item i from ``default_rng([seed, i])``; nothing cached."""
        items = [SyntheticItem(int(seed), i, tuple(size) if size else None) for i in range(n)]
        return cls(items, input_size, augment, seed if aug_seed is None else aug_seed)

    @property
    def epoch(self) -> int:
        return int(self._epoch[0])

    def set_epoch(self, epoch: int) -> None:
        self._epoch[0] = int(epoch)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, Any]:
        name, image, lm_orig, orig_size, reduce = self.items[index].load(self.input_size)
        lm = lm_orig / reduce  # (17, 4, 2) in the decoded image's pixels
        if self.augment is not None:
            rng = np.random.default_rng([self.seed, self.epoch, index])
            image, lm = augment(image, lm, rng, self.augment)
        x = prepare_image(image, self.input_size)  # (1, H, W)
        lm_in = to_input(lm, original_size=image.shape, input_size=self.input_size)  # (17, 4, 2)
        item = {"image": torch.from_numpy(x)}
        item.update({k: torch.from_numpy(v) for k, v in encode(lm_in, self.input_size).items()})
        item["landmarks_input"] = torch.from_numpy(np.asarray(lm_in, dtype=np.float32))
        item["landmarks"] = torch.from_numpy(np.asarray(lm_orig, dtype=np.float64))
        item["orig_size"] = torch.tensor(orig_size, dtype=torch.int64)
        item["name"] = name
        return item


def set_dataset_epoch(dataset: Dataset, epoch: int) -> None:
    """``set_epoch`` on every SpineDataset inside ``dataset`` (through ConcatDataset and Subset)."""
    if isinstance(dataset, ConcatDataset):
        for d in dataset.datasets:
            set_dataset_epoch(d, epoch)
    elif isinstance(dataset, Subset):
        set_dataset_epoch(dataset.dataset, epoch)
    elif hasattr(dataset, "set_epoch"):
        dataset.set_epoch(epoch)
