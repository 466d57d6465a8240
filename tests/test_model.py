"""The network: shapes, gradients, input checks, channels_last, bf16, and overfitting one spine."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cobbnet.io import synthetic
from cobbnet.nn import backbones, targets
from cobbnet.nn.decode import decode
from cobbnet.nn.heads import HEADS, HM_BIAS, STRIDE, gather
from cobbnet.nn.losses import LossConfig, compute_losses
from cobbnet.nn.model import (
    PEAK_OUTPUTS,
    PROB_EPS,
    CobbNet,
    ModelConfig,
    PeakNet,
    build_model,
    count_parameters,
    normalize,
)
from cobbnet.spine.landmarks import N_VERTEBRAE

BACKBONES = backbones.available()


pytestmark = pytest.mark.usefixtures("one_thread")


def _model(backbone: str = "hrnet_w18_small_v2", **kwargs) -> CobbNet:
    torch.manual_seed(0)
    return build_model(ModelConfig(backbone=backbone, **kwargs))


def _calibrated(model: CobbNet, x: torch.Tensor) -> CobbNet:
    """Set every batch-norm's running statistics to those of ``x``; return the model in eval.

    An untrained net's running statistics (mean 0, variance 1) let activations grow through
    the layers until every probability saturates, which would hide what a test looks for.
    """
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.momentum = 1.0
    model.train()
    with torch.no_grad():
        model(x)
    return model.eval()


@pytest.mark.parametrize("backbone", BACKBONES)
def test_head_shapes_at_two_input_sizes(backbone: str) -> None:
    model = _model(backbone).eval()
    for H, W in [(256, 128), (320, 160)]:
        with torch.no_grad():
            out = model(torch.rand(1, 1, H, W))
        assert set(out) == set(HEADS)
        for name, channels in HEADS.items():
            assert out[name].shape == (1, channels, H // STRIDE, W // STRIDE), name
            assert out[name].dtype == torch.float32
            assert torch.isfinite(out[name]).all(), name
        for name in ("hm", "mask"):
            assert out[name].min() >= PROB_EPS and out[name].max() <= 1 - PROB_EPS


@pytest.mark.parametrize("backbone", BACKBONES)
def test_every_parameter_receives_a_gradient(backbone: str) -> None:
    model = _model(backbone).train()
    out = model(torch.rand(2, 1, 64, 64))
    sum(v.mean() for v in out.values()).backward()
    for n, p in model.named_parameters():
        assert p.grad is not None, f"No gradient for {n}"
        assert torch.isfinite(p.grad).all(), f"Non-finite gradient for {n}"


def test_input_sides_must_be_multiples_of_32() -> None:
    model = _model().eval()
    with pytest.raises(ValueError, match="multiple of 32"):
        model(torch.rand(1, 1, 100, 64))
    with pytest.raises(ValueError, match="multiple of 32"):
        ModelConfig(input_size=(1000, 512))


def test_rgb_input_is_averaged_to_gray() -> None:
    model = _model().eval()
    rgb = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        a, b = model(rgb), model(rgb.mean(dim=1, keepdim=True))
    for name in HEADS:
        torch.testing.assert_close(a[name], b[name])
    with pytest.raises(ValueError, match="channels"):
        model(torch.rand(1, 2, 64, 64))


def test_sigmoid_heads_are_clamped_and_start_at_a_low_prior() -> None:
    x = torch.rand(1, 1, 64, 64)
    model = _calibrated(_model(), x)
    assert model.heads["hm"][-1].bias.detach().eq(HM_BIAS).all()
    with torch.no_grad():
        out = model(x)
        assert out["hm"].median() < 0.5 and out["mask"].median() < 0.5
        model.heads["hm"][-1].bias.fill_(100.0)  # saturate: the clamp must hold
        assert model(x)["hm"].max() == pytest.approx(1 - PROB_EPS)


def test_channels_last_and_bf16_autocast_run() -> None:
    x = torch.rand(1, 1, 64, 64)
    model = _calibrated(_model(), x)
    with torch.no_grad():
        ref = model(x)
        model_cl = model.to(memory_format=torch.channels_last)
        out_cl = model_cl(x.to(memory_format=torch.channels_last))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out_bf = model_cl(x)
    for name in HEADS:
        torch.testing.assert_close(out_cl[name], ref[name], rtol=1e-3, atol=1e-3)
        assert out_bf[name].dtype == torch.float32, name  # decode needs float32 maps
        assert torch.isfinite(out_bf[name]).all(), name
    # bf16 keeps ~3 significant digits: close on average, not cell by cell
    assert (out_bf["hm"] - ref["hm"]).abs().mean() < 0.05


def test_parameter_count_is_reported() -> None:
    model = _model()
    assert count_parameters(model) == sum(p.numel() for p in model.parameters())
    assert 3e6 < count_parameters(model) < 6e6  # HRNet-W18-small-v2 (3.9 M) + the heads


def test_overfits_one_synthetic_radiograph() -> None:
    """The whole chain (targets -> network -> loss -> decode) can learn one spine exactly."""
    size = (256, 128)
    image, lm = synthetic.make_radiograph(np.random.default_rng(0), size=size)
    x = torch.from_numpy(image)[None, None].float() / 255  # (1, 1, 256, 128)
    batch = {k: torch.from_numpy(v)[None] for k, v in targets.encode(lm, input_size=size).items()}

    model = _model(input_size=size).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    # warm-up: Adam's first steps at full rate move every heatmap logit far below the sigmoid
    # clamp at once, where the clamped focal loss has no gradient left to bring it back
    warmup = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: min(1.0, (step + 1) / 10))
    losses = []
    for _ in range(30):
        loss = compute_losses(model(x), batch, LossConfig())["total"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        warmup.step()
        losses.append(loss.item())

    # 30 steps leave the running batch-norm statistics behind the weights: take this image's
    _calibrated(model, x)
    with torch.no_grad():
        pred, scores = decode(model(x))
    error = np.linalg.norm(pred[0].numpy() - lm, axis=-1)  # (17, 4) input pixels
    assert losses[-1] < 0.25 * losses[0]
    assert error.mean() < 3.0, f"mean corner error {error.mean():.2f} px"
    assert scores.min() > 0.2  # every vertebra found as a clear peak


@pytest.mark.parametrize("backbone", BACKBONES)
def test_peak_net_decodes_to_what_the_dense_heads_decode_to(backbone: str) -> None:
    x = torch.rand(2, 1, 256, 128, generator=torch.Generator().manual_seed(1))
    model = _calibrated(_model(backbone), x)
    # a heatmap with clear peaks, some at the map's border where the 3x3 window leaves it
    with torch.no_grad():
        model.heads["hm"][-1].bias.fill_(0.0)
    net = PeakNet(model).eval()
    assert net.backbone is model.backbone  # the same weights, not a copy
    with torch.no_grad():
        dense, sparse = model(x), net(x)
    h, w = 256 // STRIDE, 128 // STRIDE
    assert tuple(sparse) == net.outputs == PEAK_OUTPUTS
    assert sparse["hm"].shape == (2, 1, h, w) and sparse["ind"].dtype == torch.int64
    assert sparse["reg"].shape == (2, N_VERTEBRAE, 2) and sparse["cnr"].shape == (2, N_VERTEBRAE, 8)
    torch.testing.assert_close(sparse["hm"], dense["hm"])
    (lm_d, sc_d), (lm_s, sc_s) = decode(dense), decode(sparse)
    torch.testing.assert_close(sc_s, sc_d)
    torch.testing.assert_close(lm_s, lm_d, rtol=1e-4, atol=1e-3)  # input px: summation order only
    # offsets read where the dense maps hold them
    torch.testing.assert_close(sparse["cnr"], gather(dense["cnr"], sparse["ind"]), rtol=1e-4, atol=1e-4)


def test_peak_net_skips_the_dense_offset_and_mask_heads() -> None:
    from bench import count_gflops

    model = _model("hrnet_w18_small_v2").eval()
    size = (256, 128)
    dense, sparse = count_gflops(model, size), count_gflops(PeakNet(model), size)
    h, w = size[0] // STRIDE, size[1] // STRIDE
    c_in, c_mid = model.backbone.out_channels, model.cfg.head_channels
    head_3x3 = 2 * h * w * c_in * 9 * c_mid / 1e9  # one head's dense 3x3 conv
    assert dense - sparse == pytest.approx(3 * head_3x3, rel=0.02)  # reg, cnr and mask


def test_image_norm_is_the_same_for_any_brightness_and_contrast() -> None:
    x = torch.rand(2, 1, 64, 32, generator=torch.Generator().manual_seed(0))
    ref = normalize(x, "image")
    assert ref.mean(dim=(1, 2, 3)).abs().max() < 1e-5
    torch.testing.assert_close(ref.std(dim=(1, 2, 3), unbiased=False), torch.ones(2), atol=1e-4, rtol=0)
    for a, b in ((2.0, 0.0), (0.5, 0.3), (1.0, 1 / 255)):  # contrast, brightness, one grey level
        torch.testing.assert_close(normalize(a * x + b, "image"), ref, atol=1e-4, rtol=0)
    assert torch.isfinite(normalize(torch.full((1, 1, 8, 8), 0.5), "image")).all()  # a blank image
    assert not torch.allclose(normalize(x + 0.1), normalize(x))  # the fixed constants are not


def test_image_norm_network_reads_a_brighter_copy_alike() -> None:
    x = torch.rand(1, 1, 64, 64, generator=torch.Generator().manual_seed(1)) * 0.6
    model = _calibrated(_model(input_norm="image"), x)
    with torch.no_grad():
        ref, brighter = model(x), model(1.2 * x + 0.05)
    for name in HEADS:
        torch.testing.assert_close(brighter[name], ref[name], atol=1e-3, rtol=1e-3)
    with pytest.raises(ValueError, match="input_norm"):
        ModelConfig(input_norm="percentile")
