"""Torch-side engines for the predictor: training checkpoints run in torch or ONNX Runtime.

The bundled model runs without torch (``cobbnet.infer.predict``); a checkpoint of a training
run, or ``engine="torch"``, comes through here. Each engine keeps the predictor's numpy
contract: stage 1 ``(B, 1, H, W)`` float32 -> PeakNet outputs, stage 2 ``(N, 1, P, P)`` ->
``(N, 4, 2)`` patch corners.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cobbnet.infer.bundle import sha256
from cobbnet.infer.decode import CANDIDATES
from cobbnet.infer.onnx import OnnxModel
from cobbnet.nn.model import PeakNet
from cobbnet.training import checkpoint, refine
from cobbnet.training.export import export_refine, runner_for_checkpoint
from cobbnet.training.hardware import (
    AUTOCAST_DTYPES,
    resolve_device,
    resolve_engine,
    resolve_precision,
)


def stage1(path: str | os.PathLike, engine: str = "auto", precision: str = "auto", device: str = "auto",
           threads: int | None = None) -> tuple[Callable, tuple[int, int], str, str]:
    """``(run, input_size, engine name, mode)`` for a stage-1 checkpoint."""
    model, cfg = checkpoint.load(path)
    dev = resolve_device(device)
    prec = resolve_precision(precision, dev)
    eng = resolve_engine(engine, dev, prec)
    size = tuple(int(s) for s in cfg.model.input_size)
    if eng == "onnx":
        runner = runner_for_checkpoint(path, model, size, threads)
        return runner.model, size, "onnxruntime", f"{dev.type} fp32 onnxruntime"
    if threads:
        torch.set_num_threads(threads)
    net = PeakNet(model, CANDIDATES).to(dev).eval()
    channels_last = dev.type == "cuda" or prec != "fp32"
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    dtype = AUTOCAST_DTYPES.get(prec)

    @torch.inference_mode()
    def run(x: np.ndarray) -> dict[str, np.ndarray]:
        t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(dev)
        if channels_last:
            t = t.contiguous(memory_format=torch.channels_last)
        with torch.autocast(dev.type, dtype=dtype, enabled=dtype is not None):
            out = net(t)
        return {k: v.float().cpu().numpy() if v.is_floating_point() else v.cpu().numpy() for k, v in out.items()}

    layout = "channels_last" if channels_last else "contiguous"
    return run, size, "torch", f"{dev.type} {prec} {layout}"


def stage2(path: str | os.PathLike, engine: str = "torch", threads: int | None = None) -> Callable:
    """``run((N, 1, P, P)) -> (N, 4, 2)`` for a stage-2 checkpoint, in ONNX Runtime or torch."""
    model, _ = refine.load(path)
    if engine == "onnx":
        buf = io.BytesIO()
        export_refine(model, buf)
        runner = OnnxModel(buf.getvalue(), threads)
        return lambda x: runner(x)["corners"]

    @torch.inference_mode()
    def run(x: np.ndarray) -> np.ndarray:
        return model(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))).numpy()

    return run


def describe(path: str | os.PathLike, engine: str) -> dict[str, Any]:
    """The ``model`` block of a result for a training checkpoint."""
    weights, _ = checkpoint.paths(path)
    return {"name": f"{Path(weights).parent.name}/{Path(weights).stem}", "sha256": sha256(weights),
            "engine": engine}
