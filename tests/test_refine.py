"""Stage 2 at prediction time: test-time views (mirrored and rescaled patches) map back to the
same corners, both engines agree, and the corner network's coarser read-out (out_stride 4)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

import cobbnet.infer.predict as predict
from cobbnet.errors import InputError
from cobbnet.infer.bundle import example_path, read_bundle
from cobbnet.infer.onnx import OnnxModel
from cobbnet.infer.predict import VIEWS, Predictor, _refine
from cobbnet.io.images import read_image
from cobbnet.nn.refine import CornerNet, RefineConfig
from cobbnet.spine import patches
from cobbnet.spine.landmarks import BL, BR, TL, TR, hflip
from cobbnet.training import engines, refine
from cobbnet.training.export import export_refine


def spine_image(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A dark ``(1400, 600)`` image with 17 bright, tilted, well separated rectangles, and their
    corners ``(17, 4, 2)`` TL, TR, BL, BR (pixel edges: pixel i spans [i, i + 1))."""
    image = np.full((1400, 600), 30, np.uint8)
    corners = np.empty((17, 4, 2))
    for v in range(17):
        cx, cy = 300 + 40 * np.sin(v / 3), 80 + 75 * v
        a = np.deg2rad(rng.uniform(-15, 15))
        w, h = 60.0, 36.0
        R = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
        local = np.array([[-w / 2, -h / 2], [w / 2, -h / 2], [-w / 2, h / 2], [w / 2, h / 2]])
        corners[v] = local @ R.T + [cx, cy]
        poly = corners[v][[TL, TR, BR, BL]]
        # fillPoly draws pixel centres, at integers: shift by half a pixel, at 1/16 px precision
        cv2.fillPoly(image, [np.round((poly - 0.5) * 16).astype(np.int32)], 220, lineType=cv2.LINE_AA, shift=4)
    return image, corners


