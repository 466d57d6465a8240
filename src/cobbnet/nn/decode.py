"""Decode head outputs into vertebra corners (the mirror image of ``targets.py``).

Also the one pair of functions that maps landmarks between the network input and the
original image (``to_input`` / ``to_original``), so that the data pipeline and the predictor
scale points the same way.
"""

from __future__ import annotations

from typing import TypeVar

import numpy as np
import torch
import torch.nn.functional as F

from cobbnet.nn.heads import STRIDE, gather
from cobbnet.spine.landmarks import N_CORNERS, N_VERTEBRAE

Points = TypeVar("Points", np.ndarray, torch.Tensor)

NMS_KERNEL = 3  # a peak must be no lower than its eight neighbours (paper, II-A-6)


def peaks(hm: torch.Tensor) -> torch.Tensor:
    """Keep the 3x3 local maxima of ``hm (B, 1, h, w)`` and zero every other cell.

    Cells of a plateau all equal their pooled value and are all kept, as in CenterNet.
    """
    pooled = F.max_pool2d(hm, NMS_KERNEL, stride=1, padding=NMS_KERNEL // 2)
    return hm * (pooled == hm).to(hm.dtype)


def top_peaks(hm: torch.Tensor, k: int = N_VERTEBRAE) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` strongest 3x3 peaks of ``hm (B, 1, h, w)``: ``scores (B, k)``, flat ``ind (B, k)``.

    On a map with fewer than ``k`` cells the rest are cell 0 with score 0 ("not found").
    """
    B, _, h, w = hm.shape
    flat = peaks(hm).reshape(B, h * w)
    n = min(k, h * w)
    scores, ind = torch.topk(flat, n, dim=1)  # (B, n)
    if n < k:  # a map with fewer cells than vertebrae: pad with "not found"
        scores = torch.cat([scores, scores.new_zeros(B, k - n)], dim=1)
        ind = torch.cat([ind, ind.new_zeros(B, k - n)], dim=1)
    return scores, ind


def decode(
    outputs: dict[str, torch.Tensor], k: int = N_VERTEBRAE
) -> tuple[torch.Tensor, torch.Tensor]:
    """Corners of the ``k`` strongest centre peaks, in INPUT pixels, top to bottom.

    ``outputs``: ``hm (B, 1, h, w)`` already sigmoid-activated, ``reg (B, 2, h, w)``,
    ``cnr (B, 8, h, w)`` (other keys are ignored). Returns ``landmarks (B, k, 4, 2)`` float
    (corners TL, TR, BL, BR, (x, y)) and ``scores (B, k)``, both sorted top to bottom by
    the y of the mean of the four corners.

    Outputs of :class:`cobbnet.nn.model.PeakNet`, which has already picked the peaks, are read
    as they are: ``scores (B, k)``, ``ind (B, k)``, ``reg (B, k, 2)``, ``cnr (B, k, 8)``.

    Always ``k`` vertebrae: when the heatmap holds fewer than ``k`` peaks, the rest are
    read at suppressed cells (or, on a map smaller than ``k`` cells, at cell 0) with score 0;
    a flat heatmap yields cells of equal, low score. A score near 0 means "not found".
    """
    hm, reg, cnr = outputs["hm"], outputs["reg"], outputs["cnr"]
    B, _, h, w = hm.shape
    if "ind" in outputs:  # offsets already read at the peaks
        scores, ind, off, cnr_k = outputs["scores"], outputs["ind"], reg, cnr
        k = ind.shape[1]
    else:
        scores, ind = top_peaks(hm, k)
        off, cnr_k = gather(reg, ind), gather(cnr, ind)  # (B, k, 2), (B, k, 8)

    ix = (ind % w).to(off.dtype)
    iy = torch.div(ind, w, rounding_mode="floor").to(off.dtype)
    center = torch.stack([ix + off[..., 0], iy + off[..., 1]], dim=-1) * STRIDE  # (B, k, 2)
    corners = cnr_k.reshape(B, k, N_CORNERS, 2) * STRIDE  # (B, k, 4, 2)
    landmarks = center[:, :, None, :] + corners

    # top to bottom by the mean of the corners, the centre every other module uses
    # (landmarks.centers); it equals the peak's centre when the corner offsets are consistent
    order = torch.argsort(landmarks[..., 1].mean(dim=2), dim=1, stable=True)  # (B, k)
    landmarks = torch.take_along_dim(landmarks, order[:, :, None, None], dim=1)
    return landmarks, torch.take_along_dim(scores, order, dim=1)


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
    if isinstance(points, torch.Tensor):
        dtype = points.dtype if points.is_floating_point() else torch.float32
        return points.to(dtype) * torch.tensor([sx, sy], dtype=dtype, device=points.device)
    return np.asarray(points, dtype=np.float64) * np.array([sx, sy])
