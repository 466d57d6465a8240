"""Vertebra patches for the corner stage (stage 2): cut them from the original radiograph and
map corners found in them back. No torch: the predictor runs this with ONNX Runtime.

A vertebra's *frame* is ``(cx, cy, angle, width)`` in original pixels: the mean of its four
corners, the tilt of its endplates (radians, image y down, so a positive angle turns the
vertebra clockwise on screen) and its mean endplate length. Its patch is a square of
``PATCH_SCALE * width`` original pixels centred on it and turned with it, resampled to
``PATCH_SIZE x PATCH_SIZE``, so the vertebra lies level in the middle with parts of its
neighbours above and below.

Coordinates measure distance from the top-left edge (pixel i spans [i, i + 1)), in the image
and in the patch alike. A patch point ``u (2,)`` maps to the image as
``X = c + s * R(angle) @ (u - PATCH_SIZE / 2)`` with ``s = PATCH_SCALE * width / PATCH_SIZE``
original pixels per patch pixel; ``to_patch`` is its inverse.
"""

from __future__ import annotations

import cv2
import numpy as np

from cobbnet.spine.landmarks import BL, BR, TL, TR

PATCH_SIZE = 64  # patch pixels per side
PATCH_SHAPE = (PATCH_SIZE, PATCH_SIZE)
PATCH_SCALE = 2.0  # patch side / vertebra width: the vertebra and the near halves of its neighbours
MIN_WIDTH = 8.0  # original pixels: a narrower frame (a degenerate detection) is widened to this


def frames(corners: np.ndarray) -> np.ndarray:
    """``(..., 4, 2)`` corners TL, TR, BL, BR -> ``(..., 4)`` frames ``(cx, cy, angle, width)``."""
    c = np.asarray(corners, dtype=np.float64)
    centre = c.mean(axis=-2)
    top, bottom = c[..., TR, :] - c[..., TL, :], c[..., BR, :] - c[..., BL, :]
    d = top + bottom
    angle = np.arctan2(d[..., 1], d[..., 0])
    width = (np.linalg.norm(top, axis=-1) + np.linalg.norm(bottom, axis=-1)) / 2.0
    return np.concatenate([centre, angle[..., None], np.maximum(width, MIN_WIDTH)[..., None]], axis=-1)


def _rotations(angle: np.ndarray) -> np.ndarray:
    """``(N,)`` radians -> ``(N, 2, 2)`` rotation matrices."""
    cos, sin = np.cos(angle), np.sin(angle)
    return np.stack([np.stack([cos, -sin], -1), np.stack([sin, cos], -1)], -2)


def _scale(frame: np.ndarray) -> np.ndarray:
    return PATCH_SCALE * frame[..., 3] / PATCH_SIZE  # original pixels per patch pixel


def to_image(points: np.ndarray, frame: np.ndarray) -> np.ndarray:
    """Patch points ``(N, K, 2)`` of the patches of frames ``(N, 4)`` -> image points ``(N, K, 2)``."""
    frame = np.asarray(frame, dtype=np.float64)
    R = _rotations(frame[:, 2]) * _scale(frame)[:, None, None]  # (N, 2, 2)
    local = np.asarray(points, dtype=np.float64) - PATCH_SIZE / 2.0
    return np.einsum("nij,nkj->nki", R, local) + frame[:, None, :2]


def to_patch(points: np.ndarray, frame: np.ndarray) -> np.ndarray:
    """Inverse of ``to_image``: image points ``(N, K, 2)`` -> patch points ``(N, K, 2)``."""
    frame = np.asarray(frame, dtype=np.float64)
    Rt = np.swapaxes(_rotations(frame[:, 2]), 1, 2) / _scale(frame)[:, None, None]
    local = np.asarray(points, dtype=np.float64) - frame[:, None, :2]
    return np.einsum("nij,nkj->nki", Rt, local) + PATCH_SIZE / 2.0


def cut(image: np.ndarray, frame: np.ndarray) -> np.ndarray:
    """The patches of frames ``(N, 4)`` from an ``(H, W)`` uint8 radiograph: ``(N, P, P)`` uint8.

    Each is sampled at an integer multiple ``k`` of the patch grid (``k`` about the scale, so
    no source pixel is skipped) and area-averaged down by ``k``: a shrink without aliasing
    that keeps ``to_image`` exact. Outside the image the border pixel is repeated.
    """
    frame = np.asarray(frame, dtype=np.float64).reshape(-1, 4)
    out = np.empty((len(frame), PATCH_SIZE, PATCH_SIZE), dtype=np.uint8)
    for i, f in enumerate(frame):
        k = int(max(1, np.floor(_scale(f))))
        big = PATCH_SIZE * k
        s = _scale(f) / k
        R = _rotations(np.array([f[2]]))[0] * s
        # cv2 samples dst pixel centre (j, i) at src M @ (j, i, 1); its centres sit at integers
        t = f[:2] + R @ np.full(2, 0.5 - big / 2.0) - 0.5
        M = np.concatenate([R, t[:, None]], axis=1)
        patch = cv2.warpAffine(image, M, (big, big), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                               borderMode=cv2.BORDER_REPLICATE)
        out[i] = patch if k == 1 else cv2.resize(patch, (PATCH_SIZE, PATCH_SIZE), interpolation=cv2.INTER_AREA)
    return out


def jitter(frame: np.ndarray, rng: np.random.Generator, centre: float, angle_deg: float,
           scale: float) -> np.ndarray:
    """Frames ``(N, 4)`` moved at random: the centre by ``N(0, centre * width)`` on each axis,
    the tilt by ``N(0, angle_deg)`` degrees and the width by a factor ``exp(N(0, scale))``,
    each draw clipped at 2.5 sigma."""
    f = np.array(frame, dtype=np.float64, copy=True).reshape(-1, 4)
    z = np.clip(rng.standard_normal((len(f), 4)), -2.5, 2.5)
    f[:, :2] += z[:, :2] * centre * f[:, 3:4]
    f[:, 2] += np.deg2rad(angle_deg) * z[:, 2]
    f[:, 3] *= np.exp(scale * z[:, 3])
    return f
