"""Loss terms of eq. (2): hand-checked values, masking, variants, and where gradients go."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from test_targets import ladder
from torch import nn

from cobbnet.io import synthetic
from cobbnet.nn import targets
from cobbnet.nn.heads import HEADS, STRIDE
from cobbnet.nn.losses import (
    END_STEP,
    LossConfig,
    binary_focal_loss,
    compute_losses,
    end_blobs,
    focal_loss_centernet,
    hcl_loss,
    l1_at,
    predicted_corners,
)
from cobbnet.nn.model import SIGMOID_HEADS, clamped_sigmoid

SIZE = (256, 128)  # input (H, W); maps are 64 x 32


def _spine() -> np.ndarray:
    return synthetic.random_spine(np.random.default_rng(3), width=SIZE[1], height=SIZE[0])


def _targets(lm: np.ndarray) -> dict[str, torch.Tensor]:
    return {k: torch.from_numpy(v)[None] for k, v in targets.encode(lm, input_size=SIZE).items()}


class TinyHeads(nn.Module):
    """1x1 conv heads on a fixed random feature map: a cheap stand-in for the network."""

    def __init__(self, h: int, w: int) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.register_buffer("feats", torch.randn(1, 8, h, w))
        self.heads = nn.ModuleDict({name: nn.Conv2d(8, c, 1) for name, c in HEADS.items()})

    def forward(self) -> dict[str, torch.Tensor]:
        out = {name: head(self.feats) for name, head in self.heads.items()}
        return {k: clamped_sigmoid(v) if k in SIGMOID_HEADS else v for k, v in out.items()}


def _perfect_outputs(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Maps holding the true offsets at the true centre cells, and the true heatmap and mask."""
    h, w = batch["hm"].shape[-2:]
    out = {}
    for name in ("reg", "cnr"):
        C = HEADS[name]
        flat = torch.zeros(1, C, h * w)
        flat[0, :, batch["ind"][0]] = batch[name][0].T
        out[name] = flat.reshape(1, C, h, w)
    out["hm"] = batch["hm"].clamp(1e-4, 1 - 1e-4)
    out["mask"] = batch["mask"].clamp(1e-4, 1 - 1e-4)
    return out


def test_centernet_focal_loss_by_hand() -> None:
    gt = torch.tensor([1.0, 0.5, 0.0]).reshape(1, 1, 1, 3)
    pred = torch.tensor([0.8, 0.3, 0.1]).reshape(1, 1, 1, 3)
    pos = math.log(0.8) * 0.2**2  # one positive: log(p) (1 - p)^2
    neg = math.log(0.7) * 0.3**2 * 0.5**4 + math.log(0.9) * 0.1**2 * 1.0**4  # log(1-p) p^2 (1-gt)^4
    assert focal_loss_centernet(pred, gt).item() == pytest.approx(-(pos + neg) / 1, rel=1e-6)
    # two positives halve the normalised sum of the same terms
    gt2 = torch.tensor([1.0, 1.0, 0.0]).reshape(1, 1, 1, 3)
    pred2 = torch.tensor([0.8, 0.8, 0.1]).reshape(1, 1, 1, 3)
    neg2 = math.log(0.9) * 0.1**2
    assert focal_loss_centernet(pred2, gt2).item() == pytest.approx(-(2 * pos + neg2) / 2, rel=1e-6)


def test_neg_boost_weighs_only_the_negative_terms_it_covers() -> None:
    gt = torch.tensor([1.0, 0.5, 0.0]).reshape(1, 1, 1, 3)
    pred = torch.tensor([0.8, 0.3, 0.1]).reshape(1, 1, 1, 3)
    boost = torch.tensor([5.0, 0.0, 3.0]).reshape(1, 1, 1, 3)  # on the positive: no effect
    pos = math.log(0.8) * 0.2**2
    neg = math.log(0.7) * 0.3**2 * 0.5**4 + 4 * math.log(0.9) * 0.1**2
    assert focal_loss_centernet(pred, gt, neg_boost=boost).item() == pytest.approx(-(pos + neg), rel=1e-6)
    logits = torch.logit(pred)
    assert focal_loss_centernet(pred, gt, logits, boost).item() == pytest.approx(-(pos + neg), rel=1e-5)
    assert focal_loss_centernet(pred, gt, neg_boost=torch.zeros_like(gt)).item() == pytest.approx(
        focal_loss_centernet(pred, gt).item(), rel=1e-7)


