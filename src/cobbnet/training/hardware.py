"""What the machine can do fast: the one place that decides devices and precisions."""

from __future__ import annotations

import functools
import importlib.util
import os
import platform
from pathlib import Path

import torch


@functools.cache
def cpu_flags() -> frozenset[str]:
    """CPU feature flags (Linux /proc/cpuinfo; empty elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


@functools.cache
def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def native_bf16_cpu() -> bool:
    """True where the CPU multiplies bf16 in hardware (AMX or AVX-512 BF16).

    Without it, bf16 autocast on the CPU is emulated and slower than fp32, so it is never
    chosen automatically there.
    """
    if os.environ.get("COBBNET_ASSUME_BF16") == "1":
        return True
    return bool({"amx_bf16", "avx512_bf16"} & cpu_flags())


def resolve_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def resolve_precision(precision: str, device: torch.device) -> str:
    """'auto' -> the fastest exact-enough precision: 'bf16' on GPUs and on CPUs with native
    bf16, else 'fp32'. Explicit 'fp32', 'bf16', 'fp16' pass through."""
    if precision not in ("auto", "fp32", "bf16", "fp16"):
        raise ValueError(f"unknown precision {precision!r}; expected auto, fp32, bf16 or fp16")
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "bf16" if native_bf16_cpu() else "fp32"


ENGINES: tuple[str, ...] = ("auto", "torch", "onnx")


def resolve_engine(engine: str, device: torch.device, precision: str) -> str:
    """'auto' -> the fastest exact engine: ONNX Runtime where the network runs in fp32 on a
    CPU (2.1x eager and 1.4x channels_last end to end on an AVX2 CPU, docs/speed.md), torch
    everywhere else (GPUs; CPUs with native bf16, where autocast is the fast path).
    Explicit 'torch' and 'onnx' pass through; 'onnx' is CPU fp32 only."""
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}; expected {', '.join(ENGINES)}")
    cpu_fp32 = device.type == "cpu" and precision == "fp32"
    if engine == "onnx" and not cpu_fp32:
        raise ValueError(f"engine 'onnx' runs fp32 on the CPU; got {device.type} {precision}")
    if engine != "auto":
        return engine
    return "onnx" if cpu_fp32 and importlib.util.find_spec("onnxruntime") else "torch"


def lightning_precision(precision: str, accelerator: str = "auto") -> str:
    """Training precision for Lightning: 'auto' becomes bf16-mixed where native, else 32."""
    if precision != "auto":
        return precision
    on_gpu = accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())
    if on_gpu:
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    return "bf16-mixed" if native_bf16_cpu() else "32"


AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
