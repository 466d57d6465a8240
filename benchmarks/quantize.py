"""Int8 post-training quantisation of the inference graph: how much faster, how far off.

ONNX Runtime's static quantisation (``onnxruntime.quantization.quantize_static``) of the
predictor's graph (PeakNet, fp32), calibrated on synthetic radiographs, in three common
recipes (convolutions only, per-channel weights). Each is timed against the fp32 graph it came from, round-robin in one process,
and its predictions are compared with the fp32 graph's on other radiographs: mean corner
distance (original pixels) and largest Cobb-angle change, the fast path's tolerances
(``bench.DRIFT_PX``, ``DRIFT_DEG``). AASCE radiographs are added when
``../shared/boostnet_labeldata`` is present.

    python benchmarks/quantize.py                      # the bundled model
    python benchmarks/quantize.py --checkpoint runs/x/fold-0/best.safetensors

Writes ``benchmarks/results/int8.json`` and prints a table.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import os
import statistics
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from bench import (
    AASCE,
    DRIFT_DEG,
    DRIFT_PX,
    machine_info,
    prediction_drift,
    predictor_with,
    round_robin,
)

from cobbnet.infer.bundle import bundled_checkpoint
from cobbnet.io.images import read_image
from cobbnet.io.outputs import write_json
from cobbnet.io.synthetic import make_radiograph
from cobbnet.nn.model import PeakNet
from cobbnet.training import checkpoint
from cobbnet.training.data import prepare_image
from cobbnet.training.export import OnnxRunner, export_model

OUT = Path(__file__).resolve().parent / "results" / "int8.json"
CALIBRATION_SEED = 11  # calibration and test radiographs never overlap
TEST_SEED = 12


def recipes() -> dict[str, dict[str, Any]]:
    """Convolutions only (nearly all the FLOPs; the peak selection and the offsets at the
    peaks stay fp32), weights per output channel, in ONNX Runtime's usual recipes."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType

    conv = dict(op_types_to_quantize=["Conv"], per_channel=True)
    return {
        "qdq-u8s8-minmax": dict(quant_format=QuantFormat.QDQ, activation_type=QuantType.QUInt8,
                                weight_type=QuantType.QInt8, reduce_range=True, **conv),
        "qdq-u8s8-percentile": dict(quant_format=QuantFormat.QDQ, activation_type=QuantType.QUInt8,
                                    weight_type=QuantType.QInt8, reduce_range=True,
                                    calibrate_method=CalibrationMethod.Percentile, **conv),
        "qoperator-u8u8-minmax": dict(quant_format=QuantFormat.QOperator, activation_type=QuantType.QUInt8,
                                      weight_type=QuantType.QUInt8, **conv),
    }


def synthetic_images(n: int, seed: int) -> list[np.ndarray]:
    return [make_radiograph(np.random.default_rng([seed, i]))[0] for i in range(n)]


@contextlib.contextmanager
def _working_dir(path: Path):
    """``contextlib.chdir`` (Python 3.11) for 3.10 too."""
    old = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)


def quantize(fp32: Path, out: Path, calibration: list[np.ndarray], size: tuple[int, int],
             recipe: dict[str, Any]) -> Path:
    from onnxruntime.quantization import CalibrationDataReader, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter(prepare_image(im, size)[None] for im in calibration)

        def get_next(self) -> dict[str, np.ndarray] | None:
            x = next(self.batches, None)
            return None if x is None else {"image": x}

    pre = out.with_name("pre.onnx")  # out is in the caller's temporary folder
    # the quantiser prints tensor protos, and warns on the root logger about every integer
    # tensor (shapes, peak indices), which are not meant to be quantised
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        # ONNX Runtime's symbolic shape inference saves its partial model and weights in the
        # working directory when it fails: make that the temporary folder too
        with contextlib.redirect_stdout(io.StringIO()), _working_dir(out.parent):
            if not pre.exists():  # symbolic shape inference cannot follow the peak selection's TopK
                quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=True)
            quantize_static(str(pre), str(out), Reader(), **recipe)
    finally:
        root.setLevel(level)
    return out


