"""What ships inside the package: the trained model and a synthetic example radiograph.

    weights/cobbnet.safetensors + .json    the model in fp16, its config and validation metrics
    weights/MODEL_CARD.md                  data and licence, training, results, intended use
    examples/synthetic-spine.jpg + .json   a generated radiograph, its true corners and angles

The AASCE radiographs may not be redistributed, so the example is made by
:func:`cobbnet.io.synthetic.synth_sample` from a seed no training set uses.

    python -m cobbnet.infer.bundle example                      # rewrite the example
    python -m cobbnet.infer.bundle model RUN/fold-0/best --evaluation EVAL_DIR [--notes FILE]
"""

from __future__ import annotations

import argparse
import json
import os
from datetime import date
from importlib import resources
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from cobbnet.training import checkpoint
from cobbnet.spine.cobb import ANGLE_COLUMNS, cobb_angles
from cobbnet.errors import InputError
from cobbnet.spine.landmarks import LEVELS
from cobbnet.io.outputs import write_bytes, write_json, write_text

WEIGHTS = "cobbnet.safetensors"  # inside cobbnet/weights/
CARD = "MODEL_CARD.md"
MAX_WEIGHTS_BYTES = 25 * 2**20
EXAMPLE = "synthetic-spine"  # inside cobbnet/examples/: .jpg and .json
EXAMPLE_SEED, EXAMPLE_INDEX = 2026, 1  # an S curve; training uses seeds 0 and 10000 (data.synthetic_seed)
EXAMPLE_JPEG_QUALITY = 92


def _package_dir(name: str) -> Path:
    return Path(str(resources.files("cobbnet") / name))


def bundled_checkpoint() -> Path:
    """Path of the model that ships with the package; InputError when this build has none."""
    path = _package_dir("weights") / WEIGHTS
    if not path.is_file():
        raise InputError(f"{path}: no bundled model in this installation; pass --checkpoint")
    return path


def example_path() -> Path:
    """The bundled synthetic radiograph (JPEG)."""
    return _package_dir("examples") / f"{EXAMPLE}.jpg"


def example_truth() -> dict[str, Any]:
    """The example's true corners ``landmarks`` (17, 4, 2) and Cobb ``angles`` (3,), as arrays."""
    data = json.loads(example_path().with_suffix(".json").read_text(encoding="utf-8"))
    data["landmarks"] = np.asarray(data["landmarks"], dtype=np.float64)
    data["angles"] = np.asarray(data["angles"], dtype=np.float64)
    return data


def write_example(folder: str | os.PathLike | None = None) -> Path:
    """Generate the example radiograph and its truth into ``folder`` (default: the package's)."""
    from cobbnet.io.synthetic import synth_sample

    folder = Path(folder) if folder else example_path().parent
    _, image, lm = synth_sample(EXAMPLE_INDEX, EXAMPLE_SEED)
    ok, jpeg = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, EXAMPLE_JPEG_QUALITY])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    result = cobb_angles(lm, image.shape[0])
    truth = {
        "source": f"cobbnet.io.synthetic.synth_sample(index={EXAMPLE_INDEX}, seed={EXAMPLE_SEED})",
        "height": int(image.shape[0]), "width": int(image.shape[1]),
        "levels": list(LEVELS), "landmarks": np.round(lm, 3),
        "angle_columns": list(ANGLE_COLUMNS), "angles": np.round(result.angles, 3),
        "shape": result.shape,
    }
    path = folder / f"{EXAMPLE}.jpg"
    write_bytes(path, jpeg.tobytes())
    write_json(path.with_suffix(".json"), truth)
    return path


def ship_model(source: str | os.PathLike, evaluation: str | os.PathLike,
               folder: str | os.PathLike | None = None, notes: str = "") -> Path:
    """Write ``source`` checkpoint as the bundled model: fp16 weights, config, model card.

    ``evaluation`` is the folder ``cobbnet evaluate`` wrote for this checkpoint on its
    validation fold; its ``metrics.json`` goes into the checkpoint JSON and the card.
    """
    folder = Path(folder) if folder else _package_dir("weights")
    metrics_file = Path(evaluation) / "metrics.json"
    if not metrics_file.is_file():
        raise InputError(f"{metrics_file}: evaluation metrics not found (run cobbnet evaluate first)")
    metrics = json.loads(metrics_file.read_text(encoding="utf-8"))
    model, cfg = checkpoint.load(source)
    trained = checkpoint.read_meta(source).get("metrics", {})
    weights = checkpoint.save(folder / WEIGHTS, model, cfg, {"validation": metrics, "training": trained},
                              dtype=torch.float16)
    size = weights.stat().st_size
    if size > MAX_WEIGHTS_BYTES:
        weights.unlink()
        raise InputError(f"{source}: {size / 2**20:.1f} MB in fp16, over the {MAX_WEIGHTS_BYTES // 2**20} MB limit")
    write_text(folder / CARD, model_card(cfg.to_dict(), metrics, size, notes))
    return weights


