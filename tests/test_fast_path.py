"""The accuracy guard of the fast inference modes: each gives what eager fp32 gives.

The model is made meaningful cheaply: the backbone keeps random weights with BatchNorm
statistics taken from the radiographs, and the heads are fitted to the radiographs' spines
until the heatmaps hold one clear peak per vertebra. Every mode runs the whole network, so
the backbone's arithmetic is exercised in each; only the fitting is shortened.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from bench import DRIFT_DEG, DRIFT_PX, drift, predictor_with, run_benchmark, torch_predictor
from torch.utils.data import default_collate

from cobbnet.infer.decode import CANDIDATES
from cobbnet.infer.predict import Predictor
from cobbnet.io.synthetic import make_radiograph, write_dataset
from cobbnet.nn.decode import decode
from cobbnet.nn.losses import LossConfig, compute_losses
from cobbnet.nn.model import (
    SIGMOID_HEADS,
    ModelConfig,
    PeakNet,
    build_model,
    clamped_sigmoid,
    normalize,
)
from cobbnet.training import checkpoint
from cobbnet.training.config import Config
from cobbnet.training.data import SpineDataset, prepare_image
from cobbnet.training.export import OnnxRunner
from cobbnet.training.hardware import native_bf16_cpu

INPUT = (256, 128)  # (H, W) network input
IMAGE = (512, 256)  # (H, W) of the synthetic radiographs: original pixels are 2 input pixels
FIT_STEPS = 150
MAX_LANDMARK_PX = DRIFT_PX  # mean corner distance from eager fp32, original pixels
MAX_ANGLE_DEG = DRIFT_DEG


def fit_heads(model: torch.nn.Module, batch: dict, steps: int = FIT_STEPS, lr: float = 1e-3) -> None:
    """Calibrate BatchNorm on ``batch`` then fit the heads to its spines on frozen features."""
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = None  # a plain average over the calibration batch
    with torch.no_grad():
        model.train().backbone(normalize(batch["image"]))
        feats = model.eval().backbone(normalize(batch["image"]))  # (B, C, h, w)
    heads = {k: model.heads[k] for k in ("hm", "reg", "cnr")}  # the mask plays no part in decoding
    opt = torch.optim.Adam([p for h in heads.values() for p in h.parameters()], lr=lr)
    loss_cfg = LossConfig(variant="kpt")
    for _ in range(steps):
        out = {k: clamped_sigmoid(h(feats)) if k in SIGMOID_HEADS else h(feats) for k, h in heads.items()}
        loss = compute_losses({**out, "mask": torch.zeros_like(out["hm"])}, batch, loss_cfg)["total"]
        opt.zero_grad()
        loss.backward()
        opt.step()


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """One intra-op thread: on a machine whose cores other jobs share, two OpenMP threads
    wait on each other at every barrier and small convolutions run ten times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def fitted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[np.ndarray], np.ndarray]:
    """(checkpoint, radiographs (H, W) uint8, their landmarks (N, 17, 4, 2) in input pixels)."""
    torch.manual_seed(0)
    cfg = Config(model=ModelConfig(backbone="resnet34", head_channels=32, input_size=INPUT))
    data = SpineDataset.from_synthetic(2, seed=3, size=IMAGE, input_size=INPUT)
    batch = default_collate([data[i] for i in range(len(data))])
    model = build_model(cfg.model)
    fit_heads(model, batch)
    path = checkpoint.save(tmp_path_factory.mktemp("fitted") / "fitted", model.eval(), cfg)
    images = [make_radiograph(np.random.default_rng([3, i]), IMAGE)[0] for i in range(len(data))]
    return path, images, batch["landmarks_input"].numpy()


def test_fitted_model_is_meaningful(fitted) -> None:
    path, images, truth = fitted
    model, cfg = checkpoint.load(path)
    x = torch.from_numpy(np.stack([prepare_image(im, INPUT) for im in images]))
    with torch.inference_mode():
        lm, scores = decode(model(x))
    err = np.linalg.norm(lm.numpy() - truth, axis=-1).mean()
    assert err < 6.0, f"fitted model misses the corners by {err:.1f} input px on average"
    assert float(scores.min()) > 0.2, "some vertebra has no clear heatmap peak"


def _modes(path: Path) -> dict[str, Predictor]:
    return {
        "bf16": torch_predictor(path, device="cpu", precision="bf16"),
        "onnx": predictor_with(path, OnnxRunner.from_model(checkpoint.load(path)[0], INPUT).run_network),
        "peak-onnx": predictor_with(path, OnnxRunner.from_model(PeakNet(checkpoint.load(path)[0], CANDIDATES), INPUT).run_network),
    }


def test_fast_modes_match_eager_fp32(fitted) -> None:
    path, images, _ = fitted
    names = [f"r{i}" for i in range(len(images))]
    ref = torch_predictor(path, device="cpu", precision="fp32").predict_arrays(images, names)
    drift = {}
    for mode, pred in _modes(path).items():
        got = pred.predict_arrays(images, names)
        px = np.mean([np.linalg.norm(g.landmarks - r.landmarks, axis=-1).mean() for g, r in zip(got, ref, strict=True)])
        deg = max(float(np.abs(g.angles - r.angles).max()) for g, r in zip(got, ref, strict=True))
        drift[mode] = (px, deg)
    for mode, (px, deg) in drift.items():
        assert px <= MAX_LANDMARK_PX, f"{mode}: landmarks move {px:.3f} px on average ({drift})"
        assert deg <= MAX_ANGLE_DEG, f"{mode}: an angle moves {deg:.3f} degrees ({drift})"


