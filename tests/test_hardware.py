"""Device, precision and engine choice: the one place that decides them."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from cobbnet.training import hardware
from cobbnet.training.hardware import lightning_precision, resolve_engine, resolve_precision

CPU, CUDA = torch.device("cpu"), torch.device("cuda")
HAS_ORT = importlib.util.find_spec("onnxruntime") is not None


def test_cpu_precision_follows_native_bf16(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hardware, "native_bf16_cpu", lambda: False)
    assert resolve_precision("auto", CPU) == "fp32"
    assert lightning_precision("auto", "cpu") == "32"
    monkeypatch.setattr(hardware, "native_bf16_cpu", lambda: True)
    assert resolve_precision("auto", CPU) == "bf16"
    assert lightning_precision("auto", "cpu") == "bf16-mixed"


def test_explicit_precision_passes_through_and_unknown_is_refused() -> None:
    for p in ("fp32", "bf16", "fp16"):
        assert resolve_precision(p, CPU) == p
    with pytest.raises(ValueError, match="unknown precision 'fp8'"):
        resolve_precision("fp8", CPU)


def test_native_bf16_read_from_cpu_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("COBBNET_ASSUME_BF16", raising=False)
    monkeypatch.setattr(hardware, "cpu_flags", lambda: frozenset({"avx2", "fma"}))
    assert not hardware.native_bf16_cpu()
    monkeypatch.setattr(hardware, "cpu_flags", lambda: frozenset({"avx2", "amx_bf16"}))
    assert hardware.native_bf16_cpu()


@pytest.mark.skipif(not HAS_ORT, reason="onnxruntime is not installed")
def test_auto_engine_is_onnx_for_cpu_fp32_only() -> None:
    assert resolve_engine("auto", CPU, "fp32") == "onnx"
    assert resolve_engine("auto", CPU, "bf16") == "torch"  # native bf16: autocast is faster
    assert resolve_engine("auto", CUDA, "bf16") == "torch"
    assert resolve_engine("auto", CUDA, "fp32") == "torch"


def test_auto_engine_falls_back_to_torch_without_onnxruntime(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(hardware.importlib.util, "find_spec",
                        lambda name, *a: None if name == "onnxruntime" else real(name, *a))
    assert resolve_engine("auto", CPU, "fp32") == "torch"


def test_explicit_engines() -> None:
    assert resolve_engine("torch", CPU, "fp32") == "torch"
    assert resolve_engine("torch", CUDA, "bf16") == "torch"
    assert resolve_engine("onnx", CPU, "fp32") == "onnx"
    with pytest.raises(ValueError, match="fp32 on the CPU"):
        resolve_engine("onnx", CPU, "bf16")
    with pytest.raises(ValueError, match="fp32 on the CPU"):
        resolve_engine("onnx", CUDA, "fp32")
    with pytest.raises(ValueError, match="unknown engine 'tensorrt'"):
        resolve_engine("tensorrt", CPU, "fp32")