def model_card(config: dict[str, Any], metrics: dict[str, Any], size: int, notes: str = "") -> str:
    """The model card: what the bundled model is, how it was made, how well it does, its limits."""
    m, d, t, loss = config["model"], config["data"], config["train"], config["loss"]
    within = next((k for k in metrics if k.startswith("within_")), None)
    rows = [("SMAPE (%)", "smape"), *[(f"SMAPE {c.upper()} (%)", f"smape_{c}") for c in ANGLE_COLUMNS],
            *[(f"MAE {c.upper()} (deg)", f"mae_{c}") for c in ANGLE_COLUMNS],
            ("landmark error (px, original image)", "landmark_error_px")]
    if within:
        rows.append((f"share of images with PT within {within[7:-3]} degrees", within))
    table = "\n".join(f"| {label} | {metrics[key]:.3f} |" for label, key in rows if key in metrics)
    variant = {"kpt": "keypoint heads only", "seg": "keypoint heads + segmentation loss (a_csc = 0)",
               "hcl": f"heterogeneous consistency loss, {loss['fwt']} FWT, a_csc = {loss['a_csc']}"}[loss["variant"]]
    return f"""# cobbnet bundled model

Made {date.today().isoformat()} by `python -m cobbnet.infer.bundle model`; weights
`{WEIGHTS}` ({size / 2**20:.1f} MB, fp16 safetensors), config and metrics in `cobbnet.json`.

## What it is
{m['backbone']} backbone at a {m['input_size'][0]}x{m['input_size'][1]} input, CenterNet-style
heads (centre heatmap, centre offset, corner offsets) and a spine-mask head, trained with
{variant}. It finds the four corners of T1-L5 on an anterior-posterior spine radiograph;
cobbnet turns them into Cobb angles by the AASCE 2019 rules.

## Intended use
Research, and decision support by people who read the radiograph themselves.
It is **not a diagnostic device**: it has not been validated clinically, and its angles must
be checked against the overlay it draws.

## Data and licence
Trained on the AASCE 2019 (BoostNet) training split, {d['folds']}-fold split with seed
{d['fold_seed']}: folds other than {d['fold']} for training (labels the annotation audit flags
left out: {d['skip_faulty_labels']}), fold {d['fold']} held out for model selection and the
figures below; plus {d['extra_synthetic']} synthetic radiographs from cobbnet's generator.
The AASCE images are under a research licence and are not distributed here; the weights are
derived from them, so use them for research under the same terms.

## Training
{t['epochs']} epochs from scratch (no ImageNet weights), batch {t['batch_size']}, Adam lr
{t['lr']} with {t['warmup_steps']} warm-up steps and a {t['lr_schedule']} schedule, precision
{t['precision']}, seed {t['seed']}; best epoch by {t.get('monitor', 'val/smape')}.

## Validation (fold {d['fold']}, {metrics.get('n_images', '?')} real radiographs)

| metric | value |
| --- | --- |
{table}

## Limits
- A short CPU schedule: far from the paper's GPU training; expect larger errors than the
  paper's on the AASCE test set, and more on radiographs unlike AASCE's (other views,
  lateral views, implants, other scanners and populations).
- It always returns 17 vertebrae: a vertebra it cannot see gets a low score in the JSON
  (`scores`), not a gap.
{notes}
"""


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m cobbnet.infer.bundle", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    ex = sub.add_parser("example", help="rewrite the bundled synthetic radiograph")
    ex.add_argument("--out", type=Path, default=None)
    mo = sub.add_parser("model", help="turn a trained checkpoint into the bundled model")
    mo.add_argument("checkpoint", type=Path)
    mo.add_argument("--evaluation", type=Path, required=True, help="cobbnet evaluate's output folder")
    mo.add_argument("--out", type=Path, default=None)
    mo.add_argument("--notes", type=Path, default=None, help="Markdown appended to the card's limits")
    args = parser.parse_args(argv)
    if args.what == "example":
        print(write_example(args.out))
    else:
        notes = args.notes.read_text(encoding="utf-8") if args.notes else ""
        print(ship_model(args.checkpoint, args.evaluation, args.out, notes))


if __name__ == "__main__":
    main()
