"""The paper's ablation on the AASCE training split: keypoints only, + segmentation, + HCL.

Trains each variant on the same fold, seed(s) and schedule (resuming any run already under
``--out``), evaluates each run's best checkpoint on the fold it was trained without, and
writes ``benchmarks/results/ablation.json`` and ``ablation.md`` (a table with mean and
spread over seeds).

    python benchmarks/ablation.py                        # train what is missing, evaluate, table
    python benchmarks/ablation.py --no-train             # table from the runs that exist
    python benchmarks/ablation.py --variants kpt hcl --seeds 0 1

A variant is ``NAME=OVERRIDE,OVERRIDE`` on top of ``--config`` and ``--set``; the four
built in are below. Runs are named ``abl-NAME`` (seed 0) or ``abl-NAME-sSEED``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from datetime import date
from pathlib import Path

import numpy as np

VARIANTS = {
    "kpt": ["loss.variant=kpt"],  # (a) keypoint estimator, no mask branch in the loss
    "seg": ["loss.variant=seg"],  # (b) + segmentation loss, a_csc = 0
    "hcl": ["loss.variant=hcl", "loss.fwt=soft"],  # (c) + heterogeneous consistency, soft FWT
    "hcl-hard": ["loss.variant=hcl", "loss.fwt=hard"],  # (d) the same with the exact fill
}
LABELS = {"kpt": "(a) keypoints only", "seg": "(b) + segmentation (a_csc = 0)",
          "hcl": "(c) + HCL, soft FWT", "hcl-hard": "(d) + HCL, hard FWT"}
COLUMNS = [("SMAPE", "smape"), ("SMAPE PT", "smape_pt"), ("SMAPE MT", "smape_mt"),
           ("SMAPE TL", "smape_tl"), ("landmark px", "landmark_error_px"), ("MAE PT", "mae_pt"),
           ("MAE MT", "mae_mt"), ("MAE TL", "mae_tl"), ("PT within 5 deg (%)", "within_5deg")]
HERE = Path(__file__).resolve().parent


def run_name(variant: str, seed: int) -> str:
    return f"abl-{variant}" if seed == 0 else f"abl-{variant}-s{seed}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="configs/cpu.yaml")
    parser.add_argument("--set", nargs="*", default=["data.extra_synthetic=48"],
                        help="overrides shared by every variant")
    parser.add_argument("--variants", nargs="+", default=["kpt", "seg", "hcl", "hcl-hard"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--fold", type=int, default=0)
    parser.add_argument("--out", default="runs", help="folder of the training runs")
    parser.add_argument("--train", action=argparse.BooleanOptionalAction, default=True,
                        help="train (or resume) runs that have not finished")
    parser.add_argument("--results", type=Path, default=HERE / "results" / "ablation")
    args = parser.parse_args(argv)

    from cobbnet.infer.evaluate import evaluate, fold_samples
    from cobbnet.io.aasce import read_split
    from cobbnet.training.config import load_config
    from cobbnet.training.train import run_dir, train_folds

    rows: dict[str, list[dict]] = {}
    splits: dict[tuple[str, str], list] = {}
    for variant in args.variants:
        for seed in args.seeds:
            overrides = [*args.set, *VARIANTS[variant], f"train.seed={seed}",
                         f"train.name={run_name(variant, seed)}", f"train.out_dir={args.out}"]
            cfg = load_config(args.config, overrides)
            cfg.data.fold = args.fold
            folder = run_dir(cfg)
            if args.train:
                train_folds(cfg, [args.fold], resume=True)
            best = folder / "best.safetensors"
            if not best.is_file():
                print(f"{folder}: no best.safetensors yet; left out of the table", file=sys.stderr)
                continue
            key = (cfg.data.root, cfg.data.split)
            if key not in splits:  # read each labelled split once
                splits[key] = read_split(*key)
            metrics = evaluate(best, fold_samples(best, splits[key]), folder / "evaluation")
            epochs_done = json.loads(best.with_suffix(".json").read_text())["metrics"].get("epoch", -1) + 1
            metrics.update(seed=seed, run=str(folder), best_epoch=epochs_done, command=(
                f"cobbnet train --config {args.config} --fold {args.fold} --resume {' '.join(overrides)}"))
            rows.setdefault(variant, []).append(metrics)
    if not rows:
        print("no finished runs to report", file=sys.stderr)
        return 1
    args.results.parent.mkdir(parents=True, exist_ok=True)
    result = {"date": date.today().isoformat(), "config": args.config, "fold": args.fold,
              "shared_overrides": args.set, "variants": rows}
    args.results.with_suffix(".json").write_text(json.dumps(result, indent=2, default=float) + "\n")
    args.results.with_suffix(".md").write_text(table(rows, args) + "\n")
    print(table(rows, args))
    return 0


def _cell(values: list[float], scale: float = 1.0) -> str:
    v = np.asarray(values, dtype=float) * scale
    if len(v) == 1:
        return f"{v[0]:.2f}"
    return f"{v.mean():.2f} ± {v.std(ddof=1):.2f}"


def table(rows: dict[str, list[dict]], args: argparse.Namespace) -> str:
    n = {len(r) for r in rows.values()}
    lines = [f"Fold {args.fold} of 15 ({rows[next(iter(rows))][0]['n_images']} real radiographs), "
             f"`{args.config}` + `{' '.join(args.set)}`, seeds {', '.join(map(str, args.seeds))}"
             + ("" if n == {1} else " (mean ± sample std over seeds)") + ".",
             "", "| variant | " + " | ".join(c for c, _ in COLUMNS) + " | best epoch |",
             "| --- |" + " ---: |" * (len(COLUMNS) + 1)]
    for variant, runs in rows.items():
        cells = [_cell([r[key] for r in runs], 100.0 if key == "within_5deg" else 1.0)
                 if all(key in r and not math.isnan(r[key]) for r in runs) else "n/a" for _, key in COLUMNS]
        epochs = ", ".join(str(r["best_epoch"]) for r in runs)
        lines.append(f"| {LABELS.get(variant, variant)} | " + " | ".join(cells) + f" | {epochs} |")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
