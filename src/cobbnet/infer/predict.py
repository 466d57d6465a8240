"""The predictor API: a checkpoint in, landmarks + Cobb angles + curves out, for paths or arrays.

    >>> from cobbnet import Predictor
    >>> pred = Predictor()                      # the bundled model; or Predictor("run/best.safetensors")
    >>> result = pred.predict("spine.dcm")      # or an (H, W) uint8 array
    >>> result.angles, result.cobb.shape, result.as_dict()

The network runs in its inference form (:class:`cobbnet.nn.model.PeakNet`: offsets computed at
the heatmap's peaks only, no mask head). The fastest mode that is exact enough is chosen for
the machine (see :mod:`cobbnet.training.hardware` and docs/speed.md): bf16 autocast + channels_last on
GPUs and on CPUs with native bf16, and ONNX Runtime in fp32 on other CPUs (its graph is
exported once per checkpoint and cached).
``precision="fp32"`` forces full precision; ``engine="torch"`` forces the torch network.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cobbnet.training import checkpoint
from cobbnet.infer.bundle import bundled_checkpoint
from cobbnet.spine.cobb import CobbResult, cobb_angles
from cobbnet.training.config import Config
from cobbnet.training.data import prepare_image
from cobbnet.nn.decode import decode, to_original
from cobbnet.errors import InputError
from cobbnet.training.hardware import AUTOCAST_DTYPES, resolve_device, resolve_engine, resolve_precision
from cobbnet.io.images import read_image
from cobbnet.nn.model import PeakNet
from cobbnet.report.overlay import result_record


@dataclass
class Prediction:
    """One radiograph's result; ``as_dict()`` is the content of its JSON file."""

    name: str
    landmarks: np.ndarray  # (17, 4, 2) original-image pixels
    scores: np.ndarray  # (17,) peak heights: near 0 means the vertebra was not found
    cobb: CobbResult
    image_size: tuple[int, int]  # (width, height)
    image: np.ndarray | None = field(default=None, repr=False)  # (H, W) uint8, kept for overlays

    @property
    def angles(self) -> np.ndarray:
        return self.cobb.angles

    def as_dict(self) -> dict[str, Any]:
        return result_record(self)


class Predictor:
    def __init__(self, checkpoint_path: str | os.PathLike | None = None, device: str = "auto",
                 precision: str = "auto", channels_last: bool = True, engine: str = "auto"):
        path = Path(checkpoint_path) if checkpoint_path else bundled_checkpoint()
        model, self.cfg = checkpoint.load(path)
        self.model = PeakNet(model)  # the inference form: the same numbers, fewer FLOPs
        self.checkpoint = path
        self.device = resolve_device(device)
        self.precision = resolve_precision(precision, self.device)
        self.engine = resolve_engine(engine, self.device, self.precision)
        self.channels_last = channels_last and self.engine == "torch"
        self.model = self.model.to(self.device)
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.input_size: tuple[int, int] = tuple(self.cfg.model.input_size)
        self.onnx = None  # an export.OnnxRunner when the engine is "onnx"
        if self.engine == "onnx":
            from cobbnet.training.export import runner_for_checkpoint

            self.onnx = runner_for_checkpoint(path, self.model, self.input_size)
        self.network_seconds = 0.0  # time spent in the network, for throughput figures
        self.network_images = 0

    @property
    def mode(self) -> str:
        if self.onnx is not None:
            return f"{self.device.type} {self.precision} onnxruntime"
        layout = "channels_last" if self.channels_last else "contiguous"
        return f"{self.device.type} {self.precision} {layout}"

    @torch.inference_mode()
    def run_network(self, batch: torch.Tensor) -> dict[str, torch.Tensor]:
        """``(B, 1, H, W)`` float in [0, 1] -> heads dict in float32 (timed for throughput)."""
        start = time.perf_counter()
        out = self.onnx.run_network(batch) if self.onnx is not None else self._run_torch(batch)
        self.network_seconds += time.perf_counter() - start
        self.network_images += len(batch)
        return out

    def _run_torch(self, batch: torch.Tensor) -> dict[str, torch.Tensor]:
        x = batch.to(self.device)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        dtype = AUTOCAST_DTYPES.get(self.precision)
        with torch.autocast(self.device.type, dtype=dtype, enabled=dtype is not None):
            out = self.model(x)
        out = {k: v.float() for k, v in out.items()}
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        return out

    def predict_arrays(self, images: list[np.ndarray], names: list[str]) -> list[Prediction]:
        """A batch of ``(H, W)`` uint8 images -> predictions in original-image pixels."""
        batch = torch.from_numpy(np.stack([prepare_image(im, self.input_size) for im in images]))
        lm, scores = decode(self.run_network(batch))
        lm, scores = lm.cpu().numpy(), scores.cpu().numpy()
        results = []
        for i, (image, name) in enumerate(zip(images, names, strict=True)):
            H, W = image.shape[:2]
            landmarks = to_original(lm[i], self.input_size, (H, W))
            results.append(Prediction(name, landmarks, scores[i], cobb_angles(landmarks, H), (W, H), image))
        return results

    def predict(self, image: str | os.PathLike | np.ndarray, name: str | None = None) -> Prediction:
        """One radiograph from a path (JPEG, PNG, TIFF, DICOM) or an ``(H, W)`` uint8 array."""
        if isinstance(image, (str, os.PathLike)):
            name = name or Path(image).name
            image = read_image(image)
        array = np.asarray(image)
        if array.ndim == 3:
            array = array.mean(axis=2).astype(np.uint8)
        if array.ndim != 2 or array.dtype != np.uint8:
            raise InputError(f"{name or 'array'}: expected an (H, W) uint8 image, got {array.shape} {array.dtype}")
        return self.predict_arrays([array], [name or "array"])[0]

    def predict_paths(self, paths: Iterable[Path], batch_size: int = 4,
                      errors: list[tuple[Path, str]] | None = None) -> Iterator[Prediction]:
        """Predict files in batches; unreadable files are recorded in ``errors`` and skipped."""
        pending: list[tuple[np.ndarray, str]] = []
        for path in paths:
            try:
                pending.append((read_image(path), Path(path).name))
            except InputError as err:
                if errors is None:
                    raise
                errors.append((Path(path), str(err)))
                continue
            if len(pending) == batch_size:
                yield from self.predict_arrays(*map(list, zip(*pending, strict=True)))
                pending = []
        if pending:
            yield from self.predict_arrays(*map(list, zip(*pending, strict=True)))


def load_config(checkpoint_path: str | os.PathLike) -> Config:
    """The config a checkpoint was trained with."""
    from cobbnet.training.config import from_dict

    return from_dict(checkpoint.read_meta(checkpoint_path)["config"], str(checkpoint_path))
