"""The network input, and the one pair of functions that maps points between it and the
original image, so that training, prediction and evaluation scale the same way. No torch.

``prepare_image`` is the one place the network input is made. Coordinates measure distance
from the image's top-left edge: pixel i spans [i, i + 1), so a mirrored x is ``width - x``.
"""

from __future__ import annotations

from typing import Any, TypeVar

import cv2
import numpy as np

Points = TypeVar("Points", np.ndarray, Any)  # numpy arrays, or torch tensors (dtype and device kept)
INPUT_SIZE: tuple[int, int] = (1024, 512)  # the paper's network input (H, W) in pixels


def _resize_axis(image: np.ndarray, size: int, axis: int) -> np.ndarray:
    H, W = image.shape
    if (H, W)[axis] == size:
        return image
    interp = cv2.INTER_AREA if size < (H, W)[axis] else cv2.INTER_LINEAR
    dsize = (W, size) if axis == 0 else (size, H)  # cv2 sizes are (width, height)
    return cv2.resize(image, dsize, interpolation=interp)


def prepare_image(image: np.ndarray, input_size: tuple[int, int] = INPUT_SIZE) -> np.ndarray:
    """``(H0, W0)`` uint8 radiograph -> ``(1, H, W)`` float32 network input in [0, 1].

    The whole image is resized to ``input_size = (H, W)`` without keeping its aspect ratio
    (landmarks scale per axis, ``decode.to_input``): INTER_AREA along an axis that shrinks,
    INTER_LINEAR along one that grows. The resize runs in float32, not on the uint8 values: a
    uint8 resize rounds every input pixel, and that rounding differs between two encodings of
    one radiograph (an 8-bit JPEG and a 12-bit DICOM stretched over its own range), so it
    alone could move a level name. In float32 the input is linear in the pixel values, and the
    model's per-image standardisation cancels a change of brightness or contrast.
    The model normalises mean and std itself.
    """
    image = np.asarray(image)
    if image.ndim != 2 or image.dtype != np.uint8:
        raise ValueError(f"expected an (H, W) uint8 image, got {image.dtype} of shape {image.shape}")
    H, W = (int(s) for s in input_size)
    H0, W0 = image.shape
    image = image.astype(np.float32) * np.float32(1.0 / 255.0)
    if (H < H0) == (W < W0):  # both axes the same way: one resize
        interp = cv2.INTER_AREA if H < H0 else cv2.INTER_LINEAR
        out = cv2.resize(image, (W, H), interpolation=interp) if (H, W) != (H0, W0) else image
    else:  # one shrinks, one grows: each axis with its own interpolation
        out = _resize_axis(_resize_axis(image, H, 0), W, 1)
    return out[None]


def to_original(
    landmarks: Points, input_size: tuple[int, int], original_size: tuple[int, int]
) -> Points:
    """Map points ``(..., 2)`` from network input pixels to original image pixels.

    ``input_size = (H, W)``, ``original_size = (H0, W0)``. The whole image is resized to the
    input without keeping its aspect ratio, so each axis scales on its own:
    ``x_orig = x_in * W0 / W`` and ``y_orig = y_in * H0 / H`` (a coordinate measures distance
    from the image's top-left edge, so the image's extent [0, W] maps onto [0, W0]).
    Works on numpy arrays (returned as float64) and torch tensors (dtype and device kept).
    """
    (H, W), (H0, W0) = input_size, original_size
    return _scale(landmarks, W0 / W, H0 / H)


def to_input(
    landmarks: Points, original_size: tuple[int, int], input_size: tuple[int, int]
) -> Points:
    """Inverse of ``to_original``: ``x_in = x_orig * W / W0``, ``y_in = y_orig * H / H0``."""
    (H0, W0), (H, W) = original_size, input_size
    return _scale(landmarks, W / W0, H / H0)


def _scale(points: Points, sx: float, sy: float) -> Points:
    if hasattr(points, "new_tensor"):  # a torch tensor (torch itself is not imported here)
        dtype = points.dtype if points.is_floating_point() else None
        points = points if dtype is not None else points.float()
        return points * points.new_tensor([sx, sy])
    return np.asarray(points, dtype=np.float64) * np.array([sx, sy])
