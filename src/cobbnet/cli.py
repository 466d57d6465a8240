"""The ``cobbnet`` command line: wiring only; each command calls one stage's module.

    image -> images.read_image -> data.prepare_image -> model (backbones + heads)
          -> decode.decode -> cobb.cobb_angles -> report (JSON, CSV, overlay)
"""

from __future__ import annotations

import functools
import importlib.util
import json
import sys
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer
from rich.console import Console
from rich.table import Table

from cobbnet.errors import InputError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Vertebra corners and Cobb angles from AP spine radiographs.")
console = Console()
err_console = Console(stderr=True)


# what the training extra (pip install 'cobbnet[train]') brings, by import name
TRAIN_MODULES = ("torch", "torchvision", "timm", "lightning", "albumentations", "safetensors",
                 "onnx", "yaml")


def _train_extra_missing(command: str) -> typer.Exit:
    err_console.print(f"cobbnet {command} needs the training extra: pip install 'cobbnet[train]'",
                      highlight=False, soft_wrap=True, markup=False)
    return typer.Exit(2)


def user_errors(fn):
    """Bad input: one line naming the file and the problem, exit status 2, no traceback.

    So is a command that needs the training extra on the light install.
    """

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except InputError as err:
            err_console.print(f"[red]error:[/red] {err}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None
        except ModuleNotFoundError as err:
            if (err.name or "").split(".")[0] not in TRAIN_MODULES:
                raise
            raise _train_extra_missing(fn.__name__) from None
        except KeyboardInterrupt as err:
            err_console.print(f"interrupted{': ' + str(err) if str(err) else ''}", highlight=False)
            raise typer.Exit(130) from None

    return wrapper


def needs_train_extra(fn):
    """Stop with one line, before any work, when the training extra is not installed."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if any(importlib.util.find_spec(m) is None for m in TRAIN_MODULES):
            raise _train_extra_missing(fn.__name__)
        return fn(*args, **kwargs)

    return wrapper


def _size(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise InputError(f"--size {text!r}: expected HxW, e.g. 1024x512") from None
    if h < 64 or w < 32:
        raise InputError(f"--size {text!r}: too small (at least 64x32)")
    return h, w


def _progress():
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeRemainingColumn(), console=err_console, transient=True)


@app.command()
@user_errors
def synth(
    out: Annotated[Path, typer.Argument(help="Folder to create, in the boostnet_labeldata layout.")],
    n: Annotated[int, typer.Option("--n", help="Number of radiographs.")] = 100,
    seed: Annotated[int, typer.Option(help="Random seed: the same seed writes the same files.")] = 0,
    size: Annotated[str | None, typer.Option(help="Image size HxW, e.g. 1024x512; default: varied sizes like AASCE.")] = None,
    split: Annotated[str, typer.Option(help="Split name (folder under data/ and labels/).")] = "training",
    overwrite: Annotated[bool, typer.Option(help="Replace an existing dataset in OUT.")] = False,
) -> None:
    """Write synthetic AP spine radiographs with corner labels and challenge angles."""
    from cobbnet.io.synthetic import write_dataset

    if n < 1:
        raise InputError(f"--n {n}: need at least one radiograph")
    root = write_dataset(out, n, seed, _size(size), split=split, overwrite=overwrite)
    console.print(f"wrote {n} synthetic radiographs to {root}")


@app.command()
@user_errors
def angles(
    source: Annotated[Path, typer.Argument(help="A boostnet_labeldata folder, or one .mat label file.")],
    out: Annotated[Path | None, typer.Option(help="CSV to write: filename,pt,mt,tl,...")] = None,
    split: Annotated[str, typer.Option(help="Split name when SOURCE is a folder.")] = "training",
    height: Annotated[float | None, typer.Option(help="Image height in pixels, with a single .mat file.")] = None,
    compare: Annotated[bool, typer.Option(help="Print how far the angles are from angles.csv.")] = False,
) -> None:
    """Cobb angles from landmark labels by the AASCE challenge's rules."""
    from cobbnet.io import aasce
    from cobbnet.report.overlay import angles_csv
    from cobbnet.spine.cobb import cobb_angles_batch

    if source.suffix == ".mat":
        if height is None:
            raise InputError(f"{source}: --height (the image height in pixels) is needed with a single .mat file")
        names, lms, heights, truth = [source.name], aasce.read_labels_mat(source)[None], np.array([height]), None
    else:
        samples = aasce.read_split(source, split)
        names = [s.name for s in samples]
        lms = np.stack([s.landmarks for s in samples])
        heights = np.array([s.height for s in samples], dtype=np.float64)
        truth = np.stack([s.angles for s in samples]) if all(s.angles is not None for s in samples) else None
    values, pairs, is_s = cobb_angles_batch(lms, heights)
    text = angles_csv(names, values, pairs, is_s)
    if out:
        from cobbnet.io.outputs import write_text

        write_text(out, text)
        console.print(f"wrote angles of {len(names)} spines to {out}")
    elif not compare:
        sys.stdout.write(text)
    if compare:
        if truth is None:
            raise InputError(f"{source}: --compare needs angles.csv beside the labels")
        diff = np.abs(values - truth)
        table = Table(title=f"Recomputed angles vs angles.csv ({len(names)} spines)")
        for col in ("column", "max |diff| (deg)", "mean |diff| (deg)", "within 0.01 deg"):
            table.add_column(col)
        for j, c in enumerate(("pt", "mt", "tl")):
            table.add_row(c, f"{diff[:, j].max():.5f}", f"{diff[:, j].mean():.5f}", f"{(diff[:, j] <= 0.01).sum()}/{len(names)}")
        console.print(table)


@app.command()
@user_errors
def audit(
    root: Annotated[Path, typer.Argument(help="A boostnet_labeldata folder.")],
    split: Annotated[str, typer.Option(help="Split name.")] = "training",
    as_json: Annotated[bool, typer.Option("--json", help="Print findings as JSON.")] = False,
) -> None:
    """List labels that look wrong (swapped corners, order, self-intersection, outside, angle mismatch).

    Exit status 0 when the labels are clean, 1 when there are findings, 2 for unreadable input.
    """
    from cobbnet.spine.audit import audit_split, findings_to_json, format_findings

    findings = audit_split(root, split)
    if as_json:
        sys.stdout.write(json.dumps(findings_to_json(findings), indent=2) + "\n")
    else:
        console.print(format_findings(findings), highlight=False, soft_wrap=True, markup=False)
    if findings:
        raise typer.Exit(1)


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": False})
@user_errors
@needs_train_extra
def train(
    ctx: typer.Context,
    config: Annotated[Path | None, typer.Option(help="Experiment YAML (configs/paper.yaml, cpu.yaml, ...).")] = None,
    folds: Annotated[int | None, typer.Option(help="Number of cross-validation folds (overrides data.folds).")] = None,
    fold: Annotated[str, typer.Option(help="Fold index to train, or 'all' for every fold in turn.")] = "0",
    resume: Annotated[bool, typer.Option(help="Continue from the run's last saved state.")] = False,
) -> None:
    """Train a model. Extra arguments KEY=VALUE override the config, e.g. train.epochs=5."""
    from cobbnet.training.config import load_config
    from cobbnet.training.train import train_folds

    cfg = load_config(config, list(ctx.args))
    if folds is not None:
        cfg.data.folds = folds
    chosen = list(range(cfg.data.folds)) if fold == "all" else [_int(fold, "--fold")]
    results = train_folds(cfg, chosen, resume=resume)
    for r in results:
        line = ", ".join(f"{k}={v:.4g}" for k, v in r.items() if k.startswith("val/") and isinstance(v, float))
        console.print(f"fold {r['fold']}: {line or 'already finished'}; best weights {r['best']}")


def _int(text: str, flag: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise InputError(f"{flag} {text!r}: expected a whole number or 'all'") from None


def _metrics_table(metrics: dict[str, Any], title: str) -> Table:
    table = Table(title=title)
    cols = [("SMAPE", "smape"), ("SMAPE PT", "smape_pt"), ("SMAPE MT", "smape_mt"), ("SMAPE TL", "smape_tl"),
            ("landmark err (px)", "landmark_error_px"), ("levels right %", "levels_right_pct"),
            ("MAE PT/MT/TL (deg)", None), ("within 5 deg", "within_5deg"), ("FPS", "fps")]
    for name, _ in cols:
        table.add_column(name, justify="right")
    mae = "/".join(f"{metrics.get(f'mae_{c}', float('nan')):.2f}" for c in ("pt", "mt", "tl"))
    table.add_row(*[mae if key is None else f"{metrics.get(key, float('nan')):.2f}" for _, key in cols])
    return table


def _refine(stage2: Path | None, no_refine: bool) -> Path | bool | None:
    """The predictor's ``refine``: off, another stage 2, or the bundled one (None)."""
    if no_refine and stage2 is not None:
        raise InputError("--no-refine and --stage2: give one of them")
    return False if no_refine else stage2


@app.command()
@user_errors
def evaluate(
    data: Annotated[Path, typer.Option(help="A labelled boostnet_labeldata folder.")],
    out: Annotated[Path, typer.Option(help="Folder for metrics.json, per_image.csv and plots.")],
    checkpoint: Annotated[Path | None, typer.Option(help="Weights (.safetensors); default: the bundled model.")] = None,
    split: Annotated[str, typer.Option(help="Split name.")] = "training",
    run: Annotated[Path | None, typer.Option(help="A cross-validation run folder: evaluate each fold-K/best on its own validation fold.")] = None,
    fold_only: Annotated[bool, typer.Option(help="Evaluate CHECKPOINT only on the validation fold it was trained without.")] = False,
    precision: Annotated[str | None, typer.Option(help="fp32, auto (fastest exact enough), bf16 or fp16; default: evaluate.PRECISION (fp32, the same figures on every machine).")] = None,
    batch_size: Annotated[int, typer.Option(help="Radiographs per network call.")] = 4,
    no_gate: Annotated[bool, typer.Option("--no-gate", help="Score every radiograph, also those the input gate would reject.")] = False,
    stage2: Annotated[Path | None, typer.Option(help="Stage-2 corner weights (.safetensors); default: the bundled ones.")] = None,
    no_refine: Annotated[bool, typer.Option("--no-refine", help="Stage 1 alone: skip the full-resolution corner stage.")] = False,
    no_edge_prior: Annotated[bool, typer.Option("--no-edge-prior", help="Name levels by counting alone, not also by where the spine's ends lie in the image.")] = False,
    views: Annotated[int | None, typer.Option(help="Stage-2 views of each vertebra, averaged: 1 (fastest) to 4 (as cut, mirrored, 0.9 and 1.1 times as wide); default 3.")] = None,
) -> None:
    """Score a model on labelled radiographs: SMAPE, landmark error, MAE, FPS, plots."""
    if batch_size < 1:
        raise InputError(f"--batch-size {batch_size}: must be at least 1")
    from cobbnet.infer import evaluate as ev
    from cobbnet.infer.predict import check_views

    if views is not None:
        check_views(views, "--views")  # before any data or model loads
    from cobbnet.io.aasce import read_split

    precision = precision or ev.PRECISION
    if run is not None:
        result = ev.evaluate_folds(run, data, split, out, precision, batch_size)
        console.print(_metrics_table({k: v["mean"] for k, v in result["summary"].items()}, "Mean over folds"))
        std = result["summary"]
        console.print("spread (std) across folds: " + ", ".join(
            f"{k}={std[k]['std']:.2f}" for k in ("smape", "landmark_error_px") if k in std))
        return
    samples = read_split(data, split)
    if fold_only:
        samples = ev.fold_samples(checkpoint, samples)
    with _progress() as bar:
        task = bar.add_task("evaluating", total=len(samples))
        metrics = ev.evaluate(checkpoint, samples, out, precision, batch_size,
                              on_batch=lambda k: bar.advance(task, k), refine=_refine(stage2, no_refine),
                              gate=not no_gate, edge_prior=not no_edge_prior, views=views)
    console.print(_metrics_table(metrics, f"{len(samples)} radiographs ({metrics['mode']})"))
    if metrics.get("labels_repaired"):
        console.print(f"{len(metrics['labels_repaired'])} label(s) scored in canonical order (see cobbnet audit): "
                      f"{', '.join(metrics['labels_repaired'])}; against the labels as written, landmark error "
                      f"{metrics['landmark_error_px_as_labelled']:.2f} px, levels right "
                      f"{metrics['levels_right_pct_as_labelled']:.1f}%")
    console.print(f"wrote {out / 'metrics.json'}, {out / 'per_image.csv'} and plots")


@app.command()
@user_errors
def predict(
    paths: Annotated[list[Path], typer.Argument(help="Image files or folders (JPEG, PNG, TIFF, DICOM).")],
    out: Annotated[Path, typer.Option(help="Folder for per-image JSON, overlay PNGs and results.csv.")] = Path("cobbnet-out"),
    checkpoint: Annotated[Path | None, typer.Option(help="Weights (.safetensors); default: the bundled model.")] = None,
    precision: Annotated[str, typer.Option(help="auto (fastest exact enough), fp32, bf16 or fp16.")] = "auto",
    batch_size: Annotated[int, typer.Option(help="Radiographs per network call (at least 1).")] = 4,
    overlay: Annotated[bool, typer.Option(help="Write an overlay PNG per image.")] = True,
    engine: Annotated[str, typer.Option(help="auto (ONNX Runtime on CPUs without native bf16), torch or onnx.")] = "auto",
    report: Annotated[bool, typer.Option("--report", help="Also write a one-page PDF report per image.")] = False,
    resume: Annotated[bool, typer.Option("--resume", help="Skip inputs whose results are already in OUT (finish an interrupted run).")] = False,
    challenge_csv: Annotated[bool, typer.Option("--challenge-csv", help="Also write angles.csv and filenames.csv in the AASCE challenge's exact layout.")] = False,
    stage2: Annotated[Path | None, typer.Option(help="Stage-2 corner weights (.safetensors); default: the bundled ones.")] = None,
    no_refine: Annotated[bool, typer.Option("--no-refine", help="Stage 1 alone: skip the full-resolution corner stage.")] = False,
    no_edge_prior: Annotated[bool, typer.Option("--no-edge-prior", help="Name levels by counting alone, not also by where the spine's ends lie in the image.")] = False,
    views: Annotated[int | None, typer.Option(help="Stage-2 views of each vertebra, averaged: 1 (fastest) to 4 (as cut, mirrored, 0.9 and 1.1 times as wide); default 3.")] = None,
) -> None:
    """Landmarks, Cobb angles, end vertebrae and an overlay for each radiograph.

    Exit status 1 when an image was unreadable or rejected (not a usable AP spine radiograph),
    2 for bad options or an unwritable --out (before the model loads).
    """
    from cobbnet.infer import batch

    options = batch.Options(out=out, checkpoint=checkpoint, precision=precision, engine=engine, refine=_refine(stage2, no_refine),
                            batch_size=batch_size, overlay=overlay, report=report, resume=resume,
                            challenge_csv=challenge_csv, edge_prior=not no_edge_prior, views=views)
    with _progress() as bar:
        task = bar.add_task("predicting")

        def start(n: int, mode: str) -> None:
            bar.update(task, total=n, description=f"predicting ({mode})" if mode else "predicting")

        def done(path: Path, record: dict | None, problem: str | None) -> None:
            if problem is not None:
                label = "rejected" if record is not None else "skipped"
                err_console.print(f"[red]{label}:[/red] {problem}", highlight=False, soft_wrap=True)
            bar.advance(task, 1)

        summary = batch.run(paths, options, on_start=start, on_done=done)
    _predict_table(summary, out)
    if summary.failed:
        raise typer.Exit(1)


def _predict_table(summary: Any, out: Path) -> None:
    table = Table(title=f"{len(summary.records)} images")
    for col in ("file", "status", "curves (major first)"):
        table.add_column(col)
    for r in summary.records:
        curves = "; ".join(f"{c['region']} {c['cobb_angle']:.1f}° {c['upper_end_vertebra']}-{c['lower_end_vertebra']}"
                           f" apex {c['apex']}" for c in sorted(r["curves"], key=lambda c: not c["major"]))
        table.add_row(r["input"]["path"], r["status"], curves or (r.get("reason") or "none measured"))
    console.print(table)
    if summary.resumed:
        console.print(f"{summary.resumed} of {summary.total} inputs already done (--resume)")
    bad = len(summary.unreadable) + len(summary.rejected)
    console.print(f"results in {out}" + (f"; {bad} unreadable or rejected" if bad else ""))


@app.command()
@user_errors
@needs_train_extra
def demo(
    out: Annotated[Path, typer.Option(help="Folder for the demo's data, model, report and overlays.")] = Path("cobbnet-demo"),
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
) -> None:
    """The whole job on data cobbnet makes itself: synthesize, train, evaluate, draw."""
    from cobbnet.training.demo import run_demo

    summary = run_demo(out, seed, console)
    rejected = f" ({summary['n_rejected']} of them rejected by the input gate)" if summary["n_rejected"] else ""
    console.print(f"[bold]demo done[/bold]: validation SMAPE {summary['smape']:.2f} on "
                  f"{summary['n_val']} unseen synthetic radiographs; report {summary['report']}; "
                  f"overlays{rejected} in {summary['overlays']}")


@app.command()
@user_errors
@needs_train_extra
def export(
    onnx: Annotated[Path, typer.Option(help="ONNX file to write.")],
    checkpoint: Annotated[Path | None, typer.Option(help="Weights (.safetensors); default: the bundled model.")] = None,
    full: Annotated[bool, typer.Option(help="Every dense head (hm, reg, cnr, mask) instead of the inference graph (hm, scores, ind, reg, cnr at the peaks).")] = False,
) -> None:
    """Export the network to ONNX for onnxruntime."""
    from cobbnet.training.export import export_onnx

    path = export_onnx(checkpoint, onnx, full=full)
    console.print(f"wrote {path}")


@app.command()
@user_errors
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    workers: Annotated[int, typer.Option(min=1, help="Worker processes; each loads the model once.")] = 1,
    max_upload_mb: Annotated[float, typer.Option(min=0.001, help="Largest upload accepted, in MB.")] = 64,
    threads: Annotated[int | None, typer.Option(min=1, help="Inference threads per worker; default: the CPUs shared among the workers.")] = None,
) -> None:
    """The REST service (/v1/predict, /v1/angles, /v1/report, /docs) and the correction page at /."""
    try:
        import uvicorn  # noqa: F401

        from cobbnet.service.app import serve as run  # fastapi and python-multipart
    except ImportError as err:
        err_console.print(f"cobbnet serve needs the serve extra ({err.name or err} is missing): "
                          "pip install 'cobbnet[serve]'", highlight=False, soft_wrap=True, markup=False)
        raise typer.Exit(2) from None
    run(host, port, workers, int(max_upload_mb * 2**20), threads)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
