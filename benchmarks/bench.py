"""Speed benchmark: every inference mode of every backbone, timed in one process.

Two figures per model and mode, at the network input 1024 x 512:

- network: seconds per batch of random input (batch 1 and a larger batch), and that time
  over the compute floor ``FLOPs / fp32 matmul rate`` of this machine;

Modes named ``peak-*`` run the inference network (:class:`cobbnet.nn.model.PeakNet`, the
predictor's: offsets at the heatmap's peaks only, no mask head), the others the training
network with its four dense heads; ``eager`` (dense, fp32, torch) is the baseline.
- end to end: seconds per radiograph file through ``Predictor.predict`` (JPEG read, resize,
  network, decode, Cobb angles) with the mode's engine in place of the network.

Modes are timed round-robin (one call of each mode per round), so background load on a shared
machine slows every mode alike and their ratios stay comparable. With a trained checkpoint
and the AASCE data beside the repository, each mode's drift from eager fp32 is measured too.
"""

from __future__ import annotations

import contextlib
import copy
import datetime
import logging
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from cobbnet.infer.decode import CANDIDATES
from cobbnet.infer.predict import Prediction, Predictor
from cobbnet.io.outputs import write_json, write_text
from cobbnet.io.synthetic import JPEG_QUALITY, make_radiograph
from cobbnet.nn.model import ModelConfig, PeakNet, build_model
from cobbnet.training import checkpoint
from cobbnet.training.config import Config
from cobbnet.training.hardware import cpu_flags, cpu_model

Engine = Callable[[torch.Tensor], dict[str, torch.Tensor]]  # run_network's contract
EngineBuilder = Callable[[torch.nn.Module, tuple[int, int]], Engine]

log = logging.getLogger(__name__)

INPUT_SIZE = (1024, 512)  # (H, W) the network runs at
FILE_SIZE = (2000, 800)  # (H, W) of the synthetic JPEGs: an AASCE-sized radiograph
MODELS: tuple[str, ...] = ("hrnet_w18", "hrnet_w18_small_v2", "resnet34")
BASELINE = "eager"  # every speed-up is relative to this mode in the same run
BUNDLED = "bundled model"  # the results entry of the bundled model, timed for the drift figures
FLAGS: tuple[str, ...] = ("avx2", "avx512f", "avx512_bf16", "amx_bf16")
PACKAGES: tuple[str, ...] = ("torch", "onnxruntime", "timm", "numpy")
MATMUL_N = 2048
DRIFT_PX = 1.0  # a fast mode may move landmarks this far from eager fp32, mean original pixels
DRIFT_DEG = 0.5  # and any Cobb angle this far, degrees
AASCE = Path(__file__).resolve().parents[2] / "shared" / "boostnet_labeldata"


@dataclass(frozen=True)
class Plan:
    """How much to time: ``quick`` stays under about two minutes on two cores."""

    models: tuple[str, ...]
    modes: tuple[str, ...]
    batches: tuple[int, ...]
    repeats: int
    files: int
    drift_images: int


# ---- engines: one per mode, each a copy of the model --------------------------------------


def torch_engine(model: torch.nn.Module, device: str = "cpu", dtype: torch.dtype | None = None,
                 channels_last: bool = False, compile_mode: str | None = None) -> Engine:
    """The network in torch: optional autocast ``dtype``, channels_last and torch.compile."""
    dev = torch.device(device)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    net = copy.deepcopy(model).eval().to(dev, memory_format=fmt)
    if compile_mode is not None:
        net = torch.compile(net, mode=compile_mode, dynamic=False)

    graphs = compile_mode == "reduce-overhead"  # CUDA graphs: outputs live in reused buffers

    def run(batch: torch.Tensor) -> dict[str, torch.Tensor]:
        x = batch.to(dev).contiguous(memory_format=fmt)
        if graphs:
            torch.compiler.cudagraph_mark_step_begin()
        # no_grad rather than inference_mode: inductor's weight freezing needs it
        with torch.no_grad(), torch.autocast(dev.type, dtype=dtype, enabled=dtype is not None), \
                _freezing(compile_mode is not None and dev.type == "cpu"):
            out = {k: v.float().clone() if graphs else v.float() for k, v in net(x).items()}
        if dev.type == "cuda":
            torch.cuda.synchronize()
        return out

    return run


