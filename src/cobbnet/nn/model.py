"""The network: a registered backbone at stride 4 plus one small head a ``heads.HEADS`` entry.

``(B, 1, H, W)`` float in [0, 1] -> normalize -> backbone ``(B, C, H/4, W/4)`` -> heads
``hm (B,1,h,w)``, ``reg (B,2,h,w)``, ``cnr (B,8,h,w)``, ``mask (B,1,h,w)``.

``PeakNet`` is the same network for inference: the heatmap everywhere, the offsets only at
its peaks, and no mask (which training needs and reading angles does not).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from cobbnet.nn.backbones import create_backbone
from cobbnet.nn.decode import top_peaks
from cobbnet.nn.heads import HEADS, HM_BIAS, patches
from cobbnet.spine.landmarks import N_VERTEBRAE

# Grayscale normalisation, the one place it happens: timm's ImageNet mean and std averaged
# over RGB, (0.485 + 0.456 + 0.406) / 3 and (0.229 + 0.224 + 0.225) / 3, which matches the
# summed-RGB first conv that timm builds for in_chans=1 from pretrained weights.
MEAN = 0.449
STD = 0.226
INPUT_MULTIPLE = 32  # the coarsest backbone stream has stride 32
# "fixed": (x - MEAN) / STD, the paper's; "image": each image standardised by its own mean and
# std, so that any brighter or higher-contrast encoding of the same radiograph (a DICOM
# stretched over its own range, one grey level added) gives the network the same input
INPUT_NORMS: tuple[str, ...] = ("fixed", "image")
IMAGE_STD_FLOOR = 1e-3  # a blank image has no spread to divide by
PROB_EPS = 1e-4  # CenterNet's _sigmoid clamp: keeps log(p) and log(1 - p) finite in focal losses
SIGMOID_HEADS = frozenset({"hm", "mask"})  # probability maps; the others are raw offsets
MASK_PRIOR = 0.1  # vertebrae cover roughly a tenth of an AP radiograph
HEAD_BIAS: dict[str, float] = {
    "hm": HM_BIAS,
    "mask": -math.log((1 - MASK_PRIOR) / MASK_PRIOR),  # sigmoid(bias) = MASK_PRIOR
}


@dataclass
class ModelConfig:
    """What decides the network.

    ``head_channels=64``: each head's 3x3 conv reads the 270-channel HRNet map at 1/4 of a
    1024 x 512 input; at CenterNet's 256 (its DLA setting) the four heads would cost about
    80 GMAC, more than twice the HRNet-W18 backbone (34 GMAC), while 64 (CenterNet's ResNet
    setting) costs 20.
    """

    backbone: str = "hrnet_w18"
    head_channels: int = 64
    pretrained: bool = False
    input_size: tuple[int, int] = (1024, 512)  # (H, W) of the network input
    input_norm: str = "fixed"  # INPUT_NORMS

    def __post_init__(self) -> None:
        check_input_size(*self.input_size)
        if self.input_norm not in INPUT_NORMS:
            raise ValueError(f"unknown input_norm {self.input_norm!r}; expected one of {', '.join(INPUT_NORMS)}")


def check_input_size(H: int, W: int) -> None:
    """Raise ValueError unless both sides are multiples of ``INPUT_MULTIPLE``."""
    if H % INPUT_MULTIPLE or W % INPUT_MULTIPLE:
        raise ValueError(
            f"input size {H}x{W} (HxW) is not a multiple of {INPUT_MULTIPLE} on both sides; "
            "pad or resize the image first"
        )


def normalize(x: torch.Tensor, mode: str = "fixed") -> torch.Tensor:
    """``(B, 1 or 3, H, W)`` in [0, 1] -> ``(B, 1, H, W)`` standardised; RGB is averaged to gray.

    ``mode`` "fixed" uses MEAN and STD; "image" each image's own mean and std, which makes the
    result the same for ``a * x + b`` (a > 0) as for ``x``.
    """
    B, C, H, W = x.shape
    if C == 3:
        x = x.mean(dim=1, keepdim=True)
    elif C != 1:
        raise ValueError(f"expected 1 (gray) or 3 (RGB) input channels, got {C}")
    if mode == "image":
        mean = x.mean(dim=(1, 2, 3), keepdim=True)  # (B, 1, 1, 1)
        std = ((x - mean) ** 2).mean(dim=(1, 2, 3), keepdim=True).sqrt()
        return (x - mean) / std.clamp_min(IMAGE_STD_FLOOR)
    return (x - MEAN) / STD


def make_head(c_in: int, c_mid: int, c_out: int, bias: float = 0.0) -> nn.Sequential:
    """The paper's two-layer head: 3x3 conv -> ReLU -> 1x1 conv, final bias set to ``bias``."""
    head = nn.Sequential(
        nn.Conv2d(c_in, c_mid, 3, padding=1),
        nn.ReLU(inplace=True),
        nn.Conv2d(c_mid, c_out, 1),
    )
    nn.init.constant_(head[-1].bias, bias)
    return head


