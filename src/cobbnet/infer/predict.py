"""The predictor API: a radiograph in, the corners of T1..L5, Cobb angles and curves out.

    >>> from cobbnet import Predictor
    >>> pred = Predictor()                      # the bundled two-stage model, ONNX Runtime, no torch
    >>> result = pred.predict("spine.dcm")      # or an (H, W) array
    >>> result.angles, result.cobb.curves, result.as_dict()

The flow, for each radiograph::

    (H0, W0) uint8 -> prepare_image -> (1, 1, H, W) -> stage 1 (PeakNet) -> K candidates
      -> to_original -> chain (17 levels by score, spacing, smoothness and where the ends lie
         in the image; misses interpolated and flagged)
      -> stage 2: patches per vertebra (3 views: as cut, mirrored, 0.9 times as wide) -> CornerNet
         -> corners mapped back and averaged -> Cobb angles

The bundled model runs in ONNX Runtime from the graphs that ship in the package. A training
checkpoint (``Predictor("runs/stage1/fold-0/best.safetensors")``) or ``engine="torch"``
needs the training extra (torch): :mod:`cobbnet.training.engines` builds those engines.
``refine=False`` turns stage 2 off; ``refine="runs/stage2/best.safetensors"`` picks another one.
``views=1`` reads each vertebra in one stage-2 patch instead of three (``VIEWS``): faster, less exact.
``edge_prior=False`` leaves the image's edges out of the chain (``spine.chain``).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cobbnet.errors import InputError
from cobbnet.infer.bundle import Bundle, read_bundle
from cobbnet.infer.decode import candidates
from cobbnet.infer.gate import assess, check_image
from cobbnet.infer.onnx import OnnxModel
from cobbnet.infer.preprocess import prepare_image, to_original
from cobbnet.io.images import read_image_with_warnings, to_gray_uint8
from cobbnet.spine import patches
from cobbnet.spine.chain import level_doubt, pick_chain
from cobbnet.spine.cobb import CobbResult, cobb_angles
from cobbnet.spine.landmarks import hflip

LOW_CONFIDENCE = 0.3  # a detected vertebra scoring below this is flagged "low_confidence"
# stage 2 passes. A second pass, from the first's corners, gave SMAPE 8.70 against 8.98 on the
# validation split (within its interval) for 1.66 against 1.3 times stage 1's time end to
# end (docs/two-stage.md): one pass keeps within 1.5 times the one-stage model
ITERATIONS = 1
# stage 2's test-time views of each vertebra, (width scale, mirrored), in the order they are
# added: the patch as cut, mirrored left to right, 0.9 and 1.1 times as wide. Their corners
# are averaged in the image. With the bundled stage 2, on the validation split, 1 to 4 views
# read SMAPE 7.81, 7.55, 7.45, 7.41 for 1.18, 1.27, 1.38, 1.55 times the one-stage model's
# time end to end (docs/two-stage.md): the default is the most views within 1.5 times.
# ``views=1`` is the patch alone, the fastest
VIEWS = ((1.0, False), (1.0, True), (0.9, False), (1.1, False))
VIEWS_DEFAULT = 3


def check_views(views: int, label: str = "views") -> int:
    """``views`` if it is 1 to ``len(VIEWS)``, else an InputError naming it as ``label``."""
    if not 1 <= views <= len(VIEWS):
        raise InputError(f"{label} {views}: must be 1 to {len(VIEWS)}")
    return views

Stage1 = Callable[[np.ndarray], dict[str, np.ndarray]]  # (B, 1, H, W) -> PeakNet outputs
Stage2 = Callable[[np.ndarray], np.ndarray]  # (N, 1, P, P) -> (N, 4, 2) patch corners


@dataclass
class Prediction:
    """One radiograph's result; ``as_dict()`` is the content of its JSON file."""

    name: str | None  # the input as given (a path), or None for an array
    landmarks: np.ndarray  # (17, 4, 2) original-image pixels
    scores: np.ndarray  # (17,) stage-1 peak heights; 0 where interpolated
    cobb: CobbResult
    image_size: tuple[int, int]  # (width, height)
    flags: list[list[str]] = field(default_factory=lambda: [[] for _ in range(17)])
    status: str = "ok"  # "ok", "uncertain" or "rejected"
    reason: str | None = None
    warnings: list[str] = field(default_factory=list)
    model: dict[str, Any] = field(default_factory=dict)
    stage1_landmarks: np.ndarray | None = field(default=None, repr=False)  # (17, 4, 2) before stage 2
    image: np.ndarray | None = field(default=None, repr=False)  # (H, W) uint8, kept for overlays
    # how far the best chain with T1 or L5 renamed a level lies below the chosen one
    # (spine.chain.Chain.margin), and the warning when that is under LEVEL_MARGIN; the gate
    # turns the warning into status "uncertain"
    level_margin: float = float("inf")
    level_doubt: str | None = None

    @property
    def angles(self) -> np.ndarray:
        return self.cobb.angles

    def as_dict(self) -> dict[str, Any]:
        from cobbnet.report.result import result_record

        return result_record(self)


