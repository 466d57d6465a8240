"""FWT: fill every vertebra quadrilateral with white on a black template (paper, eq. 1).

``fill_quads(corners (B, K, 4, 2), size (h, w))`` -> ``(B, 1, h, w)`` in map units, corners
in the landmark order TL, TR, BL, BR. Map cell (ix, iy) is tested at its centre
(ix + 0.5, iy + 0.5), the convention of docs/architecture.md.

- ``hard``: the literal fill, ``targets.fill_mask`` image by image (the very function that
  draws the ground-truth masks), 1 where a cell centre lies inside a quad, else 0; it carries
  no gradient, so with it the consistency loss trains only the mask head.
- ``soft``: a differentiable fill. Each cell centre gets its signed distance d_e to each of
  the quad's 4 edges (positive inside); its inside-ness is the product of sigmoid(d_e / tau),
  and the union over vertebrae is 1 - prod_v (1 - inside_v). As tau -> 0 it becomes ``hard``.

The soft fill treats a quad as the intersection of its edges' inner half-planes, oriented by
the quad's signed area so that a mirrored corner order fills the same cells: exact for convex
quads, which vertebrae are (``hard`` fills a self-intersecting quad by the even-odd rule).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from cobbnet.nn.targets import POLYGON_ORDER, fill_mask

_LENGTH_EPS = 1e-6  # map units^2: an edge whose corners meet keeps a finite gradient
_AREA_EPS = 1e-9  # twice the area (map units^2) below which a quad fills nothing


def edge_distances(
    corners: torch.Tensor, size: tuple[int, int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Signed distances of every cell centre to every quad edge.

    ``corners (B, K, 4, 2)`` in map units -> ``d (B, K, 4, h, w)``, positive on the inner
    side of each edge, and ``proper (B, K)``: False for quads of zero area, which have no
    inside.
    """
    h, w = size
    p = corners[:, :, POLYGON_ORDER, :]  # (B, K, 4, 2) a closed path
    q = p.roll(-1, dims=2)  # the next vertex along the path
    e = q - p  # (B, K, 4, 2) edge vectors
    area2 = (p[..., 0] * q[..., 1] - q[..., 0] * p[..., 1]).sum(dim=-1)  # (B, K) shoelace
    orient = torch.where(area2 >= 0, 1.0, -1.0).to(corners.dtype)  # no gradient: piecewise constant
    inv_len = orient[..., None] / torch.sqrt((e * e).sum(dim=-1) + _LENGTH_EPS)  # (B, K, 4)
    # d = cross(e, c - p) / |e| = a * cx + b * cy + k, a linear function of the cell centre c
    a = -e[..., 1] * inv_len
    b = e[..., 0] * inv_len
    k = (e[..., 1] * p[..., 0] - e[..., 0] * p[..., 1]) * inv_len
    xs = torch.arange(w, dtype=corners.dtype, device=corners.device) + 0.5
    ys = torch.arange(h, dtype=corners.dtype, device=corners.device) + 0.5
    d = (
        a[..., None, None] * xs[None, :] + b[..., None, None] * ys[:, None] + k[..., None, None]
    )  # (B, K, 4, h, w)
    return d, area2.abs() > _AREA_EPS


def _soft_fill(
    corners: torch.Tensor, size: tuple[int, int], tau: float, valid: torch.Tensor | None
) -> torch.Tensor:
    d, proper = edge_distances(corners, size)  # (B, K, 4, h, w), (B, K)
    # product of the 4 sigmoids, summed in log space so a small tau cannot underflow a factor
    inside = F.logsigmoid(d / tau).sum(dim=2).exp()  # (B, K, h, w)
    keep = proper.to(inside.dtype)
    if valid is not None:
        keep = keep * valid.to(inside.dtype)
    inside = inside * keep[..., None, None]
    return 1 - torch.prod(1 - inside, dim=1, keepdim=True)  # (B, 1, h, w) union


def _hard_fill(
    corners: torch.Tensor, size: tuple[int, int], tau: float, valid: torch.Tensor | None
) -> torch.Tensor:
    B, K = corners.shape[:2]
    quads = corners.detach().cpu().double().numpy()  # a step function: no useful gradient
    keep = np.ones((B, K), bool) if valid is None else valid.detach().cpu().numpy() > 0
    masks = np.stack([fill_mask(quads[i][keep[i]], size) for i in range(B)])  # (B, h, w)
    return torch.from_numpy(masks)[:, None].to(device=corners.device, dtype=corners.dtype)


MODES: dict[str, Callable[..., torch.Tensor]] = {"soft": _soft_fill, "hard": _hard_fill}


def fill_quads(
    corners: torch.Tensor,
    size: tuple[int, int],
    mode: str = "soft",
    tau: float = 0.5,
    valid: torch.Tensor | None = None,
) -> torch.Tensor:
    """Fill K quads a spine into a ``(B, 1, h, w)`` mask.

    ``corners (B, K, 4, 2)`` map units (x, y), corners TL, TR, BL, BR; ``valid (B, K)``
    (1 keeps a quad, 0 drops it; default all kept); ``tau`` in map units is the soft edge's
    width: sigmoid(d / tau) goes from 0.12 to 0.88 between 2 tau outside and 2 tau inside.
    """
    if mode not in MODES:
        raise ValueError(f"unknown fill mode {mode!r}; expected one of {', '.join(MODES)}")
    if tau <= 0:
        raise ValueError(f"tau must be positive, got {tau}")
    if corners.dim() != 4 or tuple(corners.shape[-2:]) != (4, 2):
        raise ValueError(f"corners must have shape (B, K, 4, 2), got {tuple(corners.shape)}")
    return MODES[mode](corners, size, tau, valid)  # (B, 1, h, w)
