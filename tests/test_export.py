"""ONNX export: the exported graph computes what the torch model computes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from cobbnet.errors import InputError
from cobbnet.infer.decode import CANDIDATES
from cobbnet.nn.decode import decode
from cobbnet.nn.heads import HEADS, STRIDE
from cobbnet.nn.model import PEAK_OUTPUTS, ModelConfig, PeakNet, build_model
from cobbnet.training import checkpoint
from cobbnet.training.config import Config
from cobbnet.training.export import (
    FULL_OUTPUTS,
    OnnxRunner,
    cached_onnx,
    export_onnx,
    runner_for_checkpoint,
)

SIZE = (256, 128)


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """One intra-op thread: where other jobs share the cores, two OpenMP threads wait on
    each other at every barrier and these small graphs run many times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def small_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    cfg = Config()
    cfg.model = ModelConfig(backbone="hrnet_w18_small_v2", input_size=SIZE)
    model = build_model(cfg.model)
    # BatchNorm statistics from data, as after training: activations stay O(1) through the
    # network (an untrained one reaches logits in the thousands) and folding non-trivial
    # statistics into the convs is exercised
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = None  # a plain average over the calibration batches
    with torch.no_grad():
        model.train()(torch.rand(4, 1, *SIZE))
    return checkpoint.save(tmp_path_factory.mktemp("ckpt") / "small", model.eval(), cfg)


