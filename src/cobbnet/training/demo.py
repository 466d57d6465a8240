"""``cobbnet demo``: the whole job on radiographs the project makes itself.

1. write a training set and an unseen test set of synthetic radiographs (AASCE layout);
2. train the smoke configuration on the training set (one fold held out for model selection);
3. evaluate the best weights on the unseen test set (metrics.json, per-image CSV, plots);
4. predict a few test radiographs and draw their overlays.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from rich.console import Console

from cobbnet.infer.evaluate import evaluate
from cobbnet.infer.predict import Predictor
from cobbnet.io.aasce import read_split
from cobbnet.io.outputs import write_json
from cobbnet.io.synthetic import write_dataset
from cobbnet.report.overlay import save_overlay
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
    metrics = evaluate(result["best"], read_split(test_root), report)

    console.print("4/4 drawing overlays")
    overlays = out / "overlays"
    predictor = Predictor(result["best"])
    for sample in read_split(test_root)[:N_OVERLAYS]:
        pred = predictor.predict(sample.image_path)
        save_overlay(overlays / f"{Path(sample.name).stem}.png", pred.image, pred.landmarks, pred.cobb,
                     pred.scores, title=sample.name)
        write_json(overlays / f"{Path(sample.name).stem}.json", pred.as_dict())
    return {"smape": metrics["smape"], "n_val": metrics["n_images"], "report": str(report / "metrics.json"),
            "overlays": str(overlays), "checkpoint": result["best"], "metrics": metrics}