def test_end_weight_adds_the_boosted_negatives_beyond_the_ends_to_the_heatmap_loss() -> None:
    batch = _targets(_spine())
    ends = end_blobs(batch, (64, 32))
    assert ends.max().item() > 0.5  # the synthetic spine's ends lie inside the map
    out = TinyHeads(64, 32)()
    plain = compute_losses(out, batch, LossConfig())
    boosted = compute_losses(out, batch, LossConfig(end_weight=10.0))
    gt, p = batch["hm"], out["hm"]
    neg = -(torch.log(1 - p) * p**2 * (1 - gt) ** 4 * (gt < 1)).mul(ends).sum()
    extra = 10.0 * neg / gt.eq(1).sum()
    assert (boosted["hm"] - plain["hm"]).item() == pytest.approx(extra.item(), rel=1e-4)
    assert extra.item() > 0
    for key in ("reg", "cnr", "csc"):
        assert boosted[key].item() == plain[key].item()
    with pytest.raises(ValueError, match="end_weight"):
        LossConfig(end_weight=-1.0)


def test_end_pos_weight_multiplies_the_positive_terms_of_t1_and_l5_only() -> None:
    batch = _targets(_spine())
    out = TinyHeads(64, 32)()
    plain = compute_losses(out, batch, LossConfig())
    boosted = compute_losses(out, batch, LossConfig(end_pos_weight=3.0))
    p = out["hm"].flatten(1)[0]
    ind, n = batch["ind"][0], batch["hm"].eq(1).sum()
    term = -(torch.log(p[ind]) * (1 - p[ind]) ** 2)  # (17,) each centre's positive term
    assert (boosted["hm"] - plain["hm"]).item() == pytest.approx(3.0 * (term[0] + term[16]).item() / n.item(), rel=1e-4)
    with pytest.raises(ValueError, match="end_pos_weight"):
        LossConfig(end_pos_weight=-0.5)


def test_centernet_focal_loss_without_centres_is_the_negative_sum() -> None:
    gt = torch.zeros(1, 1, 2, 2)
    pred = torch.full((1, 1, 2, 2), 0.2)
    assert focal_loss_centernet(pred, gt).item() == pytest.approx(
        -4 * math.log(0.8) * 0.04, rel=1e-6
    )


def test_binary_focal_loss_by_hand_and_its_gamma_zero_limit() -> None:
    prob = torch.tensor([0.9, 0.2, 0.6, 0.3])
    target = torch.tensor([1.0, 0.0, 1.0, 0.0])
    terms = [
        0.1**2 * math.log(0.9),
        0.2**2 * math.log(0.8),
        0.4**2 * math.log(0.6),
        0.3**2 * math.log(0.7),
    ]
    assert binary_focal_loss(prob, target).item() == pytest.approx(-sum(terms) / 4, rel=1e-6)
    bce = F.binary_cross_entropy(prob, target)
    assert binary_focal_loss(prob, target, gamma=0.0).item() == pytest.approx(bce.item(), rel=1e-6)


def test_l1_ignores_invalid_entries() -> None:
    pred = torch.zeros(1, 2, 2, 3)
    pred[0, :, 0, 0] = torch.tensor([1.0, 2.0])  # cell 0
    pred[0, :, 1, 2] = torch.tensor([100.0, -100.0])  # cell 5: wildly off, but invalid
    ind = torch.tensor([[0, 5]])
    target = torch.tensor([[[1.5, 1.0], [0.0, 0.0]]])
    loss = l1_at(pred, ind, torch.tensor([[1.0, 0.0]]), target)
    assert loss.item() == pytest.approx((0.5 + 1.0) / 2, rel=1e-3)  # two values of one object
    assert l1_at(pred, ind, torch.zeros(1, 2), target).item() == 0.0


def test_predicted_corners_of_perfect_maps_are_the_true_corners() -> None:
    lm = _spine()
    batch = _targets(lm)
    corners = predicted_corners(_perfect_outputs(batch), batch["ind"])
    np.testing.assert_allclose(corners[0].numpy(), lm / STRIDE, atol=1e-4)


def test_perfect_outputs_give_zero_offset_losses_and_a_consistent_mask() -> None:
    batch = _targets(_spine())
    out = _perfect_outputs(batch)
    losses = compute_losses(out, batch, LossConfig(variant="hcl", a_csc=1.0, fwt="hard"))
    assert losses["reg"].item() < 1e-4 and losses["cnr"].item() < 1e-4
    assert losses["csc"].item() < 1e-6  # the fill of the true corners is the true mask
    shifted = {**out, "cnr": out["cnr"] + 1.0}  # every corner one cell off
    assert compute_losses(shifted, batch, LossConfig(a_csc=1.0))["csc"] > losses["csc"] + 0.01


