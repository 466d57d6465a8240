"""Checkpoint and config files that are wrong in one place: one line naming the file and the field."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from cobbnet.errors import InputError
from cobbnet.nn.model import ModelConfig, build_model
from cobbnet.training import checkpoint
from cobbnet.training.config import Config, from_dict, load_config

SIZE = (64, 32)


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    cfg = Config()
    cfg.model = ModelConfig(backbone="hrnet_w18_small_v2", head_channels=8, input_size=SIZE)
    return checkpoint.save(tmp_path_factory.mktemp("ckpt") / "tiny", build_model(cfg.model).eval(), cfg)


def _copy_with(saved: Path, tmp_path: Path, change) -> Path:
    state = load_file(str(saved))
    change(state)
    weights = tmp_path / "bad.safetensors"
    save_file(state, str(weights))
    (tmp_path / "bad.json").write_text(checkpoint.paths(saved)[1].read_text())
    return weights


def _one_line_error(path: Path, *needles: str) -> None:
    with pytest.raises(InputError) as err:
        checkpoint.load(path)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(str(path)), msg
    for needle in needles:
        assert needle in msg, msg


def test_the_saved_checkpoint_loads(saved):
    model, cfg = checkpoint.load(saved)
    assert tuple(cfg.model.input_size) == SIZE


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_weights_with_nan_or_inf_name_the_tensor(saved, tmp_path, bad):
    name = "heads.hm.0.weight"

    def poison(state):
        state[name] = state[name].clone()
        state[name].view(-1)[3] = bad

    _one_line_error(_copy_with(saved, tmp_path, poison), name, "NaN or infinite")


def test_integer_weights_name_the_tensor(saved, tmp_path):
    name = "heads.hm.0.weight"

    def integers(state):
        state[name] = state[name].round().to(torch.int32)

    _one_line_error(_copy_with(saved, tmp_path, integers), name, "int32", "floating point")


def test_integer_buffers_stay_integers(saved, tmp_path):
    # BatchNorm's num_batches_tracked is an integer in every checkpoint: not a fault
    state = load_file(str(saved))
    assert any(not v.is_floating_point() for v in state.values())
    checkpoint.load(saved)


@pytest.mark.parametrize("section, key, value, needle", [
    ("model", "input_size", "big", "list of 2 whole numbers"),
    ("model", "input_size", [1024, "wide"], "list of 2 whole numbers"),
    ("train", "epochs", "ten", "whole number"),
    ("train", "lr", "fast", "number"),
    ("train", "ema", True, "number"),
    ("data", "augment", "yes", "true or false"),
    ("train", "threads", 1.5, "whole number or null"),
])
def test_config_of_wrong_types_names_file_and_field(tmp_path, section, key, value, needle):
    import yaml

    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump({section: {key: value}}))
    with pytest.raises(InputError) as err:
        load_config(path)
    msg = str(err.value)
    assert msg.startswith(f"{path}: {section}.{key}") and needle in msg and "\n" not in msg, msg


def test_checkpoint_config_of_wrong_type_names_the_json(saved, tmp_path):
    import json

    meta = json.loads(checkpoint.paths(saved)[1].read_text())
    meta["config"]["model"]["input_size"] = "big"
    weights = tmp_path / "typed.safetensors"
    weights.write_bytes(saved.read_bytes())
    (tmp_path / "typed.json").write_text(json.dumps(meta))
    with pytest.raises(InputError) as err:
        checkpoint.load(weights)
    assert str(err.value).startswith(f"{tmp_path / 'typed.json'}: model.input_size"), str(err.value)


def test_values_a_dataclass_refuses_are_one_line_errors():
    with pytest.raises(InputError, match="x.yaml: section 'model': input size 1000x512"):
        from_dict({"model": {"input_size": [1000, 512]}}, "x.yaml")
    with pytest.raises(InputError, match="x.yaml: section 'loss': unknown loss variant"):
        from_dict({"loss": {"variant": "nope"}}, "x.yaml")


def test_yaml_lists_and_json_numbers_still_fit():
    cfg = from_dict({"model": {"input_size": [512, 256]}, "train": {"lr": 1, "devices": [0, 1]},
                     "data": {"synthetic_size": None}}, "x")
    assert cfg.model.input_size == (512, 256) and cfg.train.lr == 1


CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))
STAGE2_CONFIGS = [p for p in CONFIGS if p.stem.startswith("stage2")]  # training.refine's
STAGE1_CONFIGS = [p for p in CONFIGS if p not in STAGE2_CONFIGS]


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_every_shipped_config_loads(path: Path) -> None:
    if path not in STAGE1_CONFIGS:
        from cobbnet.training.refine import load_run_config

        t = load_run_config(str(path), []).train
        assert t.epochs >= 1
        if t.init:  # a later stage-2 run starts from a run that a stage-2 config names (its
            # train.name, or the train.name= of the command its comments give)
            run = Path(t.init).parts[1]
            assert Path(t.init).parts[0] == "runs", t.init
            assert any(f"name: {run}\n" in p.read_text() or f"train.name={run} " in p.read_text()
                       for p in STAGE2_CONFIGS), t.init
        return
    cfg = load_config(path, [])
    assert cfg.train.epochs >= 1 and cfg.train.name
    if cfg.train.init:  # a later phase starts from another config's run, or from the shipped weights
        init = Path(cfg.train.init)
        if init.parts[0] == "runs":  # runs/NAME/...: NAME is some config's run name
            names = {load_config(p, []).train.name for p in STAGE1_CONFIGS}
            assert init.parts[1] in names, cfg.train.init
        else:
            assert init == Path("src/cobbnet/weights/stage1.safetensors"), cfg.train.init
            assert (path.parents[1] / init).is_file()