def test_drift_report_on_a_labelled_folder(fitted, tmp_path: Path) -> None:
    path, _, _ = fitted
    root = write_dataset(tmp_path / "data", 2, seed=3, size=IMAGE)  # the fitted radiographs
    modes = _modes(path)
    modes["eager"] = torch_predictor(path, device="cpu", precision="fp32")
    report = drift(modes, 5, root)
    assert set(report) == {"bf16", "onnx", "peak-onnx"}
    for mode, values in report.items():
        assert values["images"] == 2
        assert 0 <= values["landmark_px_mean"] <= MAX_LANDMARK_PX, mode
        assert 0 <= values["angle_deg_max"] <= MAX_ANGLE_DEG, mode
    assert report["onnx"]["landmark_px_mean"] < 0.01  # both fp32: rounding only
    assert report["peak-onnx"]["landmark_px_mean"] < 0.01
    assert drift(modes, 5, tmp_path / "absent").startswith("n/a")


def test_automatic_engine_is_fast_and_exact(fitted, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COBBNET_CACHE", str(tmp_path))
    path, images, _ = fitted
    auto = Predictor(path, refine=False, device="cpu")
    if not native_bf16_cpu():  # no fast bf16 here: fp32 through ONNX Runtime
        assert auto.engine == "onnxruntime" and "fp32" in auto.mode
        assert list(tmp_path.glob("*.onnx")), "the exported graph was not cached"
    ref = torch_predictor(path, device="cpu", precision="fp32")
    for got, want in zip(auto.predict_arrays(images, ["a", "b"]), ref.predict_arrays(images, ["a", "b"]), strict=True):
        assert np.linalg.norm(got.landmarks - want.landmarks, axis=-1).mean() <= MAX_LANDMARK_PX
        assert np.abs(got.angles - want.angles).max() <= MAX_ANGLE_DEG


def test_benchmark_records_every_mode(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    res = run_benchmark(quick=True, models=["hrnet_w18_small_v2"], modes=["channels_last", "onnx", "peak-onnx"],
                        out=out, input_size=(128, 64), file_size=(256, 96), show=False,
                        bundled_drift=False)
    saved = json.loads(out.read_text())
    assert saved["models"].keys() == res["models"].keys() == {"hrnet_w18_small_v2"}
    model = saved["models"]["hrnet_w18_small_v2"]
    assert model["gflops"] > 0 and not model["errors"]
    modes = {"eager", "channels_last", "onnx", "peak-onnx"}
    assert {r["mode"] for r in model["network"]} == {r["mode"] for r in model["end_to_end"]} == modes
    assert 0 < model["gflops_peak"] < model["gflops"]
    peak = next(r for r in model["network"] if r["mode"] == "peak-onnx")
    assert peak["gflops"] == model["gflops_peak"]
    eager = next(r for r in model["network"] if r["mode"] == "eager")
    assert eager["speedup"] == pytest.approx(1.0)
    assert eager["min_s"] <= eager["median_s"] <= eager["max_s"]
    assert eager["speedup_min"] == pytest.approx(1.0)
    assert eager["floor_ratio"] == pytest.approx(eager["min_s"] * eager["matmul_gflops"] / model["gflops"])
    assert peak["floor_ratio"] == pytest.approx(peak["min_s"] * peak["matmul_gflops"] / model["gflops_peak"])
    assert set(saved["machine"]["flags"]) >= {"avx2", "avx512_bf16", "amx_bf16"}
    assert saved["drift"].startswith("n/a") and saved["machine"]["threads"] == torch.get_num_threads()
    if not torch.cuda.is_available():
        assert saved["gpu"] == "not available on this machine"
    tables = out.with_suffix(".md").read_text()  # the markdown docs/speed.md quotes
    assert "| hrnet_w18_small_v2 | " in tables and "| peak-onnx |" in tables and "End to end" in tables


def test_benchmark_measures_drift_with_the_bundled_model_when_radiographs_are_there(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import bench

    from cobbnet.infer.bundle import bundled_checkpoint

    monkeypatch.setattr(bench, "AASCE", write_dataset(tmp_path / "data", 2, seed=5, size=IMAGE))
    res = run_benchmark(quick=True, models=["resnet34"], modes=["peak-onnx"], input_size=(64, 32),
                        file_size=(128, 64), show=False, repeats=1)
    assert set(res["models"]) == {"resnet34", bench.BUNDLED}
    assert res["models"][bench.BUNDLED]["input_size"] == list(checkpoint.load(bundled_checkpoint())[1].model.input_size)
    assert res["drift_checkpoint"] == str(bundled_checkpoint())
    values = res["drift"]["peak-onnx"]
    assert values["images"] == 2 and values["within_tolerance"]
    assert values["landmark_px_mean"] < 0.01  # the default path is fp32: rounding only
    assert "Drift from eager fp32 (" in bench.markdown(res)
