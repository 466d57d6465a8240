"""Backbone registry: names, errors, stride-4 feature maps, the offline pretrained path."""

from __future__ import annotations

import pytest
import timm.models._builder
import torch

from cobbnet.nn import backbones

EXPECTED = {"hrnet_w18", "hrnet_w18_small_v2", "resnet34"}


pytestmark = pytest.mark.usefixtures("one_thread")


def test_registry_lists_the_three_backbones() -> None:
    assert EXPECTED <= set(backbones.available())


def test_unknown_name_lists_registered_ones() -> None:
    with pytest.raises(RuntimeError) as err:
        backbones.create_backbone("vgg16")
    for name in EXPECTED:
        assert name in str(err.value)


def test_registering_a_name_twice_fails() -> None:
    with pytest.raises(RuntimeError, match="twice"):
        backbones.register("resnet34")(lambda pretrained: torch.nn.Identity())


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_features_at_stride_4_with_declared_channels(name: str) -> None:
    net = backbones.create_backbone(name).eval()
    with torch.no_grad():
        y = net(torch.rand(2, 1, 96, 64))
    assert y.shape == (2, net.out_channels, 24, 16)
    assert torch.isfinite(y).all()


@pytest.mark.parametrize("name", ["hrnet_w18", "hrnet_w18_small_v2"])
def test_hrnet_concatenates_its_four_streams(name: str) -> None:
    net = backbones.create_backbone(name)
    # the four raw streams of the W18 family: 18, 36, 72, 144 channels at strides 4..32
    assert net.body.feature_info.channels() == [18, 36, 72, 144]
    assert net.body.feature_info.reduction() == [4, 8, 16, 32]
    assert net.out_channels == 270


def test_resnet34_decodes_to_64_channels() -> None:
    net = backbones.create_backbone("resnet34")
    assert net.out_channels == 64
    assert net.body.feature_info.channels() == [64, 128, 256, 512]


def _offline(*args, **kwargs):
    raise OSError("network is unreachable")


def test_pretrained_without_network_says_how_to_go_on(monkeypatch: pytest.MonkeyPatch) -> None:
    # the weight download is the last step of timm's builder; make it fail as it would offline
    monkeypatch.setattr(timm.models._builder, "load_pretrained", _offline)
    with pytest.raises(RuntimeError) as err:
        backbones.create_backbone("hrnet_w18", pretrained=True)
    message = str(err.value)
    assert "could not download ImageNet weights for hrnet_w18" in message
    assert "pretrained=False" in message
    assert isinstance(err.value.__cause__, OSError)


def test_from_scratch_never_downloads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(timm.models._builder, "load_pretrained", _offline)
    assert backbones.create_backbone("hrnet_w18_small_v2", pretrained=False).out_channels == 270
