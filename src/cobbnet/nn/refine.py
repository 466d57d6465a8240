"""The corner network of stage 2: one vertebra patch in, its four corners out.

``(N, 1, P, P)`` patch in [0, 1] (``spine.patches``: the vertebra level in the middle) ->
``(N, 4, 2)`` corners TL, TR, BL, BR in patch pixels. Two read-outs of one small encoder:

- ``heatmap``: a feature pyramid back to P/``out_stride`` (2 or 4) and one heatmap per corner,
  read by a soft-argmax (the expected position under the softmax of the map), so the output
  is sub-pixel and the loss is on coordinates;
- ``offsets``: the corners regressed from the P/16 feature map by a small MLP.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from cobbnet.spine.landmarks import N_CORNERS
from cobbnet.spine.patches import PATCH_SIZE

HEADS: tuple[str, ...] = ("heatmap", "offsets")
OUT_STRIDES: tuple[int, ...] = (2, 4)  # the pyramid levels a heatmap read-out can sit at


@dataclass
class RefineConfig:
    """What decides the corner network."""

    head: str = "heatmap"
    width: int = 24  # channels of the first stage; each later stage doubles them
    patch_size: int = PATCH_SIZE
    # the heatmaps' cell in patch pixels: 2, or 4 for a read-out at P/4 that costs 40 % fewer
    # operations a patch (its 3 x 3 convolution runs on a quarter of the cells)
    out_stride: int = 2

    def __post_init__(self) -> None:
        if self.head not in HEADS:
            raise ValueError(f"unknown refine head {self.head!r}; expected one of {', '.join(HEADS)}")
        if self.out_stride not in OUT_STRIDES:
            raise ValueError(f"refine out_stride {self.out_stride}: expected one of {', '.join(map(str, OUT_STRIDES))}")

    def to_dict(self) -> dict:
        return asdict(self)


def conv_bn(c_in: int, c_out: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), nn.BatchNorm2d(c_out),
                         nn.ReLU(inplace=True))


def stage(c_in: int, c_out: int, stride: int) -> nn.Sequential:
    return nn.Sequential(conv_bn(c_in, c_out, stride), conv_bn(c_out, c_out))


def standardize(x: torch.Tensor) -> torch.Tensor:
    """Each patch to zero mean and unit spread: exposure and contrast differ between radiographs."""
    mean = x.mean(dim=(2, 3), keepdim=True)
    std = (x - mean).pow(2).mean(dim=(2, 3), keepdim=True).sqrt()
    return (x - mean) / (std + 0.02)


def soft_argmax(logits: torch.Tensor, stride: float) -> torch.Tensor:
    """``(N, K, h, w)`` maps -> ``(N, K, 2)`` expected cell centres, in pixels of ``stride`` per cell."""
    N, K, h, w = logits.shape
    prob = logits.flatten(2).softmax(dim=-1).reshape(N, K, h, w)
    xs = (torch.arange(w, dtype=prob.dtype, device=prob.device) + 0.5) * stride
    ys = (torch.arange(h, dtype=prob.dtype, device=prob.device) + 0.5) * stride
    x = (prob.sum(dim=2) * xs).sum(dim=-1)
    y = (prob.sum(dim=3) * ys).sum(dim=-1)
    return torch.stack([x, y], dim=-1)


class CornerNet(nn.Module):
    """Four stages (P/2, P/4, P/8, P/16) and the configured read-out."""

    def __init__(self, cfg: RefineConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg = cfg or RefineConfig()
        c = cfg.width
        # strides 2, 4, 8, 16: a CPU budget (a full-resolution first stage would cost 3 times more)
        self.stages = nn.ModuleList([stage(1, c, 2), stage(c, 2 * c, 2), stage(2 * c, 4 * c, 2),
                                     stage(4 * c, 8 * c, 2)])
        P = cfg.patch_size
        if cfg.head == "heatmap":
            self.top = OUT_STRIDES.index(cfg.out_stride)  # the finest pyramid level read
            # levels finer than the read-out have no lateral (an empty placeholder keeps the indices)
            self.lateral = nn.ModuleList([nn.Conv2d(c * 2**i, 2 * c, 1) if i >= self.top else nn.Identity()
                                          for i in range(4)])
            self.out = nn.Sequential(conv_bn(2 * c, 2 * c), nn.Conv2d(2 * c, N_CORNERS, 1))
        else:
            self.reduce = nn.Conv2d(8 * c, 32, 1)
            self.mlp = nn.Sequential(nn.Flatten(), nn.Linear(32 * (P // 16) ** 2, 256), nn.ReLU(inplace=True),
                                     nn.Linear(256, 2 * N_CORNERS))
            nn.init.zeros_(self.mlp[-1].weight)
            nn.init.zeros_(self.mlp[-1].bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, 1, P, P)`` in [0, 1] -> ``(N, 4, 2)`` corners in patch pixels."""
        N, _, H, W = x.shape
        feats = []
        y = standardize(x)
        for s in self.stages:
            y = s(y)
            feats.append(y)  # (N, c, P/2), (N, 2c, P/4), (N, 4c, P/8), (N, 8c, P/16)
        if self.cfg.head == "offsets":
            out = self.mlp(F.relu(self.reduce(feats[-1]))).reshape(N, N_CORNERS, 2)
            return out * W + W / 2.0  # around the patch centre, in patch pixels
        top = self.lateral[3](feats[3])
        for i in range(2, self.top - 1, -1):  # up to P/out_stride, adding each stage on the way
            top = self.lateral[i](feats[i]) + F.interpolate(top, size=feats[i].shape[-2:], mode="nearest")
        return soft_argmax(self.out(top), W / top.shape[-1])  # (N, 4, 2)
