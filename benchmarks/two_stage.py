"""Stage 1 alone and stage 1 + 2 on the fixed patient-grouped validation split.

    python benchmarks/two_stage.py --stage1 runs/stage1/fold-0/best.safetensors \\
        --stage2 runs/stage2/best.safetensors --out benchmarks/results/two-stage [--limit N]

Without ``--stage1``/``--stage2`` the bundled model is measured. Writes, under ``--out``,
``metrics.json`` (stage 1 + 2), ``stage1/metrics.json`` (stage 1 alone, the chain's corners
before stage 2, from the same run), ``stage1-errors.json`` (how far stage 1's vertebrae are
from the true ones in centre, tilt and width: what stage 2's training jitter must cover)
and ``two-stage.md``. The split is configs/splits/aasce-holdout.txt (46 patients, 94 radiographs).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from cobbnet.infer.bundle import sha256
from cobbnet.infer.evaluate import predict_samples, score
from cobbnet.infer.predict import VIEWS_DEFAULT, Predictor
from cobbnet.io.aasce import read_split
from cobbnet.io.outputs import write_json, write_text
from cobbnet.io.splits import split_indices
from cobbnet.spine import patches
from cobbnet.spine.audit import repaired_landmarks
from cobbnet.spine.metrics import nearest_true

AASCE = Path(__file__).resolve().parents[2] / "shared" / "boostnet_labeldata"
SPLIT = "aasce-holdout"  # configs/splits/aasce-holdout.txt


def stage1_errors(stage1: np.ndarray, true: np.ndarray) -> dict[str, float]:
    """Stage 1's vertebrae against the nearest true ones: centre offset in widths, tilt in
    degrees, log width ratio; median, 90th and 95th percentiles."""
    match = np.take_along_axis(true, nearest_true(stage1, true)[:, :, None, None], axis=1)
    fp, ft = patches.frames(stage1), patches.frames(match)  # (N, 17, 4)
    centre = np.linalg.norm(fp[..., :2] - ft[..., :2], axis=-1) / ft[..., 3]
    tilt = np.degrees(np.abs(np.angle(np.exp(1j * (fp[..., 2] - ft[..., 2])))))
    scale = np.abs(np.log(fp[..., 3] / ft[..., 3]))
    out = {}
    for name, v in (("centre_widths", centre), ("tilt_deg", tilt), ("log_width", scale)):
        for q in (50, 90, 95):
            out[f"{name}_p{q}"] = float(np.percentile(v, q))
    return out


def table(both: dict, alone: dict) -> str:
    rows = [("SMAPE (%)", "smape"), ("landmark error, by level (px)", "landmark_error_px"),
            ("landmark error, nearest true vertebra (px)", "landmark_error_matched_px"),
            ("MAE angle 1 / 2 / 3 (deg)", None), ("all three angles within 5 deg (%)", "within_5deg_all_pct"),
            ("all 17 levels right (%)", "levels_right_pct")]
    lines = [f"{both['n_images']} radiographs, {both.get('n_rejected', 0)} rejected by the input gate "
             "(left out of the figures)", "", "| metric | stage 1 alone | stage 1 + 2 |", "| --- | ---: | ---: |"]
    for label, key in rows:
        cells = []
        for m in (alone, both):
            if key is None:
                cells.append(" / ".join(f"{m[f'mae_{c}']:.2f}" for c in ("pt", "mt", "tl")))
            elif key == "smape":
                lo, hi = m["smape_ci95"]
                cells.append(f"{m['smape']:.2f} ({lo:.2f}-{hi:.2f})")
            else:
                cells.append(f"{m[key]:.2f}")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def speed(n: int, repeats: int = 5, reference: Path | None = None, stage2: Path | None = None,
          views: int | None = None) -> dict[str, float]:
    """Seconds per radiograph end to end (read a 2000 x 800 JPEG, both stages, angles) of the
    bundled model with stage 2 (its default views, and one view: ``_1view``) and without: the median of ``repeats`` warm rounds over ``n``
    synthetic files, all alternating so that each sees the same machine load. ``ratio`` is
    the median over rounds of each round's own ratio, ``ratio_range`` its smallest and largest:
    the load of a shared machine moves the seconds more than it moves a round's ratio.

    ``reference``: the stage-1 ONNX graph of an earlier bundle, read alone the same way (its
    input size from the graph); ``ratio_to_reference`` is then end to end against it, the
    yardstick when the bundled stage 1 itself changed. ``stage2``: a stage-2 checkpoint to time
    in place of the bundled one (exported to ONNX in memory, fp32), before shipping it;
    ``views`` its test-time views (None: the predictor's default)."""
    import tempfile

    import cv2

    from cobbnet.infer.onnx import OnnxModel
    from cobbnet.io.synthetic import make_radiograph

    preds = {"stage1": Predictor(refine=False), "stage1+2": Predictor(refine=stage2, views=views),
             "stage1+2_1view": Predictor(refine=stage2, views=1)}
    if reference is not None:
        preds["reference"] = Predictor(refine=False)
        preds["reference"].stage1 = OnnxModel(reference)
        preds["reference"].input_size = tuple(int(v) for v in preds["reference"].stage1.input_shape[-2:])
    times: dict[str, list[float]] = {k: [] for k in preds}
    with tempfile.TemporaryDirectory() as tmp:
        files = []
        for i in range(n):
            image, _ = make_radiograph(np.random.default_rng([7, i]), (2000, 800))
            files.append(Path(tmp) / f"r{i}.jpg")
            cv2.imwrite(str(files[-1]), image, [cv2.IMWRITE_JPEG_QUALITY, 90])
        for p in preds.values():
            p.predict(files[0])  # warm
        for _ in range(repeats):
            for name, p in preds.items():
                start = time.perf_counter()
                for f in files:
                    p.predict(f)
                times[name].append((time.perf_counter() - start) / n)
    out = {f"{k}_s": float(np.median(v)) for k, v in times.items()}
    ratios = np.array(times["stage1+2"]) / np.array(times["stage1"])
    out["ratio"] = float(np.median(ratios))
    out["ratio_range"] = [float(ratios.min()), float(ratios.max())]
    if reference is not None:
        for key, suffix in (("stage1+2", ""), ("stage1+2_1view", "_1view")):
            ratios = np.array(times[key]) / np.array(times["reference"])
            out[f"ratio_to_reference{suffix}"] = float(np.median(ratios))
            out[f"ratio_to_reference{suffix}_range"] = [float(ratios.min()), float(ratios.max())]
        out["reference"] = {"onnx": str(reference), "sha256": sha256(reference),
                            "input_size": list(preds["reference"].input_size)}
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--stage1", type=Path, default=None)
    p.add_argument("--stage2", type=Path, default=None)
    p.add_argument("--root", type=Path, default=AASCE)
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/two-stage"))
    p.add_argument("--limit", type=int, default=None, help="only the first N validation radiographs")
    p.add_argument("--iterations", type=int, default=None, help="stage-2 passes (default: the predictor's)")
    p.add_argument("--views", type=int, default=None, help="stage-2 views of each vertebra (default: the predictor's)")
    p.add_argument("--no-gate", action="store_true", help="score every radiograph, also those the gate rejects")
    p.add_argument("--speed", type=int, default=0, metavar="N",
                   help="instead: time the bundled model end to end on N synthetic radiographs")
    p.add_argument("--rounds", type=int, default=15, help="timed rounds with --speed")
    p.add_argument("--reference", type=Path, default=None, metavar="ONNX",
                   help="with --speed: also time this stage-1 graph alone (an earlier bundle's) as the yardstick")
    a = p.parse_args(argv)
    if a.speed:
        result = {**speed(a.speed, a.rounds, a.reference, a.stage2, a.views),
                  "stage2": str(a.stage2) if a.stage2 else "bundled", "views": a.views or VIEWS_DEFAULT,
                  "radiographs": a.speed, "rounds": a.rounds, "cpus": os.cpu_count(),
                  "date": datetime.date.today().isoformat(), "command": " ".join(["python", *sys.argv])}
        write_json(a.out / "speed.json", result)
        print(json.dumps(result, indent=1))
        return
    samples = read_split(a.root, "training")
    _, val = split_indices([s.name for s in samples], 15, 0, holdout_file=SPLIT)
    val_samples = [samples[i] for i in val][: a.limit]
    predictor = Predictor(a.stage1, refine=a.stage2 if a.stage2 else None,
                          **({} if a.iterations is None else {"iterations": a.iterations}),
                          views=a.views,
                          gate=not a.no_gate)
    start = time.perf_counter()
    pred, _, stage1, _ = predict_samples(predictor, val_samples)
    seconds = (time.perf_counter() - start) / len(val_samples)
    labels = repaired_landmarks(val_samples)
    both, alone = score(val_samples, pred, labels)[0], score(val_samples, stage1, labels)[0]
    for m in (both, alone):
        m.update(model=predictor.model, mode=predictor.mode, split=SPLIT)
    both["seconds_per_radiograph"] = seconds
    true = labels[0]  # as score() compares them
    write_json(a.out / "metrics.json", both)
    write_json(a.out / "stage1" / "metrics.json", alone)
    ok = np.isfinite(stage1).all(axis=(1, 2, 3))
    errors = stage1_errors(stage1[ok], true[ok])
    write_json(a.out / "stage1-errors.json", errors)
    write_text(a.out / "two-stage.md", table(both, alone))
    print(table(both, alone))
    print(json.dumps(errors, indent=1))


if __name__ == "__main__":
    main()