def _freezing(on: bool) -> Any:
    """Inductor's weight freezing (constant folding, prepacked convs): its CPU inference setting."""
    if not on:
        return contextlib.nullcontext()
    import torch._inductor.config as inductor_config

    return inductor_config.patch(freezing=True)


def onnx_engine(model: torch.nn.Module, input_size: tuple[int, int]) -> Engine:
    from cobbnet.training.export import OnnxRunner

    return OnnxRunner.from_model(model, input_size).run_network


MODES: dict[str, EngineBuilder] = {
    "eager": lambda m, s: torch_engine(m),
    "channels_last": lambda m, s: torch_engine(m, channels_last=True),
    "bf16": lambda m, s: torch_engine(m, dtype=torch.bfloat16, channels_last=True),
    "compile": lambda m, s: torch_engine(m, channels_last=True, compile_mode="default"),
    "onnx": onnx_engine,
    "peak-eager": lambda m, s: torch_engine(PeakNet(m, CANDIDATES)),
    "peak-onnx": lambda m, s: onnx_engine(PeakNet(m, CANDIDATES), s),  # the predictor's default on CPUs without bf16
}
GPU_MODES: dict[str, EngineBuilder] = {
    "cuda-fp32": lambda m, s: torch_engine(m, "cuda"),
    "cuda-bf16": lambda m, s: torch_engine(m, "cuda", torch.bfloat16, channels_last=True),
    "cuda-graphs": lambda m, s: torch_engine(m, "cuda", torch.bfloat16, True, "reduce-overhead"),
    "peak-cuda-bf16": lambda m, s: torch_engine(PeakNet(m), "cuda", torch.bfloat16, channels_last=True),
}
PEAK_PREFIX = "peak-"  # modes that run the inference network
QUICK = Plan(("hrnet_w18",), ("eager", "onnx", "peak-onnx"), (1,), 2, 1, 3)
FULL = Plan(MODELS, tuple(MODES), (1, 4), 3, 2, 8)


# ---- measurements -------------------------------------------------------------------------


def round_robin(calls: dict[str, Callable[[], Any]], repeats: int, warmup: int = 1) -> dict[str, list[float]]:
    """Seconds of each call, ``repeats`` rounds of one call each, after ``warmup`` rounds."""
    for _ in range(warmup):
        for call in calls.values():
            call()
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(repeats):
        for name, call in calls.items():
            start = time.perf_counter()
            call()
            times[name].append(time.perf_counter() - start)
    return times


def summary(seconds: Sequence[float]) -> dict[str, float]:
    return {"median_s": statistics.median(seconds), "min_s": min(seconds), "max_s": max(seconds)}


def matmul_call(n: int = MATMUL_N) -> Callable[[], Any]:
    """One fp32 ``n x n`` matmul: ``2 n^3`` FLOPs of the best-tuned kernel the CPU has."""
    a, b = torch.rand(n, n), torch.rand(n, n)
    return lambda: a @ b


def matmul_gflops(n: int = MATMUL_N, repeats: int = 5) -> float:
    """Best fp32 rate of ``n x n`` matmuls on this machine, in GFLOP/s: the compute ceiling."""
    return 2 * n**3 / min(round_robin({"mm": matmul_call(n)}, repeats)["mm"]) / 1e9


