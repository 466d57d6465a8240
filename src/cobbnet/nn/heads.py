"""The heads spec: one table decides the network's heads, the targets, the losses and the decoder.

``hm``   center heatmap, 1 channel (sigmoid);
``reg``  center offset, 2 channels: sub-pixel remainder of centre / STRIDE, at the integer centre;
``cnr``  corner offsets, 8 channels: the 4 corners (TL, TR, BL, BR) minus the centre, (x, y)
         interleaved, in output-map units, at the integer centre;
``mask`` semantic spine mask, 1 channel (sigmoid).

One flat-index convention: a vertebra whose centre falls in map cell (ix, iy) has
``ind = iy * w + ix``; the loss and the decoder both read predictions through ``gather``.
"""

from __future__ import annotations

import torch

from cobbnet.infer.decode import STRIDE  # noqa: F401  (its home: the numpy decoder)

HEADS: dict[str, int] = {"hm": 1, "reg": 2, "cnr": 8, "mask": 1}

HM_BIAS = -2.19  # CenterNet's heatmap bias: sigmoid(-2.19) = 0.1, a low prior for centres


def gather(feat: torch.Tensor, ind: torch.Tensor) -> torch.Tensor:
    """Read a map at flat indices: ``feat (B, C, h, w)``, ``ind (B, K)`` -> ``(B, K, C)``."""
    B, C, h, w = feat.shape
    flat = feat.reshape(B, C, h * w)
    return flat.gather(2, ind[:, None, :].expand(B, C, ind.shape[1])).permute(0, 2, 1)


def patches(feat: torch.Tensor, ind: torch.Tensor, size: int = 3) -> torch.Tensor:
    """The zero-padded ``size x size`` neighbourhoods of flat indices, as a conv reads them.

    ``feat (B, C, h, w)``, ``ind (B, K)`` -> ``(B, K, C * size * size)``, flattened in the
    order of a ``Conv2d`` weight's ``(C, size, size)``: so a ``size x size`` conv with
    ``padding = size // 2`` at those cells is ``F.linear(patches, weight.flatten(1), bias)``.
    Cells outside the map read 0 (gathered at a clamped cell, then masked, so the map itself
    is never copied into a padded one).
    """
    B, C, h, w = feat.shape
    K = ind.shape[1]
    d = torch.arange(size, device=ind.device) - size // 2
    ys = torch.div(ind, w, rounding_mode="floor")[:, :, None] + d  # (B, K, size)
    xs = (ind % w)[:, :, None] + d
    inside = ((ys >= 0) & (ys < h))[:, :, :, None] & ((xs >= 0) & (xs < w))[:, :, None, :]
    flat = ys.clamp(0, h - 1)[:, :, :, None] * w + xs.clamp(0, w - 1)[:, :, None, :]  # (B, K, size, size)
    out = feat.reshape(B, C, h * w).gather(2, flat.reshape(B, 1, -1).expand(B, C, -1))
    out = out.reshape(B, C, K, size * size) * inside.reshape(B, 1, K, size * size).to(feat.dtype)
    return out.permute(0, 2, 1, 3).reshape(B, K, C * size * size)