def oracle(x: np.ndarray) -> np.ndarray:
    """A stand-in corner network: ``(N, 1, P, P)`` patches of one bright, level rectangle ->
    ``(N, 4, 2)`` its extreme corners TL, TR, BL, BR in patch pixels (pixel edges)."""
    out = np.empty((len(x), 4, 2))
    for i, patch in enumerate(x[:, 0]):
        n, labels = cv2.connectedComponents((patch > 0.5).astype(np.uint8))
        centre = labels[patches.PATCH_SIZE // 2, patches.PATCH_SIZE // 2]
        ys, xs = np.nonzero(labels == centre)
        px, py = xs + 0.5, ys + 0.5
        pts = np.stack([px, py], -1)
        out[i, TL] = pts[np.argmin(px + py)] - 0.5
        out[i, BR] = pts[np.argmax(px + py)] + 0.5
        out[i, TR] = pts[np.argmax(px - py)] + [0.5, -0.5]
        out[i, BL] = pts[np.argmin(px - py)] + [-0.5, 0.5]
    return out


def test_unmirroring_patch_corners_is_its_own_inverse_and_swaps_sides() -> None:
    c = np.array([[[10.0, 20.0], [40.0, 21.0], [11.0, 44.0], [41.0, 45.0]]])
    m = hflip(c, patches.PATCH_SIZE)  # what _refine applies to a mirrored view's corners
    np.testing.assert_allclose(m[0, TL], [patches.PATCH_SIZE - 40.0, 21.0])
    np.testing.assert_allclose(m[0, BR], [patches.PATCH_SIZE - 11.0, 44.0])
    np.testing.assert_allclose(hflip(m, patches.PATCH_SIZE), c)


@pytest.mark.parametrize("views", range(1, len(VIEWS) + 1))
def test_every_view_maps_back_to_the_true_corners(views: int) -> None:
    """Start from corners off by a few pixels: each view (mirrored or rescaled) and their mean
    find the drawn corners, so no view's mapping back is wrong (a missed mirror would swap
    left and right corners, 60 px apart)."""
    rng = np.random.default_rng(0)
    image, true = spine_image(rng)
    start = true + rng.normal(0, 3, true.shape)
    got = _refine(oracle, image, start, 1, views)
    assert np.abs(got - true).max() < 4.0  # the oracle's own step: about a patch pixel (2.3 px)
    assert np.abs(got - true).mean() < np.abs(start - true).mean()


def test_each_view_alone_agrees_with_the_plain_view() -> None:
    rng = np.random.default_rng(1)
    image, true = spine_image(rng)
    plain = _refine(oracle, image, true, 1, 1)
    for view in VIEWS[1:]:
        saved = predict.VIEWS
        try:
            predict.VIEWS = (view,)
            alone = _refine(oracle, image, true, 1, 1)
        finally:
            predict.VIEWS = saved
        assert np.abs(alone - plain).mean() < 2.0, view


def test_views_run_in_one_network_call() -> None:
    image, true = spine_image(np.random.default_rng(2))
    sizes = []

    def counting(x: np.ndarray) -> np.ndarray:
        sizes.append(len(x))
        return oracle(x)

    _refine(counting, image, true, 1, len(VIEWS))
    assert sizes == [17 * len(VIEWS)]


def test_bundled_stage2_torch_and_onnx_agree_with_views() -> None:
    bundle = read_bundle()
    image, true = spine_image(np.random.default_rng(3))
    runner = OnnxModel(bundle.stage2_onnx)
    onnx = _refine(lambda x: runner(x)["corners"], image, true, 1, len(VIEWS))
    torch_ = _refine(engines.stage2(bundle.stage2_weights, "torch"), image, true, 1, len(VIEWS))
    assert np.abs(onnx - torch_).max() < 0.05


@pytest.mark.parametrize("views", [0, len(VIEWS) + 1])
def test_views_out_of_range_is_an_input_error(views: int) -> None:
    with pytest.raises(InputError, match="views"):
        Predictor(views=views)


def test_one_view_and_all_views_read_the_bundled_example_alike() -> None:
    image = read_image(example_path())
    one, four = Predictor(views=1).predict(image), Predictor().predict(image)
    assert one.status == four.status != "rejected" and one.warnings == four.warnings
    assert np.abs(one.landmarks - four.landmarks).mean() < 3.0
    assert np.abs(one.angles - four.angles).max() < 3.0


# ---- the corner network's read-out ----


@pytest.mark.parametrize("stride", [2, 4])
def test_read_out_stride_gives_corners_and_gradients(stride: int) -> None:
    torch.manual_seed(0)
    net = CornerNet(RefineConfig(width=8, out_stride=stride))
    out = net(torch.rand(3, 1, 64, 64))
    assert out.shape == (3, 4, 2)
    out.sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters())


def test_unknown_read_out_stride_is_refused() -> None:
    with pytest.raises(ValueError, match="out_stride"):
        RefineConfig(out_stride=8)


def test_coarser_read_out_starts_from_finer_weights() -> None:
    torch.manual_seed(0)
    fine = CornerNet(RefineConfig(width=8)).eval()
    coarse = CornerNet(RefineConfig(width=8, out_stride=4)).eval()
    assert refine.init_from(coarse, fine) == []
    for k, v in coarse.state_dict().items():
        assert torch.equal(v, fine.state_dict()[k]), k
    assert "lateral.0.weight" not in coarse.state_dict()


def test_coarser_read_out_exports_to_onnx(tmp_path) -> None:
    torch.manual_seed(0)
    net = CornerNet(RefineConfig(width=8, out_stride=4)).eval()
    export_refine(net, tmp_path / "s2.onnx")
    x = torch.rand(5, 1, 64, 64)
    with torch.no_grad():
        want = net(x).numpy()
    np.testing.assert_allclose(OnnxModel(tmp_path / "s2.onnx")(x.numpy())["corners"], want, atol=1e-4)
