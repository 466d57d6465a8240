"""Read the inference network's outputs with numpy: the candidates stage 1 proposes.

The network (``cobbnet.nn.model.PeakNet``, run by ONNX Runtime or torch) returns, for its
``K`` strongest heatmap peaks: ``scores (B, K)``, flat cells ``ind (B, K)`` (``iy * w + ix``
on the ``(h, w)`` maps of ``hm (B, 1, h, w)``), centre offsets ``reg (B, K, 2)`` and corner
offsets ``cnr (B, K, 8)`` in map cells. This is the mirror image of ``cobbnet.nn.targets``'
encoding, as ``cobbnet.nn.decode`` is for torch tensors.
"""

from __future__ import annotations

import numpy as np

from cobbnet.spine.landmarks import N_CORNERS

STRIDE = 4  # output maps are 1/4 of the input in each dimension
CANDIDATES = 32  # peaks the inference network proposes; the chain picks 17 of them


def candidates(outputs: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """``(corners (B, K, 4, 2), scores (B, K))``: every peak's corners in input pixels, in
    the network's order (strongest first)."""
    hm, ind = outputs["hm"], np.asarray(outputs["ind"], dtype=np.int64)
    reg, cnr = np.asarray(outputs["reg"], np.float64), np.asarray(outputs["cnr"], np.float64)
    B, K = ind.shape
    w = hm.shape[-1]
    centre = np.stack([ind % w + reg[..., 0], ind // w + reg[..., 1]], axis=-1) * STRIDE  # (B, K, 2)
    corners = centre[:, :, None, :] + cnr.reshape(B, K, N_CORNERS, 2) * STRIDE
    return corners, np.asarray(outputs["scores"], dtype=np.float64)
