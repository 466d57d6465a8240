"""``cobbnet demo``: the whole job on radiographs the project makes itself.

1. write a training set and an unseen test set of synthetic radiographs (AASCE layout);
2. train the smoke configuration on the training set (one fold held out for model selection);
3. evaluate the best weights on the unseen test set (metrics.json, per-image CSV, plots), with
   the input gate off so that the figure is the model's;
4. predict a few test radiographs as ``cobbnet predict`` does: a JSON each, an overlay for each
   the input gate does not reject, and results.csv.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from rich.console import Console

from cobbnet.infer.batch import Options, run
from cobbnet.infer.evaluate import evaluate
from cobbnet.io.aasce import read_split
from cobbnet.io.synthetic import write_dataset
from cobbnet.training.config import load_config

SMOKE = Path(__file__).resolve().parents[1] / "configs" / "smoke.yaml"
N_TRAIN, N_TEST, N_OVERLAYS = 60, 16, 4
SIZE = (512, 256)  # (H, W) of the generated radiographs
# The smoke config proves the pipeline; the demo trains longer so that the model learns.
DEMO_SCHEDULE = ["train.epochs=8", "train.lr=2.0e-3", "train.lr_schedule=cosine", "train.threads=1"]


def run_demo(out: str | os.PathLike, seed: int = 0, console: Console | None = None,
             overrides: list[str] | None = None) -> dict[str, Any]:
    from cobbnet.training.train import train

    console = console or Console()
    out = Path(out)
    train_root, test_root = out / "synthetic-train", out / "synthetic-test"
    console.print(f"1/4 writing {N_TRAIN} training and {N_TEST} test radiographs under {out}")
    write_dataset(train_root, N_TRAIN, seed, SIZE, overwrite=True)
    write_dataset(test_root, N_TEST, seed + 1_000_000, SIZE, overwrite=True)

    cfg = load_config(SMOKE, ["data.source=aasce", f"data.root={train_root}", "data.folds=6", *DEMO_SCHEDULE,
                              f"train.out_dir={out / 'runs'}", f"train.seed={seed}", *(overrides or [])])
    console.print(f"2/4 training {cfg.model.backbone} at {cfg.model.input_size[0]}x{cfg.model.input_size[1]} "
                  f"for {cfg.train.epochs} epochs")
    result = train(cfg, progress=True)

    console.print("3/4 evaluating on the unseen test radiographs")
    report = out / "report"
    # the model's own accuracy, so without the input gate: a small demo model's weak peaks are
    # what the gate is there to refuse, and step 4 shows it doing so
    metrics = evaluate(result["best"], read_split(test_root), report, gate=False)

    console.print("4/4 predicting and drawing overlays")
    overlays = out / "overlays"
    samples = read_split(test_root)[:N_OVERLAYS]
    done = run([s.image_path for s in samples], Options(out=overlays, checkpoint=Path(result["best"])))
    for _path, reason in done.rejected:
        console.print(f"  rejected, no overlay: {reason}")
    return {"smape": metrics.get("smape", float("nan")), "n_val": metrics["n_images"],
            "n_rejected": len(done.rejected), "report": str(report / "metrics.json"),
            "overlays": str(overlays), "checkpoint": result["best"], "metrics": metrics,
            "rejected": [str(p) for p, _ in done.rejected]}
