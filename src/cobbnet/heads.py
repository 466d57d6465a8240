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

HEADS: dict[str, int] = {"hm": 1, "reg": 2, "cnr": 8, "mask": 1}
STRIDE = 4  # output maps are 1/4 of the input in each dimension
HM_BIAS = -2.19  # CenterNet's heatmap bias: sigmoid(-2.19) = 0.1, a low prior for centres


def gather(feat: torch.Tensor, ind: torch.Tensor) -> torch.Tensor:
    """Read a map at flat indices: ``feat (B, C, h, w)``, ``ind (B, K)`` -> ``(B, K, C)``."""
    B, C, h, w = feat.shape
    flat = feat.reshape(B, C, h * w)
    return flat.gather(2, ind[:, None, :].expand(B, C, ind.shape[1])).permute(0, 2, 1)
