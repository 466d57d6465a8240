"""What ships in the package: the synthetic example, and the model with its card."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from cobbnet.infer import bundle

from cobbnet.training import checkpoint
from cobbnet.spine.cobb import cobb_angles
from cobbnet.training.config import Config
from cobbnet.errors import InputError
from cobbnet.io.images import read_image
from cobbnet.nn.model import ModelConfig, build_model
from cobbnet.io.synthetic import synth_sample


def _has_model() -> bool:
    try:
        return bundle.bundled_checkpoint().is_file()
    except InputError:
        return False


HAS_MODEL = _has_model()


def test_example_is_what_its_recipe_makes() -> None:
    truth = bundle.example_truth()
    _, image, lm = synth_sample(bundle.EXAMPLE_INDEX, bundle.EXAMPLE_SEED)
    assert truth["landmarks"].shape == (17, 4, 2)
    np.testing.assert_allclose(truth["landmarks"], lm, atol=1e-3)
    np.testing.assert_allclose(truth["angles"], cobb_angles(lm, image.shape[0]).angles, atol=1e-3)
    shipped = read_image(bundle.example_path())
    assert shipped.shape == image.shape == (truth["height"], truth["width"])
    assert np.abs(shipped.astype(float) - image).mean() < 3  # only JPEG's rounding


def test_example_can_be_rewritten_elsewhere(tmp_path: Path) -> None:
    path = bundle.write_example(tmp_path)
    assert path.read_bytes() == bundle.example_path().read_bytes()
    assert json.loads(path.with_suffix(".json").read_text()) == json.loads(
        bundle.example_path().with_suffix(".json").read_text())


@pytest.fixture
def trained(tmp_path: Path) -> tuple[Path, Path]:
    """A small checkpoint and an evaluation folder for it."""
    torch.manual_seed(0)
    cfg = Config(model=ModelConfig(backbone="hrnet_w18_small_v2", head_channels=16, input_size=[128, 64]))
    source = checkpoint.save(tmp_path / "run" / "best", build_model(cfg.model).eval(), cfg, {"val/smape": 30.0})
    evaluation = tmp_path / "eval"
    evaluation.mkdir()
    metrics = {"n_images": 32, "smape": 12.5, "smape_pt": 10.0, "smape_mt": 14.0, "smape_tl": 16.0,
               "mae_pt": 3.0, "mae_mt": 4.0, "mae_tl": 5.0, "landmark_error_px": 40.0, "within_5deg": 0.7}
    (evaluation / "metrics.json").write_text(json.dumps(metrics))
    return source, evaluation


def test_shipped_model_is_fp16_and_predicts_like_the_source(trained, tmp_path: Path) -> None:
    source, evaluation = trained
    weights = bundle.ship_model(source, evaluation, tmp_path / "weights", notes="- a note")
    tensors = load_file(str(weights))
    assert {t.dtype for t in tensors.values() if t.is_floating_point()} == {torch.float16}
    meta = checkpoint.read_meta(weights)
    assert meta["metrics"]["validation"]["smape"] == 12.5
    assert meta["metrics"]["training"]["val/smape"] == 30.0
    card = (tmp_path / "weights" / bundle.CARD).read_text()
    for text in ("| SMAPE (%) | 12.500 |", "| MAE MT (deg) | 4.000 |", "not a diagnostic device",
                 "research licence", "hrnet_w18_small_v2", "- a note", "within 5 degrees"):
        assert text in card, text
    a, _ = checkpoint.load(source)
    b, _ = checkpoint.load(weights)
    for (name, wa), wb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        if wa.is_floating_point():  # fp16 keeps 11 significant bits: 5e-4 relative, 6e-8 absolute
            assert torch.allclose(wa, wb, rtol=1e-3, atol=1e-7), name
    x = torch.rand(1, 1, 128, 64)
    with torch.no_grad():
        ya, yb = a(x), b(x)
    for name in ya:  # an untrained network: only the mean difference is small
        assert (ya[name] - yb[name]).abs().mean() <= 1e-2 * ya[name].abs().mean() + 1e-3, name


def test_ship_refuses_without_evaluation_and_over_the_size_limit(trained, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    source, evaluation = trained
    with pytest.raises(InputError, match="metrics.json: evaluation metrics not found"):
        bundle.ship_model(source, tmp_path / "nowhere", tmp_path / "w")
    monkeypatch.setattr(bundle, "MAX_WEIGHTS_BYTES", 1000)
    with pytest.raises(InputError, match="over the 0 MB limit"):
        bundle.ship_model(source, evaluation, tmp_path / "w")
    assert not (tmp_path / "w" / bundle.WEIGHTS).exists()


@pytest.mark.skipif(not HAS_MODEL, reason="this build ships no model")
def test_bundled_model_reads_the_bundled_example() -> None:
    from cobbnet import Predictor

    size = bundle.bundled_checkpoint().stat().st_size
    assert size <= bundle.MAX_WEIGHTS_BYTES
    predictor = Predictor(device="cpu")  # no checkpoint: the bundled one
    assert predictor.checkpoint == bundle.bundled_checkpoint()
    truth = bundle.example_truth()
    result = predictor.predict(bundle.example_path())
    error_px = np.linalg.norm(result.landmarks - truth["landmarks"], axis=-1).mean()
    # The shipped model (SMAPE 14 on real radiographs) reads it as 73/17/61 degrees for the true
    # 59/22/51, missing one thoracic vertebra (the README says so): guard that reading.
    assert error_px < 0.05 * truth["height"], error_px  # corners within 5% of the image height
    assert result.cobb.shape == truth["shape"] == "S"
    assert np.abs(result.angles - truth["angles"]).max() < 15, (result.angles, truth["angles"])
    assert result.scores.min() > 0.3  # every vertebra found with some confidence


@pytest.mark.skipif(not HAS_MODEL, reason="this build ships no model")
def test_bundled_model_knows_its_validation_fold() -> None:
    from cobbnet.infer.evaluate import fold_samples

    held_out = fold_samples(None, list(range(481)))  # evaluate --fold-only without --checkpoint
    assert held_out == fold_samples(bundle.bundled_checkpoint(), list(range(481)))
    assert len(held_out) == 33