def _refine(stage2: Stage2, image: np.ndarray, landmarks: np.ndarray, iterations: int,
            views: int = VIEWS_DEFAULT) -> np.ndarray:
    """Stage 2 on every vertebra: ``(17, 4, 2)`` -> ``(17, 4, 2)`` in original pixels.

    Each vertebra is read in the first ``views`` of ``VIEWS`` in one network call (a mirrored
    view mirrors the patch of its width scale, cut once); their corners, mapped back to the
    image, are averaged."""
    scale = np.array([v[0] for v in VIEWS[:views]])
    flip = np.array([v[1] for v in VIEWS[:views]])
    sizes, which = np.unique(scale, return_inverse=True)  # each width scale is cut once
    lm = landmarks
    for _ in range(iterations):
        frame = np.repeat(patches.frames(lm)[None], len(sizes), axis=0)  # (S, 17, 4)
        frame[..., 3] *= sizes[:, None]
        cut = patches.cut(image, frame.reshape(-1, 4)).reshape(len(sizes), len(lm), *patches.PATCH_SHAPE)
        x = cut[which]  # (V, 17, P, P)
        x[flip] = x[flip][..., ::-1]
        out = np.asarray(stage2(x.reshape(-1, 1, *patches.PATCH_SHAPE).astype(np.float32) / np.float32(255.0)),
                         dtype=np.float64).reshape(views, len(lm), 4, 2)
        out[flip] = hflip(out[flip], patches.PATCH_SIZE)  # mirrored views' corners, unmirrored
        lm = patches.to_image(out.reshape(-1, 4, 2), frame[which].reshape(-1, 4)).reshape(views, len(lm), 4, 2).mean(axis=0)
    return lm


