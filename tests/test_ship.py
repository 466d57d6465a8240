"""Writing the bundled model (torch): ONNX graphs that match torch, fp16 weights, card, size limit."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from cobbnet.errors import InputError
from cobbnet.infer import bundle
from cobbnet.infer.decode import CANDIDATES
from cobbnet.infer.onnx import OnnxModel
from cobbnet.nn.model import ModelConfig, PeakNet, build_model
from cobbnet.nn.refine import CornerNet, RefineConfig
from cobbnet.training import checkpoint, refine, ship
from cobbnet.training.config import Config


@pytest.fixture
def trained(tmp_path: Path) -> tuple[Path, Path, Path]:
    """Small stage-1 and stage-2 checkpoints and an evaluation folder for them."""
    torch.manual_seed(0)
    cfg = Config(model=ModelConfig(backbone="hrnet_w18_small_v2", head_channels=16, input_size=[128, 64]))
    cfg.data.holdout = 0.2
    s1 = checkpoint.save(tmp_path / "run" / "best", build_model(cfg.model).eval(), cfg, {})
    run = refine.RefineRun(RefineConfig(width=8), refine.RefineTrain(epochs=1))
    refine.save(tmp_path / "run2" / "best", CornerNet(run.model).eval(), run, {"val_corner_px": 9.0})
    evaluation = tmp_path / "eval"
    m = {"n_images": 95, "smape": 12.5, "smape_ci95": [10.0, 15.0], "landmark_error_px": 40.0,
         "landmark_error_matched_px": 20.0, "mae_pt": 3.0, "mae_mt": 4.0, "mae_tl": 5.0,
         "within_5deg_all_pct": 30.0, "levels_right_pct": 80.0}
    (evaluation / "stage1").mkdir(parents=True)
    (evaluation / "metrics.json").write_text(json.dumps(m))
    (evaluation / "stage1" / "metrics.json").write_text(json.dumps({**m, "smape": 20.0}))
    return s1, tmp_path / "run2" / "best.safetensors", evaluation


def test_ship_writes_onnx_that_matches_torch_and_fp16_weights(trained, tmp_path: Path) -> None:
    s1, s2, evaluation = trained
    out = tmp_path / "weights"
    ship.ship(s1, s2, evaluation, out, notes="- a note")
    b = bundle.read_bundle(out)
    assert b.input_size == (128, 64) and b.meta["candidates"] == CANDIDATES
    for weights in (b.stage1_weights, b.stage2_weights):
        assert {t.dtype for t in load_file(str(weights)).values() if t.is_floating_point()} == {torch.float16}
    net1, _ = checkpoint.load(b.stage1_weights)
    x = torch.rand(2, 1, 128, 64)
    with torch.no_grad():
        want = PeakNet(net1, CANDIDATES)(x)
    got = OnnxModel(b.stage1_onnx)(x.numpy())
    # an untrained heatmap is nearly flat, so the order of tied peaks may differ: compare maps
    np.testing.assert_allclose(got["hm"], want["hm"].numpy(), atol=1e-5)
    np.testing.assert_allclose(got["scores"], want["scores"].numpy(), atol=1e-5)
    net2, _ = refine.load(b.stage2_weights)
    p = torch.rand(5, 1, 64, 64)
    with torch.no_grad():
        want2 = net2(p).numpy()
    np.testing.assert_allclose(OnnxModel(b.stage2_onnx)(p.numpy())["corners"], want2, atol=1e-3)
    card = (out / bundle.CARD).read_text()
    for text in ("| stage 1 alone | stage 1 + 2 |", "20.00 (10.00-15.00)", "12.50 (10.00-15.00)", "- a note",
                 "not a diagnostic device", "hrnet_w18_small_v2"):
        assert text in card, text


def test_ship_refuses_without_evaluation_and_over_the_size_limit(trained, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    s1, s2, evaluation = trained
    with pytest.raises(InputError, match="metrics.json: evaluation metrics not found"):
        ship.ship(s1, s2, tmp_path / "nowhere", tmp_path / "w")
    monkeypatch.setattr(ship, "MAX_MODEL_BYTES", 1000)
    with pytest.raises(InputError, match="over 0 MB"):
        ship.ship(s1, s2, evaluation, tmp_path / "w")
    assert not (tmp_path / "w" / bundle.BUNDLE).exists()


def test_ship_names_the_runs_of_an_averaged_stage1(trained, tmp_path: Path) -> None:
    s1, s2, evaluation = trained
    net, cfg = checkpoint.load(s1)
    out = tmp_path / "weights"
    cfg.train.init, cfg.train.epochs = str(out / "stage1.safetensors"), 8  # fine-tuned from the bundle it replaces
    records = [{"weights": f"r{k}.safetensors", "name": f"run{k}", "seed": k, "sha256": "0" * 64} for k in (0, 1, 2)]
    soup = checkpoint.save(tmp_path / "soup", net, cfg, {"soup": records})
    ship.ship(soup, s2, evaluation, out)
    assert checkpoint.read_meta(out / "stage1.safetensors")["metrics"]["soup"] == records
    card = (out / bundle.CARD).read_text()
    assert "the average of the weights of 3 runs (seeds 0, 1, 2" in card
    assert "8 epochs from the weights of an earlier run (the stage 1 bundled before this one" in card
    assert str(out) not in card


def test_ship_says_where_a_fine_tuned_stage2_began(trained, tmp_path: Path) -> None:
    s1, s2, evaluation = trained
    net2, meta = refine.load(s2)
    out = tmp_path / "weights"
    run = refine.RefineRun(net2.cfg, refine.RefineTrain(**{**meta["config"]["train"], "epochs": 16,
                                                          "init": str(out / "stage2.safetensors")}))
    tuned = tmp_path / "tuned" / "best"
    refine.save(tuned, net2, run, {})
    ship.ship(s1, tuned.with_suffix(".safetensors"), evaluation, out)
    card = (out / bundle.CARD).read_text()
    assert "Stage 2: from the weights of an earlier run (the stage 2 bundled before this one" in card
    assert "16 epochs on patches" in card
    assert str(out) not in card
    # shipped again with the same stage 2, which is now the bundled one: its start is the one before
    name = bundle.read_bundle(out).name
    copy = tmp_path / "copy"
    copy.mkdir()
    for suffix in (".safetensors", ".json"):
        (copy / f"stage2{suffix}").write_bytes((out / f"stage2{suffix}").read_bytes())
    ship.ship(s1, copy / "stage2.safetensors", evaluation, out)
    card = (out / bundle.CARD).read_text()
    assert f"(the stage 2 bundled before {name}, its fp16 weights; carried over unchanged from {name})" in card
    # a run that began from a copy of the bundled stage 2 names it as the bundled one
    run.train.init = str(copy / "stage2.safetensors")
    refine.save(tuned, net2, run, {})
    ship.ship(s1, tuned.with_suffix(".safetensors"), evaluation, out)
    assert "Stage 2: from the weights of an earlier run (the stage 2 bundled before this one" in (out / bundle.CARD).read_text()
    # a stage 2 trained from scratch says nothing of a start
    ship.ship(s1, s2, evaluation, tmp_path / "weights2")
    assert "Stage 2: from" not in (tmp_path / "weights2" / bundle.CARD).read_text()


def test_a_second_bundle_made_the_same_day_gets_a_new_name() -> None:
    base = "cobbnet-x-2stage-2026-12-06"
    a, b = {"stage1.onnx": "aa"}, {"stage1.onnx": "bb"}
    assert ship._new_name(base, None, {}, a) == base
    assert ship._new_name(base, "cobbnet-x-2stage-2026-12-05", {}, a) == base
    assert ship._new_name(base, base, a, a) == base  # the same files shipped again
    assert ship._new_name(base, base, a, b) == base + "-2"
    assert ship._new_name(base, base + "-2", a, b) == base + "-3"
    assert ship._new_name(base, base + "-2", b, b) == base + "-2"
    # new figures in a stage's JSON, the same weights: the same name
    assert ship._new_name(base, base, {**a, "stage1.json": "x"}, {**a, "stage1.json": "y"}) == base
