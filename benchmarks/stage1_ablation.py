"""Stage-1 training changes, one at a time, from scratch on a short schedule.

    python benchmarks/stage1_ablation.py [--epochs 4] [--arms base clamp skip tall seed1 tall-seed1 ...] \\
        [--out benchmarks/results/stage1-ablation]

Each arm is ``configs/stage1.yaml`` (the recipe of the shipped stage 1's first phase) with one
change undone or made, trained from scratch with the same seed for ``--epochs`` epochs
(``cobbnet train ... --resume``, so an interrupted arm continues; a finished one is not
trained again), then its last epoch is read by the whole pipeline (chain, the bundled stage 2,
no input gate: the gate is calibrated on the shipped model) on the frozen patient-grouped
split. Differences against ``base`` (against ``seed1`` for an arm with that seed,
``REFERENCE``) come with a paired bootstrap 95% interval over the same radiographs. Writes ``ablation.json`` and ``ablation.md`` under ``--out``; each arm's
training seconds (wall clock) are kept beside its run as ``train-seconds.txt``.
"""

from __future__ import annotations

import argparse
import datetime
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from cobbnet.infer.evaluate import predict_samples, score
from cobbnet.infer.predict import Predictor
from cobbnet.io.aasce import read_split
from cobbnet.io.outputs import write_json, write_text
from cobbnet.io.splits import split_indices
from cobbnet.spine.audit import repaired_landmarks
from cobbnet.spine.metrics import levels_right, smape_difference

ROOT = Path(__file__).resolve().parents[1]
AASCE = ROOT.parent / "shared" / "boostnet_labeldata"
SPLIT = "aasce-holdout"  # configs/splits/aasce-holdout.txt
CONFIG = "configs/stage1.yaml"
ARMS: dict[str, tuple[str, list[str]]] = {
    "base": ("configs/stage1.yaml as it is (focal loss from logits, faulty labels repaired, 384 x 192)", []),
    "clamp": ("the focal loss on the clamped sigmoid, as CenterNet", ["loss.focal_logits=false"]),
    "skip": ("faulty training labels left out, not repaired", ["data.faulty_labels=skip"]),
    "tall": ("a taller input, 512 x 192 (the radiographs' median aspect is 2.69)", ["model.input_size=[512,192]"]),
    "seed1": ("none, another seed: the run-to-run noise", ["train.seed=1"]),
    "tall-seed1": ("the taller input with the other seed", ["model.input_size=[512,192]", "train.seed=1"]),
    "clamp-seed1": ("the clamped sigmoid with the other seed", ["loss.focal_logits=false", "train.seed=1"]),
    "skip-seed1": ("faulty labels left out with the other seed", ["data.faulty_labels=skip", "train.seed=1"]),
}

# the arm each is compared with, where not base: the same seed
REFERENCE = {"tall-seed1": "seed1", "clamp-seed1": "seed1", "skip-seed1": "seed1"}


def run_dir(arm: str) -> Path:
    return ROOT / "runs" / f"abl-{arm}" / "fold-0"


def trained_epochs(arm: str) -> int:
    metrics = run_dir(arm) / "logs" / "version_0" / "metrics.csv"
    if not (run_dir(arm) / "last.safetensors").is_file() or not metrics.is_file():
        return 0
    lines = [ln.split(",") for ln in metrics.read_text().splitlines()[1:]]
    return 1 + max((int(ln[0]) for ln in lines if ln and ln[0].isdigit()), default=-1)