def test_variants_switch_the_consistency_term() -> None:
    batch = _targets(_spine())
    out = TinyHeads(64, 32)()
    kpt = compute_losses(out, batch, LossConfig(variant="kpt"))
    assert kpt["csc"].item() == 0.0
    assert kpt["total"].item() == pytest.approx(
        (kpt["hm"] + kpt["reg"] + kpt["cnr"]).item(), rel=1e-6
    )

    seg = compute_losses(out, batch, LossConfig(variant="seg", a_csc=0.7, a_seg=2.0))
    plain = binary_focal_loss(out["mask"], batch["mask"])
    assert seg["csc"].item() == pytest.approx(plain.item(), rel=1e-6)  # a_csc ignored: 0
    assert seg["total"].item() == pytest.approx((kpt["total"] + 2.0 * plain).item(), rel=1e-6)

    hcl = compute_losses(out, batch, LossConfig(variant="hcl", a_csc=0.5))
    assert hcl["csc"].item() != pytest.approx(plain.item(), rel=1e-3)
    for key in ("hm", "reg", "cnr"):
        assert hcl[key].item() == kpt[key].item()


def _csc_grads(cfg: LossConfig) -> dict[str, torch.Tensor | None]:
    net = TinyHeads(64, 32)
    csc = hcl_loss(net(), _targets(_spine()), cfg)
    names = ["reg", "cnr", "mask"]
    params = [net.heads[n].weight for n in names]
    return dict(zip(names, torch.autograd.grad(csc, params, allow_unused=True), strict=True))


def test_consistency_gradient_reaches_the_offset_heads_in_soft_mode() -> None:
    grads = _csc_grads(LossConfig(variant="hcl", a_csc=0.5, fwt="soft"))
    for name in ("reg", "cnr", "mask"):
        assert grads[name] is not None and grads[name].abs().sum() > 0, name


@pytest.mark.parametrize(
    "cfg",
    [
        LossConfig(variant="hcl", a_csc=0.5, fwt="hard"),
        LossConfig(variant="hcl", a_csc=0.0),
        LossConfig(variant="seg"),
    ],
    ids=["hard", "a_csc=0", "seg"],
)
def test_consistency_gradient_skips_the_offset_heads(cfg: LossConfig) -> None:
    grads = _csc_grads(cfg)
    assert grads["cnr"] is None and grads["reg"] is None
    assert grads["mask"] is not None and grads["mask"].abs().sum() > 0


def test_losses_leave_outputs_and_targets_untouched() -> None:
    batch = _targets(_spine())
    out = TinyHeads(64, 32)()
    before = {
        k: v.detach().clone() for k, v in {**out, **{f"t_{k}": v for k, v in batch.items()}}.items()
    }
    compute_losses(out, batch, LossConfig())["total"].backward()
    after = {**out, **{f"t_{k}": v for k, v in batch.items()}}
    for k, v in before.items():
        assert torch.equal(after[k].detach(), v), k


def test_config_rejects_unknown_choices() -> None:
    with pytest.raises(ValueError, match="variant"):
        LossConfig(variant="both")
    with pytest.raises(ValueError, match="fwt"):
        LossConfig(fwt="blurry")
    with pytest.raises(ValueError, match="a_csc"):
        LossConfig(a_csc=1.5)


# ---------------------------------------------------------------- ends


def _peaks(a: np.ndarray) -> list[tuple[int, int]]:
    """Local maxima ``(iy, ix)`` of a map above 0.5, top to bottom."""
    padded = np.pad(a, 1, constant_values=-1.0)
    neigh = np.stack([padded[1 + dy : 1 + dy + a.shape[0], 1 + dx : 1 + dx + a.shape[1]]
                      for dy in (-1, 0, 1) for dx in (-1, 0, 1) if dy or dx])
    return sorted(zip(*np.nonzero((a > 0.5) & (a >= neigh.max(axis=0))), strict=True))


def test_end_blobs_lie_one_step_beyond_t1_and_l5_on_a_tilted_spine() -> None:
    lm = ladder(SIZE, top=0.12, step=0.045)
    lm[..., 0] += np.linspace(0, 12, 17)[:, None]  # the spine leans: the steps tilt
    ends = end_blobs(_targets(lm), (64, 32))[0].numpy()
    c = lm.mean(axis=1) / STRIDE  # (17, 2) map units
    expected = [c[0] + END_STEP * (c[0] - c[1]), c[16] + END_STEP * (c[16] - c[15])]
    peaks = _peaks(ends[0])
    assert len(peaks) == 2
    for (iy, ix), (x, y) in zip(peaks, expected, strict=True):
        assert abs(ix + 0.5 - x) <= 0.5 and abs(iy + 0.5 - y) <= 0.5
    # the blob has faded where T1 and L5 themselves lie, so their peaks keep their weight
    assert ends[0, int(c[0, 1]), int(c[0, 0])] < 0.01 and ends[0, int(c[16, 1]), int(c[16, 0])] < 0.01


def test_an_end_outside_the_map_draws_no_blob_there() -> None:
    lm = ladder(SIZE, x0=0.33)  # centres inside cells: one maximum per blob
    lm[16, :, 1] += 200.0  # L5 below the image
    ends = end_blobs(_targets(lm), (64, 32))[0].numpy()
    peaks = _peaks(ends[0])
    assert len(peaks) == 1 and peaks[0][0] < 64 // 4  # only the one above T1
