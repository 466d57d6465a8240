"""Decode head outputs into vertebra corners (the mirror image of ``targets.py``).

The torch form, for training and validation; ``cobbnet.infer.decode`` reads the inference
network's outputs with numpy alone.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from cobbnet.infer.preprocess import to_input, to_original  # noqa: F401  (one home: infer.preprocess)
from cobbnet.nn.heads import STRIDE, gather
from cobbnet.spine.landmarks import N_CORNERS, N_VERTEBRAE

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