def count_gflops(model: torch.nn.Module, input_size: tuple[int, int]) -> float:
    """FLOPs of one forward at batch 1 (2 per multiply-add), counted on the meta device."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    meta = copy.deepcopy(model).to("meta")
    with counter, torch.no_grad():
        meta(torch.empty(1, 1, *input_size, device="meta"))
    return counter.get_total_flops() / 1e9


def machine_info(threads: int) -> dict[str, Any]:
    versions = {name: _version(name) for name in PACKAGES}
    flags = cpu_flags()
    return {
        "cpu": cpu_model(), "machine": platform.machine(), "python": platform.python_version(),
        "flags": {f: f in flags for f in FLAGS}, "threads": threads, "versions": versions,
        "load_average": list(os.getloadavg()),  # other jobs on the machine slow every mode
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
    }


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def write_radiographs(folder: Path, n: int, size: tuple[int, int] = FILE_SIZE) -> list[Path]:
    """``n`` synthetic radiographs of ``size`` as JPEG files in ``folder``."""
    paths = []
    for i in range(n):
        image, _ = make_radiograph(np.random.default_rng([7, i]), size)
        path = folder / f"radiograph-{i}.jpg"
        cv2.imwrite(str(path), image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        paths.append(path)
    return paths


def torch_predictor(path: Path, **kwargs: Any) -> Predictor:
    """A stage-1-only ``Predictor`` that runs the torch network (the modes time stage 1)."""
    return Predictor(path, engine="torch", refine=kwargs.pop("refine", False), **kwargs)


def as_peaks(engine: Engine) -> Callable[[np.ndarray], dict[str, np.ndarray]]:
    """A mode's engine in the predictor's numpy contract: dense heads are read at their
    ``CANDIDATES`` strongest peaks, as the inference network does itself."""
    from cobbnet.nn.decode import top_peaks
    from cobbnet.nn.heads import gather

    def run(x: np.ndarray) -> dict[str, np.ndarray]:
        out = engine(torch.from_numpy(x))
        if "ind" not in out:
            scores, ind = top_peaks(out["hm"], CANDIDATES)
            out = {"hm": out["hm"], "scores": scores, "ind": ind,
                   "reg": gather(out["reg"], ind), "cnr": gather(out["cnr"], ind)}
        return {k: v.cpu().numpy() for k, v in out.items()}

    return run


def predictor_with(path: Path, engine: Engine) -> Predictor:
    """A CPU fp32 stage-1-only ``Predictor`` of checkpoint ``path`` whose network is ``engine``."""
    pred = torch_predictor(path, device="cpu", precision="fp32")
    pred.stage1 = as_peaks(engine)  # the same contract as the predictor's own engines
    return pred


# ---- one model ----------------------------------------------------------------------------


def mode_gflops(mode: str, gflops: dict[str, float]) -> float:
    """The FLOPs a mode computes: the inference network's or the dense one's."""
    return gflops["peak" if mode.startswith(PEAK_PREFIX) else "dense"]


def _speed_rows(times: dict[str, list[float]], per: int, gflops: dict[str, float] | None = None,
                rate: float | None = None) -> list[dict[str, Any]]:
    """Rows of ``summary`` plus speed-ups over ``BASELINE``: of the medians, and of the
    minima (the best estimate of each mode's speed on an idle machine). With ``gflops``
    (per image, dense and peak) and the matmul ``rate`` (GFLOP/s), each row also gets its
    floor ratio, of minima too: the fastest call against the fastest matmul of the same
    rounds doing the mode's own FLOPs."""
    base = times.get(BASELINE)
    rows = []
    for mode, seconds in times.items():
        row = {"mode": mode, **summary(seconds)}
        if gflops and rate:
            row["gflops"] = mode_gflops(mode, gflops)
            row["images_per_s"] = per / row["median_s"]
            row["floor_ratio"] = row["min_s"] / (row["gflops"] * per / rate)
        row["speedup"] = statistics.median(base) / row["median_s"] if base else None
        row["speedup_min"] = min(base) / row["min_s"] if base else None
        rows.append(row)
    return rows


def bench_model(name: str, plan: Plan, modes: dict[str, EngineBuilder],
                files: list[Path], work: Path, ckpt: Path | None = None,
                input_size: tuple[int, int] = INPUT_SIZE) -> dict[str, Any]:
    """Network and end-to-end figures of one backbone under every mode of ``modes``.

    Random weights at ``input_size`` unless ``ckpt`` is given (then its weights and size).
    A matmul is timed in every round beside the modes, so each floor comes from the same
    moments of machine load as the times it divides.
    """
    if ckpt is None:
        cfg = Config(model=ModelConfig(backbone=name, input_size=tuple(input_size)))
        ckpt = checkpoint.save(work / name, build_model(cfg.model).eval(), cfg)
    model, cfg = checkpoint.load(ckpt)
    size = tuple(cfg.model.input_size)
    gflops = {"dense": count_gflops(model, size), "peak": count_gflops(PeakNet(model), size)}
    result: dict[str, Any] = {"checkpoint": str(ckpt), "input_size": list(size),
                              "gflops": gflops["dense"], "gflops_peak": gflops["peak"],
                              "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
                              "setup_s": {}, "errors": {}, "network": [], "end_to_end": []}
    engines: dict[str, Engine] = {}
    for mode, build in modes.items():
        start = time.perf_counter()
        try:
            engines[mode] = build(model, size)
            engines[mode](torch.rand(1, 1, *size))  # compilation and export happen here
        except Exception as err:  # a mode this machine cannot run is reported, not fatal
            engines.pop(mode, None)
            result["errors"][mode] = f"{type(err).__name__}: {(str(err).splitlines() or [''])[0]}"
        result["setup_s"][mode] = time.perf_counter() - start
        log.info("%s %s: ready in %.1f s %s", name, mode, result["setup_s"][mode],
                 result["errors"].get(mode, ""))
    for batch in plan.batches:
        x = torch.rand(batch, 1, *size)
        calls = {m: (lambda e=e, x=x: e(x)) for m, e in engines.items()}
        times = round_robin({**calls, "matmul": matmul_call()}, plan.repeats)
        rate = 2 * MATMUL_N**3 / min(times.pop("matmul")) / 1e9  # the idle machine's rate
        rows = _speed_rows(times, batch, gflops, rate)
        result["network"] += [{"batch": batch, **r, "matmul_gflops": rate} for r in rows]
        log.info("%s: network at batch %d timed", name, batch)
    preds = {m: predictor_with(ckpt, e) for m, e in engines.items()}
    calls = {m: (lambda p=p: [p.predict(f) for f in files]) for m, p in preds.items()}
    times = round_robin(calls, plan.repeats, warmup=0)  # engines are warm already
    times = {m: [s / len(files) for s in v] for m, v in times.items()}
    result["end_to_end"] = _speed_rows(times, 1)
    log.info("%s: end to end timed", name)
    result["predictors"] = preds
    return result


def drift(preds: dict[str, Predictor], n: int, root: Path | None = None) -> dict[str, Any] | str:
    """Each mode against eager fp32 on ``n`` AASCE radiographs (under ``root``, default
    ``AASCE``): mean landmark distance in original pixels, largest angle change in degrees."""
    root = AASCE if root is None else root
    images = sorted((root / "data" / "training").glob("*.jpg"))[:n]
    if not images:
        return f"n/a (no AASCE images under {root})"
    ref = [preds[BASELINE].predict(p) for p in images]
    out = {}
    for mode, pred in preds.items():
        if mode == BASELINE:
            continue
        out[mode] = prediction_drift(ref, [pred.predict(p) for p in images])
    return out


def prediction_drift(ref: Sequence[Prediction], got: Sequence[Prediction]) -> dict[str, Any]:
    """How far ``got`` strays from ``ref`` (the same images): mean corner distance in
    original pixels, largest and mean per-image angle change in degrees, and whether both
    stay within ``DRIFT_PX`` and ``DRIFT_DEG``."""
    px = [np.linalg.norm(g.landmarks - r.landmarks, axis=-1).mean() for g, r in zip(got, ref, strict=True)]
    deg = [np.abs(g.angles - r.angles).max() for g, r in zip(got, ref, strict=True)]
    return {"landmark_px_mean": float(np.mean(px)), "angle_deg_max": float(np.max(deg)),
            "angle_deg_mean": float(np.mean(deg)), "images": len(ref),
            "within_tolerance": bool(np.mean(px) <= DRIFT_PX and np.max(deg) <= DRIFT_DEG)}


# ---- the run ------------------------------------------------------------------------------


def run_benchmark(quick: bool = False, models: Sequence[str] | None = None,
                  modes: Sequence[str] | None = None, out: str | Path | None = None,
                  checkpoint_path: str | Path | None = None, threads: int | None = None,
                  show: bool = True, input_size: tuple[int, int] = INPUT_SIZE,
                  file_size: tuple[int, int] = FILE_SIZE, repeats: int | None = None,
                  bundled_drift: bool = True) -> dict[str, Any]:
    """Time the plan (``QUICK`` or ``FULL``, narrowed by ``models``/``modes``); write ``out``.

    ``checkpoint_path`` replaces the random weights of the backbone it was trained with and
    measures each mode's drift on AASCE radiographs. Without it, when the AASCE radiographs
    are present (and ``bundled_drift``), the bundled model is timed as one more entry,
    ``BUNDLED``, at its own input size, and measures the drift. ``input_size`` and
    ``file_size`` (H, W) are the network input and the radiograph files; ``repeats``
    overrides the plan's rounds. Returns the JSON-ready results.
    """
    plan = QUICK if quick else FULL
    if threads:
        torch.set_num_threads(threads)
    gpu = torch.cuda.is_available()
    available = {**MODES, **(GPU_MODES if gpu else {})}
    chosen = tuple(modes) if modes else plan.modes + (tuple(GPU_MODES) if gpu else ())
    unknown = [m for m in chosen if m not in available]
    if unknown:
        raise ValueError(f"unknown or unavailable mode(s) {unknown}; available: {', '.join(available)}")
    if BASELINE not in chosen:
        chosen = (BASELINE, *chosen)
    ckpt_cfg = checkpoint.load(checkpoint_path)[1] if checkpoint_path else None
    names = tuple(models) if models else plan.models
    if ckpt_cfg and ckpt_cfg.model.backbone not in names:  # a checkpoint is always timed
        names += (ckpt_cfg.model.backbone,)
    plan = Plan(names, chosen, plan.batches, repeats or plan.repeats, plan.files, plan.drift_images)
    results: dict[str, Any] = {
        "machine": machine_info(torch.get_num_threads()), "plan": asdict(plan),
        "input_size": list(input_size), "file_size": list(file_size),
        "matmul_gflops": matmul_gflops(), "models": {},
        "gpu": torch.cuda.get_device_name() if gpu else "not available on this machine",
        "drift": f"n/a (no AASCE radiographs under {AASCE})",
    }
    # (entry name, its checkpoint: None for random weights at input_size)
    runs = [(name, checkpoint_path if ckpt_cfg and ckpt_cfg.model.backbone == name else None)
            for name in names]
    if checkpoint_path is None and bundled_drift and AASCE.is_dir():
        from cobbnet.infer.bundle import bundled_checkpoint

        runs.append((BUNDLED, bundled_checkpoint()))
    with tempfile.TemporaryDirectory(prefix="cobbnet-bench-") as tmp:
        work = Path(tmp)
        files = write_radiographs(work, plan.files, file_size)
        for name, own in runs:
            res = bench_model(name, plan, {m: available[m] for m in chosen}, files, work, own,
                              input_size)
            preds = res.pop("predictors")
            if own and AASCE.is_dir():
                results["drift"] = drift(preds, plan.drift_images)
                results["drift_checkpoint"] = str(own)
            results["models"][name] = res
    results["matmul_gflops_after"] = matmul_gflops()  # a drop means the machine got busier
    results["load_average_after"] = list(os.getloadavg())
    if out:
        write_json(out, results)
        write_text(Path(out).with_suffix(".md"), markdown(results))
    if show:
        print_tables(results)
    return results


def print_tables(results: dict[str, Any]) -> None:
    """The results as rich tables: network, then end to end."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if not console.is_terminal:
        console.width = max(console.width, 132)  # logs and pipes: keep each table row whole
    m = results["machine"]
    console.print(f"{m['cpu']}, {m['threads']} threads, {m['date']}; GPU: {results['gpu']}")
    console.print(f"fp32 matmul {results['matmul_gflops']:.0f} GFLOP/s at the start, "
                  f"{results.get('matmul_gflops_after', float('nan')):.0f} at the end")
    net = Table(title="network, seconds per call")
    for col in ("model", "input", "GFLOP", "mode", "batch", "median s", "min s", "max s", "img/s",
                "x floor", "speed-up", "of minima"):
        net.add_column(col, justify="left" if col in ("model", "input", "mode") else "right")
    e2e = Table(title="end to end, seconds per radiograph file")
    for col in ("model", "mode", "median s", "min s", "max s", "speed-up", "of minima"):
        e2e.add_column(col, justify="left" if col in ("model", "mode") else "right")
    for name, res in results["models"].items():
        for r in res["network"]:
            net.add_row(name, "x".join(map(str, res["input_size"])), f"{r['gflops']:.1f}", r["mode"], str(r["batch"]), f"{r['median_s']:.3f}",
                        f"{r['min_s']:.3f}", f"{r['max_s']:.3f}", f"{r['images_per_s']:.2f}",
                        f"{r['floor_ratio']:.2f}", _x(r["speedup"]), _x(r["speedup_min"]))
        for r in res["end_to_end"]:
            e2e.add_row(name, r["mode"], f"{r['median_s']:.3f}", f"{r['min_s']:.3f}",
                        f"{r['max_s']:.3f}", _x(r["speedup"]), _x(r["speedup_min"]))
        for mode, err in res["errors"].items():
            console.print(f"[yellow]{name} {mode}: not run ({err})[/yellow]")
    console.print(net, e2e)
    console.print(f"drift vs eager fp32: {results['drift']}")


def _x(speedup: float | None) -> str:
    return f"{speedup:.2f}x" if speedup else "-"


def markdown(results: dict[str, Any]) -> str:
    """The results as the markdown tables docs/speed.md quotes (written beside the JSON)."""
    m = results["machine"]
    flags = ", ".join(f"{f} {'yes' if on else 'no'}" for f, on in m["flags"].items())
    versions = ", ".join(f"{k} {v}" for k, v in m["versions"].items() if v)
    lines = [f"{m['cpu']}, {m['threads']} threads, {m['date']}; {flags}; {versions}; "
             f"fp32 matmul {results['matmul_gflops']:.0f} GFLOP/s at the start, "
             f"{results.get('matmul_gflops_after', float('nan')):.0f} at the end; GPU: {results['gpu']}", "",
             "Network, seconds per call:", "",
             "| model | input | GFLOP | mode | batch | median s | min s | img/s | x floor | speed-up | of minima |",
             "|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, res in results["models"].items():
        size = "x".join(map(str, res["input_size"]))
        for r in res["network"]:
            lines.append(f"| {name} | {size} | {r['gflops']:.1f} | {r['mode']} | {r['batch']} | {r['median_s']:.2f} | "
                         f"{r['min_s']:.2f} | {r['images_per_s']:.2f} | {r['floor_ratio']:.2f} | "
                         f"{_x(r['speedup'])} | {_x(r['speedup_min'])} |")
    lines += ["", "End to end, seconds per radiograph file:", "",
              "| model | mode | median s | min s | max s | speed-up | of minima |", "|---|---|---:|---:|---:|---:|---:|"]
    for name, res in results["models"].items():
        for r in res["end_to_end"]:
            lines.append(f"| {name} | {r['mode']} | {r['median_s']:.2f} | {r['min_s']:.2f} | {r['max_s']:.2f} | "
                         f"{_x(r['speedup'])} | {_x(r['speedup_min'])} |")
    drift_ = results["drift"]
    source = f" ({results['drift_checkpoint']})" if "drift_checkpoint" in results else ""
    lines += ["", f"Drift from eager fp32{source}:" if isinstance(drift_, dict) else f"Drift from eager fp32: {drift_}"]
    if isinstance(drift_, dict):
        lines += ["", "| mode | images | landmark px, mean | angle degrees, max | within tolerance |",
                  "|---|---:|---:|---:|---|"]
        lines += [f"| {mode} | {d['images']} | {d['landmark_px_mean']:.1e} | {d['angle_deg_max']:.1e} | "
                  f"{'yes' if d.get('within_tolerance') else 'no'} |" for mode, d in drift_.items()]
    return "\n".join(lines) + "\n"
