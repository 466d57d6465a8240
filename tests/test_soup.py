"""Weight averaging of fine-tunes: the mean of the runs' tensors, refused where the runs differ."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from cobbnet.errors import InputError
from cobbnet.nn.model import ModelConfig, build_model
from cobbnet.training import checkpoint, soup
from cobbnet.training.config import Config

SIZE = (64, 32)


def _run(folder: Path, seed: int, size: tuple[int, int] = SIZE) -> Path:
    """A tiny checkpoint: the same starting weights moved by a seed-dependent step, as a fine-tune would."""
    cfg = Config()
    cfg.model = ModelConfig(backbone="hrnet_w18_small_v2", head_channels=8, input_size=list(size))
    cfg.train.init, cfg.train.seed, cfg.train.name = "start.safetensors", seed, f"run{seed}"
    torch.manual_seed(0)
    model = build_model(cfg.model).eval()
    gen = torch.Generator().manual_seed(100 + seed)
    with torch.no_grad():
        for t in model.state_dict().values():
            if t.is_floating_point():
                t.add_(torch.randn(t.shape, generator=gen) * 0.01)
    return checkpoint.save(folder / f"run{seed}", model, cfg)


def test_soup_is_the_mean_of_the_runs_and_names_them(tmp_path: Path) -> None:
    runs = [_run(tmp_path, s) for s in (0, 1, 2)]
    out = soup.write(tmp_path / "soup", runs)
    averaged, cfg = checkpoint.load(out)
    states = [checkpoint.load(r)[0].state_dict() for r in runs]
    for name, tensor in averaged.state_dict().items():
        if tensor.is_floating_point():
            torch.testing.assert_close(tensor, sum(s[name] for s in states) / 3, rtol=0, atol=1e-6)
        else:
            assert torch.equal(tensor, states[0][name])
    floats = [k for k, t in states[0].items() if t.is_floating_point()]
    assert all(not torch.equal(averaged.state_dict()[k], s[k]) for s in states for k in floats[:5])
    meta = checkpoint.read_meta(out)
    assert [r["seed"] for r in meta["metrics"]["soup"]] == [0, 1, 2]
    assert all(len(r["sha256"]) == 64 for r in meta["metrics"]["soup"])
    assert tuple(cfg.model.input_size) == SIZE


def test_soup_refuses_runs_that_do_not_average(tmp_path: Path) -> None:
    a = _run(tmp_path, 0)
    with pytest.raises(InputError, match="at least two"):
        soup.soup([a])
    with pytest.raises(InputError, match="twice"):
        soup.soup([a, a])
    other = tmp_path / "other"
    other.mkdir()
    b = _run(other, 1, (96, 32))
    with pytest.raises(InputError, match="input_size") as err:
        soup.soup([a, b])
    assert str(err.value).startswith(str(checkpoint.paths(b)[1])) and "\n" not in str(err.value)
    c = _run(tmp_path, 2)
    meta = checkpoint.read_meta(c)
    meta["config"]["train"]["init"] = None
    checkpoint.paths(c)[1].write_text(json.dumps(meta))
    with pytest.raises(InputError, match="scratch"):
        soup.soup([a, c])


def test_soup_never_overwrites_a_run_and_the_command_fails_in_one_line(tmp_path: Path, capsys) -> None:
    a, b = _run(tmp_path, 0), _run(tmp_path, 1)
    before = a.read_bytes()
    assert soup.main([str(a), str(a), str(b)]) == 2
    assert a.read_bytes() == before
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "overwrite" in err and "\n" not in err
    assert soup.main([str(tmp_path / "missing"), str(a), str(tmp_path / "nope.safetensors")]) == 2
    assert "nope" in capsys.readouterr().err
    assert not (tmp_path / "missing.safetensors").exists()
    assert soup.main([str(tmp_path / "s"), str(a), str(b)]) == 0
    assert (tmp_path / "s.safetensors").is_file() and (tmp_path / "s.json").is_file()