@pytest.fixture(scope="module")
def onnx_path(small_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The full graph: every dense head of the training network."""
    return export_onnx(small_checkpoint, tmp_path_factory.mktemp("onnx") / "small.onnx", full=True)


@pytest.fixture(scope="module")
def peak_path(small_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The default graph: the inference network."""
    return export_onnx(small_checkpoint, tmp_path_factory.mktemp("onnx") / "peak.onnx")


def test_export_writes_named_graph_with_dynamic_batch(onnx_path: Path, peak_path: Path) -> None:
    graph = onnx.load(str(onnx_path)).graph
    assert [o.name for o in graph.output] == list(HEADS) == list(FULL_OUTPUTS)
    assert [o.name for o in onnx.load(str(peak_path)).graph.output] == list(PEAK_OUTPUTS)
    dims = graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param == "batch"
    assert [d.dim_value for d in dims[1:]] == [1, *SIZE]
    assert not list(onnx_path.parent.glob(".*")), "temporary file left behind"


@pytest.mark.parametrize("batch", [1, 3])
def test_onnx_matches_torch(small_checkpoint: Path, onnx_path: Path, batch: int) -> None:
    model, _ = checkpoint.load(small_checkpoint)
    runner = OnnxRunner(onnx_path, threads=1)
    x = torch.rand(batch, 1, *SIZE, generator=torch.Generator().manual_seed(batch))
    with torch.inference_mode():
        want = model(x)
    got = runner.run_network(x)
    h, w = SIZE[0] // STRIDE, SIZE[1] // STRIDE
    assert set(got) == set(HEADS)
    for name, channels in HEADS.items():
        assert got[name].shape == (batch, channels, h, w)
        assert got[name].dtype == torch.float32
        torch.testing.assert_close(got[name], want[name], rtol=1e-3, atol=2e-4)
    assert runner.network_images == batch and runner.network_seconds > 0


@pytest.mark.parametrize("batch", [1, 3])
def test_default_graph_is_the_peak_net(small_checkpoint: Path, peak_path: Path, batch: int) -> None:
    model, _ = checkpoint.load(small_checkpoint)
    x = torch.rand(batch, 1, *SIZE, generator=torch.Generator().manual_seed(batch))
    with torch.inference_mode():
        want = PeakNet(model, CANDIDATES)(x)
        dense = decode(model(x), CANDIDATES)
    got = OnnxRunner(peak_path, threads=1).run_network(x)
    assert list(got) == list(PEAK_OUTPUTS)
    torch.testing.assert_close(got["ind"], want["ind"])
    for name in ("hm", "scores", "reg", "cnr"):
        torch.testing.assert_close(got[name], want[name], rtol=1e-3, atol=2e-4)
    lm, scores = decode(got)
    torch.testing.assert_close(lm, dense[0], rtol=1e-3, atol=2e-3)  # input px
    torch.testing.assert_close(scores, dense[1], rtol=1e-3, atol=2e-4)


def test_fixed_batch_and_in_memory_runner(small_checkpoint: Path, tmp_path: Path) -> None:
    path = export_onnx(small_checkpoint, tmp_path / "fixed.onnx", batch_dynamic=False)
    dims = onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_value == 1
    model, _ = checkpoint.load(small_checkpoint)
    runner = OnnxRunner.from_model(model.to(memory_format=torch.channels_last), SIZE, threads=1)
    assert runner.input_size == SIZE
    x = torch.rand(1, 1, *SIZE)
    with torch.inference_mode():
        want = model(x)  # the export left the caller's model as it was (channels_last)
    assert model.heads["hm"][0].weight.is_contiguous(memory_format=torch.channels_last)
    got = runner.run_network(x)
    np.testing.assert_allclose(got["hm"].numpy(), want["hm"].numpy(), atol=1e-4)


def test_cached_onnx_reuses_graph_and_tracks_weights(small_checkpoint: Path, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COBBNET_CACHE", str(tmp_path / "cache"))
    first = cached_onnx(small_checkpoint)
    mtime = first.stat().st_mtime_ns
    assert cached_onnx(small_checkpoint) == first and first.stat().st_mtime_ns == mtime
    # other weights under the same name give another graph
    model, cfg = checkpoint.load(small_checkpoint)
    with torch.no_grad():
        model.heads["hm"][-1].bias.add_(1.0)
    copy = checkpoint.save(tmp_path / "small", model, cfg)
    assert cached_onnx(copy) != first


def test_runner_falls_back_to_memory_when_cache_is_unwritable(
        small_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("COBBNET_CACHE", str(blocker / "cache"))  # below a file: mkdir fails
    model, _ = checkpoint.load(small_checkpoint)
    runner = runner_for_checkpoint(small_checkpoint, model, SIZE, threads=1)
    x = torch.rand(1, 1, *SIZE)
    with torch.inference_mode():
        want = PeakNet(model, CANDIDATES)(x)  # the graph the predictor runs
    torch.testing.assert_close(runner.run_network(x)["cnr"], want["cnr"], rtol=1e-3, atol=2e-4)


def test_bad_onnx_file_is_an_input_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a graph")
    with pytest.raises(InputError, match=str(bad)):
        OnnxRunner(bad)


def test_cached_graph_is_checked_and_rebuilt_when_broken(small_checkpoint: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.setenv("COBBNET_CACHE", str(tmp_path / "cache"))
    graph = cached_onnx(small_checkpoint)
    first = capsys.readouterr().err
    assert "exporting" in first and str(graph) in first and len(first.strip().splitlines()) == 1
    cached_onnx(small_checkpoint)
    assert capsys.readouterr().err == ""  # a sound cached graph: used silently
    data = bytearray(graph.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte in the weights
    graph.write_bytes(bytes(data))
    assert cached_onnx(small_checkpoint) == graph
    assert "broken" in capsys.readouterr().err
    OnnxRunner(graph, threads=1)  # loadable again
    graph.with_suffix(".json").unlink()  # a graph of unknown origin
    cached_onnx(small_checkpoint)
    assert "stamp" in capsys.readouterr().err
    graph.write_bytes(b"")  # truncated to nothing, stamp kept
    cached_onnx(small_checkpoint)
    assert "broken" in capsys.readouterr().err and graph.stat().st_size > 1000


def test_image_norm_graph_matches_torch_and_ignores_brightness(tmp_path: Path) -> None:
    torch.manual_seed(0)
    cfg = Config()
    cfg.model = ModelConfig(backbone="hrnet_w18_small_v2", input_size=SIZE, input_norm="image")
    model = build_model(cfg.model)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = None
    with torch.no_grad():
        model.train()(torch.rand(4, 1, *SIZE))
    ckpt = checkpoint.save(tmp_path / "inv", model.eval(), cfg)
    runner = OnnxRunner(export_onnx(ckpt, tmp_path / "inv.onnx"), threads=1)
    x = torch.rand(2, 1, *SIZE, generator=torch.Generator().manual_seed(3)) * 0.8
    with torch.inference_mode():
        want = PeakNet(model, CANDIDATES)(x)
    got, brighter = runner.run_network(x), runner.run_network(x + 1 / 255)
    torch.testing.assert_close(got["ind"], want["ind"])
    torch.testing.assert_close(brighter["ind"], got["ind"])
    for name in ("hm", "scores", "reg", "cnr"):
        torch.testing.assert_close(got[name], want[name], rtol=1e-3, atol=2e-4)
        torch.testing.assert_close(brighter[name], got[name], rtol=1e-3, atol=2e-4)