def train(arm: str, epochs: int) -> None:
    """Train one arm to ``epochs`` (resuming), adding the wall seconds to its train-seconds.txt."""
    if trained_epochs(arm) >= epochs:
        return
    cmd = ["cobbnet", "train", "--config", CONFIG, "--resume", f"train.epochs={epochs}",
           f"train.name=abl-{arm}", *ARMS[arm][1]]
    print(" ".join(cmd), flush=True)
    start = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=ROOT)
    seconds_file = run_dir(arm) / "train-seconds.txt"
    before = float(seconds_file.read_text()) if seconds_file.is_file() else 0.0
    seconds_file.write_text(f"{before + time.perf_counter() - start:.0f}\n")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    p.add_argument("--root", type=Path, default=AASCE)
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "stage1-ablation")
    a = p.parse_args(argv)
    arms = list(dict.fromkeys(["base", *a.arms, *(REFERENCE[x] for x in a.arms if x in REFERENCE)]))
    samples = read_split(a.root, "training")
    _, val = split_indices([s.name for s in samples], 15, 0, holdout_file=SPLIT)
    val_samples = [samples[i] for i in val]
    labels = repaired_landmarks(val_samples)
    true = labels[0]  # as score() compares them
    results, angles, names = {}, {}, {}
    for arm in arms:
        train(arm, a.epochs)
        # ONNX Runtime fp32 on every machine: bf16 autocast, where a CPU has it, reads differently
        predictor = Predictor(run_dir(arm) / "last.safetensors", gate=False, precision="fp32")
        pred, _, stage1, _ = predict_samples(predictor, val_samples)
        both, pred_angles, true_angles = score(val_samples, pred, labels)
        alone, alone_angles, _ = score(val_samples, stage1, labels)
        angles[arm] = (pred_angles, alone_angles)
        names[arm] = levels_right(np.nan_to_num(pred, nan=-1e9), true)  # a radiograph not read: wrong
        seconds = run_dir(arm) / "train-seconds.txt"
        results[arm] = {"change": ARMS[arm][0], "overrides": ARMS[arm][1],
                        "train_seconds": float(seconds.read_text()) if seconds.is_file() else None,
                        "stage1+2": both, "stage1": alone}
        print(arm, f"SMAPE {both['smape']:.2f}, stage 1 alone {alone['smape']:.2f}", flush=True)
    for arm in arms[1:]:
        ref = REFERENCE.get(arm, "base")
        results[arm]["reference"] = ref
        for k, key in enumerate(("stage1+2", "stage1")):
            d, lo, hi = smape_difference(angles[ref][k], angles[arm][k], true_angles)
            results[arm][key]["smape_minus_reference"] = [d, lo, hi]
        results[arm]["levels_right_vs_reference"] = [int(names[ref].sum()), int(names[arm].sum())]
    meta = {"epochs": a.epochs, "config": CONFIG, "split": SPLIT, "radiographs": len(val_samples),
            "cpus": os.cpu_count(), "date": datetime.date.today().isoformat(),
            "command": " ".join(["python", *sys.argv])}
    write_json(a.out / "ablation.json", {"meta": meta, "arms": results})
    write_text(a.out / "ablation.md", report(meta, results))
    print(report(meta, results))


def report(meta: dict, results: dict) -> str:
    lines = [f"Stage 1 from scratch, {meta['epochs']} epochs each, `{meta['config']}` with one change; "
             f"the last epoch read by the whole pipeline (bundled stage 2, no gate) on the frozen split "
             f"({meta['radiographs']} radiographs). `{meta['command']}`, {meta['date']}, {meta['cpus']} CPUs.",
             "", "| arm | change | training (min) | SMAPE stage 1 alone | SMAPE stage 1 + 2 | "
             "difference to base (or the arm named), stage 1 + 2 (paired 95%) | landmark error by level / matched (px) | "
             "all 17 levels right (%) |", "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for arm, r in results.items():
        both, alone = r["stage1+2"], r["stage1"]
        ci = lambda m: f"{m['smape']:.2f} ({m['smape_ci95'][0]:.2f}-{m['smape_ci95'][1]:.2f})"  # noqa: E731
        diff = both.get("smape_minus_reference")
        diff = "-" if diff is None else f"{diff[0]:+.2f} ({diff[1]:+.2f} to {diff[2]:+.2f})"
        if r.get("reference", "base") != "base":
            diff += f" against {r['reference']}"
        minutes = "-" if r["train_seconds"] is None else f"{r['train_seconds'] / 60:.0f}"
        lines.append(f"| {arm} | {r['change']} | {minutes} | {ci(alone)} | {ci(both)} | {diff} | "
                     f"{both['landmark_error_px']:.1f} / {both['landmark_error_matched_px']:.1f} | "
                     f"{both['levels_right_pct']:.1f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