def run(ckpt: Path, n_calibration: int, n_test: int, n_aasce: int, repeats: int, out: Path) -> dict[str, Any]:
    model, cfg = checkpoint.load(ckpt)
    size = tuple(cfg.model.input_size)
    calibration = synthetic_images(n_calibration, CALIBRATION_SEED)
    sets = {"synthetic": synthetic_images(n_test, TEST_SEED)}
    aasce = sorted((AASCE / "data" / "training").glob("*.jpg"))[:n_aasce]
    if aasce:
        sets["aasce"] = [read_image(p) for p in aasce]
    result: dict[str, Any] = {"machine": machine_info(torch.get_num_threads()), "checkpoint": str(ckpt),
                              "input_size": list(size), "calibration_images": n_calibration,
                              "tolerance": {"landmark_px_mean": DRIFT_PX, "angle_deg_max": DRIFT_DEG},
                              "aasce": "used" if aasce else f"n/a (no AASCE images under {AASCE})",
                              "modes": {}}
    with tempfile.TemporaryDirectory(prefix="cobbnet-int8-") as tmp:
        fp32 = Path(tmp) / "fp32.onnx"
        export_model(PeakNet(model), fp32, size)
        runners = {"fp32": OnnxRunner(fp32)}
        for name, recipe in recipes().items():
            print(f"quantising: {name}", flush=True)
            runners[name] = OnnxRunner(quantize(fp32, Path(tmp) / f"{name}.onnx", calibration, size, recipe))
        x = torch.from_numpy(prepare_image(sets["synthetic"][0], size)[None])
        times = round_robin({name: (lambda r=r: r.run_network(x)) for name, r in runners.items()}, repeats)
        preds = {name: predictor_with(ckpt, r.run_network) for name, r in runners.items()}
        refs = {s: preds["fp32"].predict_arrays(ims, [f"{s}-{i}" for i in range(len(ims))]) for s, ims in sets.items()}
        for name, seconds in times.items():
            row: dict[str, Any] = {"median_s": statistics.median(seconds), "min_s": min(seconds),
                                   "speedup": statistics.median(times["fp32"]) / statistics.median(seconds)}
            if name != "fp32":
                for s, ims in sets.items():
                    got = preds[name].predict_arrays(ims, [f"{s}-{i}" for i in range(len(ims))])
                    row[f"drift_{s}"] = d = prediction_drift(refs[s], got)
                    row[f"within_tolerance_{s}"] = d["within_tolerance"]
            result["modes"][name] = row
    write_json(out, result)
    return result


def print_table(result: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    sets = [k.removeprefix("drift_") for k in next(iter(r for n, r in result["modes"].items() if n != "fp32"))
            if k.startswith("drift_")]
    table = Table(title=f"int8 against fp32, ONNX Runtime, network {result['input_size'][0]}x{result['input_size'][1]}")
    for col in ("graph", "median s", "speed-up", *(f"{s}: px / max deg" for s in sets)):
        table.add_column(col, justify="left" if col == "graph" else "right")
    for name, r in result["modes"].items():
        cells = [f"{r[f'drift_{s}']['landmark_px_mean']:.2f} / {r[f'drift_{s}']['angle_deg_max']:.2f}"
                 if f"drift_{s}" in r else "-" for s in sets]
        table.add_row(name, f"{r['median_s']:.3f}", f"{r['speedup']:.2f}x", *cells)
    Console().print(table)
    print(f"tolerance: {DRIFT_PX} px mean, {DRIFT_DEG} degrees; AASCE: {result['aasce']}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=Path, default=None, help="default: the bundled model")
    parser.add_argument("--calibration", type=int, default=16, help="synthetic calibration radiographs")
    parser.add_argument("--test", type=int, default=8, help="synthetic test radiographs")
    parser.add_argument("--aasce", type=int, default=16, help="AASCE radiographs, when present")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    ckpt = args.checkpoint or bundled_checkpoint()
    print_table(run(ckpt, args.calibration, args.test, args.aasce, args.repeats, args.out))


if __name__ == "__main__":
    main()