def clamped_sigmoid(x: torch.Tensor) -> torch.Tensor:
    """CenterNet's ``_sigmoid``: a probability kept within [PROB_EPS, 1 - PROB_EPS]."""
    return torch.sigmoid(x).clamp(PROB_EPS, 1 - PROB_EPS)


class CobbNet(nn.Module):
    """Backbone + heads; ``forward`` returns the ``heads.HEADS`` maps in float32."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.backbone = create_backbone(cfg.backbone, cfg.pretrained)
        c_in = self.backbone.out_channels
        self.outputs: tuple[str, ...] = tuple(HEADS)  # forward's keys, in order
        self.heads = nn.ModuleDict(
            {
                name: make_head(c_in, cfg.head_channels, c_out, HEAD_BIAS.get(name, 0.0))
                for name, c_out in HEADS.items()
            }
        )

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """``(B, 1, H, W)`` in [0, 1] -> ``{name: (B, HEADS[name], H/4, W/4)}``."""
        B, C, H, W = x.shape
        check_input_size(H, W)
        feats = self.backbone(normalize(x, self.cfg.input_norm))  # (B, c_in, H/4, W/4)
        out = {}
        for name, head in self.heads.items():
            # float32 whatever the autocast dtype: the decoder's peaks and offsets need it
            y = head(feats).float()
            out[name] = clamped_sigmoid(y) if name in SIGMOID_HEADS else y
            if self.training and name in SIGMOID_HEADS:  # for losses computed from logits
                out[f"{name}_logit"] = y
        return out


PEAK_HEADS: tuple[str, ...] = ("reg", "cnr")  # heads the decoder reads at the peaks only
PEAK_OUTPUTS: tuple[str, ...] = ("hm", "scores", "ind", *PEAK_HEADS)  # PeakNet.forward's keys


class PeakNet(nn.Module):
    """A CobbNet for inference: what ``decode`` reads, with the same weights and numbers.

    The decoder reads ``reg`` and ``cnr`` only at the ``k`` strongest heatmap peaks, so
    their heads run only there: each head's 3x3 conv on the 3x3 feature patch around a
    peak, as a matrix product. The ``mask`` head is not run. For hrnet_w18 at 1024 x 512
    this drops 3 of the 4 heads' dense convs, about 30 of 109 GFLOP. ``forward`` returns
    ``hm (B, 1, h, w)``, ``scores (B, k)``, ``ind (B, k)`` (flat cells, as ``top_peaks``),
    ``reg (B, k, 2)`` and ``cnr (B, k, 8)``, all float32 but ``ind`` (int64): the form
    ``decode`` accepts beside the dense heads.
    """

    def __init__(self, net: CobbNet, k: int = N_VERTEBRAE) -> None:
        super().__init__()
        self.cfg = net.cfg
        self.k = k
        self.backbone = net.backbone
        self.hm = net.heads["hm"]
        self.peak_heads = nn.ModuleDict({name: net.heads[name] for name in PEAK_HEADS})
        self.outputs = PEAK_OUTPUTS

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        B, C, H, W = x.shape
        check_input_size(H, W)
        feats = self.backbone(normalize(x, self.cfg.input_norm))  # (B, c_in, H/4, W/4)
        hm = clamped_sigmoid(self.hm(feats).float())
        scores, ind = top_peaks(hm, self.k)
        window = self.hm[0].kernel_size[0]
        local = patches(feats, ind, window)  # (B, k, c_in * 9)
        out = {"hm": hm, "scores": scores, "ind": ind}
        for name, (conv, relu, proj) in self.peak_heads.items():
            y = relu(F.linear(local, conv.weight.flatten(1), conv.bias))  # (B, k, head_channels)
            out[name] = F.linear(y, proj.weight.flatten(1), proj.bias).float()  # (B, k, HEADS[name])
        return out


def build_model(cfg: ModelConfig | None = None) -> CobbNet:
    """A CobbNet for ``cfg`` (defaults: the paper's HRNet-W18 at 1024 x 512)."""
    return CobbNet(cfg or ModelConfig())


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
