"""Backbone registry: each entry maps a grayscale image to one feature map at stride 4.

A builder is ``(pretrained: bool) -> nn.Module``; the module takes ``(B, 1, H, W)`` and
returns ``(B, out_channels, H / 4, W / 4)`` and carries an ``out_channels`` attribute.

- ``hrnet_w18`` (the paper's): HRNet's four raw streams (18, 36, 72, 144 channels at
  strides 4, 8, 16, 32) upsampled to stream 1 and concatenated, 270 channels, as in the
  paper (section II-A-1) and HRNet's own keypoint head.
- ``hrnet_w18_small_v2``: the same recipe on the smaller HRNet (same channel counts).
- ``resnet34``: ResNet-34 with the upsampling decoder of the vertebra-focused landmark
  detection network (Yi et al.), the paper's baseline, 64 channels.
"""

from __future__ import annotations

from collections.abc import Callable

import timm
import torch
import torch.nn.functional as F
from torch import nn

from cobbnet.nn.heads import STRIDE

BackboneBuilder = Callable[[bool], nn.Module]
_BACKBONES: dict[str, BackboneBuilder] = {}


def register(name: str) -> Callable[[BackboneBuilder], BackboneBuilder]:
    """Decorator adding a builder to the registry under ``name``."""

    def add(builder: BackboneBuilder) -> BackboneBuilder:
        if name in _BACKBONES:
            raise RuntimeError(f"backbone {name!r} registered twice")
        _BACKBONES[name] = builder
        return builder

    return add


def available() -> list[str]:
    """Names of the registered backbones, sorted."""
    return sorted(_BACKBONES)


def create_backbone(name: str, pretrained: bool = False) -> nn.Module:
    """Build a registered backbone; ``pretrained`` loads ImageNet weights (needs network)."""
    if name not in _BACKBONES:
        raise RuntimeError(f"unknown backbone {name!r}; registered: {', '.join(available())}")
    return _BACKBONES[name](pretrained)


def timm_features(name: str, pretrained: bool, **kwargs) -> nn.Module:
    """A timm ``features_only`` model on 1-channel input.

    With ``in_chans=1`` timm sums a pretrained first conv's RGB weights, so grayscale input
    needs no channel copies. Any failure while fetching weights becomes a RuntimeError that
    says how to go on without them.
    """
    try:
        return timm.create_model(
            name, features_only=True, pretrained=pretrained, in_chans=1, **kwargs
        )
    except Exception as err:
        if not pretrained:
            raise
        raise RuntimeError(
            f"could not download ImageNet weights for {name} (no network?): "
            f"train from scratch with pretrained=False ({type(err).__name__}: {err})"
        ) from err


class StreamConcat(nn.Module):
    """HRNet streams -> one map: bilinear upsampling to the finest stream, then concatenation."""

    def __init__(self, body: nn.Module) -> None:
        super().__init__()
        reductions = body.feature_info.reduction()
        if reductions[0] != STRIDE:
            raise RuntimeError(f"first HRNet stream has stride {reductions[0]}, expected {STRIDE}")
        self.body = body
        self.out_channels = sum(body.feature_info.channels())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.body(x)  # [(B, 18, H/4, W/4), (B, 36, H/8, W/8), ...]
        size = feats[0].shape[-2:]
        ups = [F.interpolate(f, size=size, mode="bilinear", align_corners=False) for f in feats[1:]]
        return torch.cat([feats[0], *ups], dim=1)  # (B, 270, H/4, W/4) for the W18 nets


def _hrnet(name: str, pretrained: bool) -> nn.Module:
    # feature_location='' gives the raw stage-4 streams, not the classification incre modules
    body = timm_features(name, pretrained, feature_location="", out_indices=(1, 2, 3, 4))
    return StreamConcat(body)


@register("hrnet_w18")
def hrnet_w18(pretrained: bool = False) -> nn.Module:
    return _hrnet("hrnet_w18", pretrained)


@register("hrnet_w18_small_v2")
def hrnet_w18_small_v2(pretrained: bool = False) -> nn.Module:
    return _hrnet("hrnet_w18_small_v2", pretrained)


def _conv_bn_relu(c_in: int, c_out: int, k: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, k, padding=k // 2, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class Combine(nn.Module):
    """One decoder step: upsample the coarse map, 3x3 conv to the skip's width, concat, 1x1 conv."""

    def __init__(self, c_low: int, c_skip: int) -> None:
        super().__init__()
        self.up = _conv_bn_relu(c_low, c_skip, 3)
        self.fuse = _conv_bn_relu(2 * c_skip, c_skip, 1)

    def forward(self, low: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        low = F.interpolate(low, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        return self.fuse(torch.cat([skip, self.up(low)], dim=1))


class UpsamplingDecoder(nn.Module):
    """Encoder features at strides 4..32 -> one map at stride 4 (512 -> 256 -> 128 -> 64)."""

    def __init__(self, body: nn.Module) -> None:
        super().__init__()
        channels = body.feature_info.channels()  # finest first, e.g. [64, 128, 256, 512]
        if body.feature_info.reduction()[0] != STRIDE:
            raise RuntimeError(f"finest encoder feature is not at stride {STRIDE}")
        self.body = body
        self.steps = nn.ModuleList(
            Combine(c_low, c_skip)
            for c_low, c_skip in zip(channels[:0:-1], channels[-2::-1], strict=True)
        )
        self.out_channels = channels[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.body(x)
        y = feats[-1]  # (B, 512, H/32, W/32)
        for step, skip in zip(self.steps, feats[-2::-1], strict=True):
            y = step(y, skip)
        return y  # (B, 64, H/4, W/4)


@register("resnet34")
def resnet34(pretrained: bool = False) -> nn.Module:
    return UpsamplingDecoder(timm_features("resnet34", pretrained, out_indices=(1, 2, 3, 4)))