class Predictor:
    def __init__(self, checkpoint: str | os.PathLike | None = None, refine: str | os.PathLike | bool | None = None,
                 engine: str = "auto", precision: str = "auto", device: str = "auto",
                 threads: int | None = None, iterations: int = ITERATIONS, gate: bool = True,
                 edge_prior: bool = True, views: int | None = None):
        if engine not in ("auto", "onnx", "torch"):
            raise InputError(f"engine: {engine!r} is not one of auto, onnx, torch")
        if iterations < 1:
            raise InputError(f"iterations: must be at least 1, got {iterations}")
        self.iterations = iterations
        # stage 2's test-time views of each vertebra (VIEWS); None: VIEWS_DEFAULT
        self.views = VIEWS_DEFAULT if views is None else check_views(views)
        self.gate = gate  # False: read every image, even one the input gate would reject
        bundle = read_bundle() if checkpoint is None or refine in (None, True) else None
        if checkpoint is None and engine in ("auto", "onnx") and precision in ("auto", "fp32"):
            self.stage1: Stage1 = OnnxModel(bundle.stage1_onnx, threads)
            self.input_size: tuple[int, int] = bundle.input_size
            self.engine, self.mode = "onnxruntime", "cpu fp32 onnxruntime"
            self.model = bundle.describe(self.engine)
        else:
            from cobbnet.training import engines  # needs torch: the training extra

            path = Path(checkpoint) if checkpoint is not None else bundle.stage1_weights
            self.stage1, self.input_size, self.engine, self.mode = engines.stage1(
                path, engine, precision, device, threads)
            self.model = bundle.describe(self.engine) if checkpoint is None else engines.describe(path, self.engine)
        self.stage2: Stage2 | None = None
        if refine is not False:
            if refine in (None, True) and self.engine == "onnxruntime":
                runner = OnnxModel(bundle.stage2_onnx, threads)
                self.stage2 = lambda x: runner(x)["corners"]
            else:
                from cobbnet.training import engines

                path = bundle.stage2_weights if refine in (None, True) else Path(refine)
                self.stage2 = engines.stage2(path, "onnx" if self.engine == "onnxruntime" else "torch", threads)
                if refine not in (None, True):
                    self.model = {**self.model, "stage2": str(path)}
        self.edge_prior = edge_prior  # False: the chain ignores where its ends lie in the image
        self.network_seconds = 0.0  # time spent in stage 1, for throughput figures
        self.network_images = 0

    @property
    def refines(self) -> bool:
        return self.stage2 is not None

    def run_network(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """Stage 1: ``(B, 1, H, W)`` float32 in [0, 1] -> PeakNet outputs (timed for throughput)."""
        start = time.perf_counter()
        out = self.stage1(batch)
        self.network_seconds += time.perf_counter() - start
        self.network_images += len(batch)
        return out

    def predict_arrays(self, images: list[np.ndarray], names: list[str | None],
                       warnings: list[list[str]] | None = None) -> list[Prediction]:
        """A batch of ``(H, W)`` uint8 images -> predictions in original-image pixels.

        Each image passes the input gate first (``infer.gate.check_image``): one that is no
        usable radiograph is rejected without running the network. Every result is then
        assessed (``infer.gate.assess``): ok, uncertain (with warnings) or rejected.
        """
        warnings = warnings or [[] for _ in images]
        results: list[Prediction | None] = [None] * len(images)
        todo = []
        for i, image in enumerate(images):
            reason = check_image(image) if self.gate else None
            if reason is not None:
                results[i] = self._rejected(names[i], image, reason, warnings[i])
            else:
                todo.append(i)
        if todo:
            batch = np.stack([prepare_image(images[i], self.input_size) for i in todo])
            corners, scores = candidates(self.run_network(batch))  # (B, K, 4, 2) input px, (B, K)
            for b, i in enumerate(todo):
                results[i] = self._read(images[i], names[i], corners[b], scores[b], list(warnings[i]))
        return results  # type: ignore[return-value]

    def _read(self, image: np.ndarray, name: str | None, corners: np.ndarray, scores: np.ndarray,
              warnings: list[str]) -> Prediction:
        """One image's candidates -> chain -> stage 2 -> angles, assessed by the gate."""
        H, W = image.shape[:2]
        chain = pick_chain(to_original(corners, self.input_size, (H, W)), scores, height=H if self.edge_prior else None)
        if not np.isfinite(chain.landmarks).all():
            return self._rejected(name, image, "no vertebrae found", warnings)
        stage1 = chain.landmarks
        lm = _refine(self.stage2, image, stage1, self.iterations, self.views) if self.stage2 is not None else stage1
        flags = [list(f) for f in chain.flags]
        for v, s in enumerate(chain.scores):
            if chain.picked[v] >= 0 and s < LOW_CONFIDENCE:
                flags[v].append("low_confidence")
        doubt = level_doubt(chain)  # a rival chain with the ends renamed scores almost as well
        status, reason, found = assess(lm, chain.scores, flags, (W, H), doubt) if self.gate else ("ok", None, [])
        if status == "rejected":
            return self._rejected(name, image, reason or "no plausible chain of vertebrae", warnings + found)
        return Prediction(name, lm, chain.scores, cobb_angles(lm, H), (W, H), flags, status, reason,
                          warnings + found, self.model, stage1, image=image, level_margin=chain.margin,
                          level_doubt=doubt)

    def _rejected(self, name: str | None, image: np.ndarray, reason: str,
                  warnings: list[str] | None = None) -> Prediction:
        """A result with no angles: NaN corners, zero scores, every level flagged."""
        H, W = image.shape[:2]
        nan = np.full((17, 4, 2), np.nan)
        return Prediction(name, nan, np.zeros(17), cobb_angles(np.zeros((17, 4, 2)), H), (W, H),
                          [[] for _ in range(17)], "rejected", reason, list(warnings or []), self.model,
                          image=image)

    def predict(self, image: str | os.PathLike | np.ndarray, name: str | None = None) -> Prediction:
        """One radiograph from a path (JPEG, PNG, TIFF, DICOM) or an image array."""
        warnings: list[str] = []
        if isinstance(image, (str, os.PathLike)):
            name = name or str(image)
            image, warnings = read_image_with_warnings(image)
        return self.predict_arrays([to_gray_uint8(image, name or "array")], [name], [warnings])[0]

    def predict_paths(self, paths: Iterable[Path], batch_size: int = 4,
                      errors: list[tuple[Path, str]] | None = None) -> Iterator[Prediction]:
        """Predict files in batches; unreadable files are recorded in ``errors`` and skipped."""
        if batch_size < 1:
            raise InputError(f"batch size must be at least 1, got {batch_size}")
        pending: list[tuple[np.ndarray, str, list[str]]] = []
        for path in paths:
            try:
                pending.append((*read_image_with_warnings(path), str(path)))
            except InputError as err:
                if errors is None:
                    raise
                errors.append((Path(path), str(err)))
                continue
            if len(pending) == batch_size:
                yield from self._batch(pending)
                pending = []
        if pending:
            yield from self._batch(pending)

    def _batch(self, pending: list[tuple[np.ndarray, list[str], str]]) -> list[Prediction]:
        return self.predict_arrays([p[0] for p in pending], [p[2] for p in pending], [p[1] for p in pending])


def bundle_info() -> Bundle:
    """The bundled model's description (names, files, sha256)."""
    return read_bundle()
