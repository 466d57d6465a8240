"""Training the corner network of stage 2, read top to bottom.

config -> the radiographs of the grouped split, decoded once at full resolution -> each epoch,
every true vertebra of every training radiograph cut as a patch around a jittered frame
(``spine.patches.jitter``: as far off as stage 1's detections are) -> ``CornerNet`` -> L1 on
the corners in patch pixels -> each epoch, the same on fixed jitters of the validation
radiographs, in original pixels -> ``best`` and ``last`` weights, and a resumable state.

``python -m cobbnet.training.refine --config configs/stage2.yaml [--resume] [key=value ...]``
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from safetensors.torch import load_file, save_file

from cobbnet.errors import InputError
from cobbnet.io.aasce import Sample, read_split
from cobbnet.io.images import read_image
from cobbnet.io.outputs import atomic_path, write_json
from cobbnet.nn.refine import CornerNet, RefineConfig
from cobbnet.spine import patches
from cobbnet.spine.audit import treat_faulty_labels
from cobbnet.spine.landmarks import hflip
from cobbnet.training.config import apply_overrides
from cobbnet.training.data import split_indices

FORMAT = "cobbnet-refine"


@dataclass
class RefineTrain:
    """The schedule and data of a stage-2 run."""

    root: str = "../shared/boostnet_labeldata"
    split: str = "training"
    holdout: float = 0.2  # the same grouped split as stage 1 (data.holdout, data.fold_seed)
    fold_seed: int = 0
    holdout_file: str | None = None  # or a frozen split (io.splits.read_holdout)
    faulty_labels: str = "repair"
    # frame jitter, as multiples of the vertebra width / degrees / log-scale sigma
    jitter_centre: float = 0.12
    jitter_angle: float = 5.0
    jitter_scale: float = 0.12
    epochs: int = 12
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 1e-4
    seed: int = 0
    init: str | None = None  # start from these stage-2 weights (a .safetensors of an earlier run)
    threads: int | None = 1
    out_dir: str = "runs"
    name: str = "stage2"


@dataclass
class RefineRun:
    model: RefineConfig = field(default_factory=RefineConfig)
    train: RefineTrain = field(default_factory=RefineTrain)

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model.to_dict(), "train": asdict(self.train)}


def load_run_config(path: str | None, overrides: list[str]) -> RefineRun:
    raw: dict[str, Any] = yaml.safe_load(Path(path).read_text()) if path else {}
    raw = apply_overrides(raw, overrides)  # the stage-1 configs' section.key=value parser
    known = {"model": RefineConfig, "train": RefineTrain}
    for section, values in raw.items():
        if section not in known or set(values) - {f.name for f in fields(known[section])}:
            raise InputError(f"{path or 'overrides'}: unknown section or key in {section!r}")
    return RefineRun(RefineConfig(**raw.get("model", {})), RefineTrain(**raw.get("train", {})))


# ---- data ----


def load_images(samples: list[Sample]) -> list[np.ndarray]:
    """Every radiograph at full resolution, ``(H, W)`` uint8 (about 1 GB for the 481)."""
    return [read_image(s.image_path) for s in samples]


def patch_batch(images: list[np.ndarray], landmarks: np.ndarray, which: np.ndarray, rng: np.random.Generator,
                t: RefineTrain, augment: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Patches of vertebrae ``which (N, 2)`` = (image, level) around jittered frames.

    Returns ``x (N, 1, P, P)`` float32, ``target (N, 4, 2)`` float32 corners in patch pixels and
    the frames ``(N, 4)``. With ``augment``, half the patches are mirrored and every patch gets
    a random gain, offset and gamma.
    """
    true = landmarks[which[:, 0], which[:, 1]]  # (N, 4, 2)
    frame = patches.jitter(patches.frames(true), rng, t.jitter_centre, t.jitter_angle, t.jitter_scale)
    x = np.stack([patches.cut(images[i], f[None])[0] for i, f in zip(which[:, 0], frame, strict=True)])
    x = x.astype(np.float32) / 255.0
    target = patches.to_patch(true, frame)
    if augment:
        N = len(x)
        flip = rng.random(N) < 0.5
        x[flip] = x[flip, :, ::-1]
        target[flip] = hflip(target[flip], patches.PATCH_SIZE)
        gamma = np.exp(rng.normal(0, 0.25, (N, 1, 1)))
        x = np.clip(x, 0, 1) ** gamma * rng.uniform(0.8, 1.2, (N, 1, 1)) + rng.uniform(-0.1, 0.1, (N, 1, 1))
    return x[:, None].astype(np.float32), target.astype(np.float32), frame


def corner_error_px(pred: np.ndarray, target: np.ndarray, frame: np.ndarray) -> np.ndarray:
    """Distances ``(N, 4)`` in original pixels between patch-pixel corners."""
    return np.linalg.norm(patches.to_image(pred, frame) - patches.to_image(target, frame), axis=-1)


# ---- checkpoints ----


def save(path: Path, model: CornerNet, run: RefineRun, metrics: dict[str, Any],
         dtype: torch.dtype | None = None) -> None:
    """``path.safetensors`` (optionally cast, e.g. to fp16 for shipping) + ``path.json``."""
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    if dtype is not None:
        state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
    with atomic_path(path.with_suffix(".safetensors")) as tmp:
        save_file(state, str(tmp), metadata={"format": FORMAT})
    write_json(path.with_suffix(".json"), {"format": FORMAT, "config": run.to_dict(), "metrics": metrics})


def load(path: str | Path) -> tuple[CornerNet, dict[str, Any]]:
    """A stage-2 checkpoint (``NAME.safetensors`` + ``NAME.json``) as an eval-mode CornerNet."""
    stem = Path(path).with_suffix("")
    try:
        meta = json.loads(stem.with_suffix(".json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise InputError(f"{stem.with_suffix('.json')}: not a readable stage-2 config ({err})") from None
    if meta.get("format") != FORMAT:
        raise InputError(f"{stem.with_suffix('.json')}: not a cobbnet stage-2 checkpoint (format {meta.get('format')!r})")
    model = CornerNet(RefineConfig(**meta["config"]["model"]))
    state = {k: v.float() if v.is_floating_point() else v for k, v in load_file(str(stem.with_suffix(".safetensors"))).items()}
    model.load_state_dict(state)
    return model.eval(), meta


def init_from(model: CornerNet, source: CornerNet) -> list[str]:
    """Copy ``source``'s weights into ``model`` wherever name and shape agree (a read-out moved
    to another pyramid level keeps the encoder); the names of those left as initialised."""
    theirs = source.state_dict()
    mine = model.state_dict()
    keep = {k: v for k, v in theirs.items() if k in mine and mine[k].shape == v.shape}
    model.load_state_dict(keep, strict=False)
    return sorted(set(mine) - set(keep))


# ---- the loop ----


def lr_at(step: int, total: int, base: float, warmup: int = 50) -> float:
    if step < warmup:
        return base * (step + 1) / warmup
    return base * 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))


def train(run: RefineRun, resume: bool = False, log: Any = print) -> dict[str, Any]:
    t = run.train
    if t.threads:
        torch.set_num_threads(t.threads)
    folder = Path(t.out_dir) / t.name
    folder.mkdir(parents=True, exist_ok=True)
    samples = read_split(t.root, t.split)
    train_idx, val_idx = split_indices([s.name for s in samples], 15, 0, t.fold_seed, t.holdout, t.holdout_file)
    train_samples = treat_faulty_labels([samples[i] for i in train_idx], t.faulty_labels, log)
    val_samples = [samples[i] for i in val_idx]
    start = time.perf_counter()
    train_images, val_images = load_images(train_samples), load_images(val_samples)
    log(f"decoded {len(train_images) + len(val_images)} radiographs in {time.perf_counter() - start:.0f} s")
    train_lm = np.stack([s.landmarks for s in train_samples])
    val_lm = np.stack([s.landmarks for s in val_samples])
    train_which = np.argwhere(np.ones(train_lm.shape[:2], dtype=bool))  # (N, 2) every vertebra
    val_which = np.argwhere(np.ones(val_lm.shape[:2], dtype=bool))
    # the validation patches are fixed: the same jitter every epoch
    val_x, val_t, val_f = patch_batch(val_images, val_lm, val_which, np.random.default_rng(12345), t, False)

    torch.manual_seed(t.seed)
    model = CornerNet(run.model)
    if t.init:
        skipped = init_from(model, load(t.init)[0])
        log(f"started from {t.init}" + (f" (new: {', '.join(skipped)})" if skipped else ""))
    opt = torch.optim.AdamW(model.parameters(), lr=t.lr, weight_decay=t.weight_decay)
    steps_per_epoch = len(train_which) // t.batch_size
    total = steps_per_epoch * t.epochs
    epoch, best, history = 0, math.inf, []
    state_path = folder / "state.pt"
    if resume and state_path.is_file():
        state = torch.load(state_path, map_location="cpu", weights_only=True)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        epoch, best = int(state["epoch"]), float(state["best"])
        history = json.loads((folder / "history.json").read_text())
        log(f"resumed after epoch {epoch}")
    while epoch < t.epochs:
        model.train()
        rng = np.random.default_rng([t.seed, epoch])
        order = rng.permutation(len(train_which))
        tic, losses = time.perf_counter(), []
        for b in range(steps_per_epoch):
            step = epoch * steps_per_epoch + b
            for g in opt.param_groups:
                g["lr"] = lr_at(step, total, t.lr)
            which = train_which[order[b * t.batch_size:(b + 1) * t.batch_size]]
            x, target, _ = patch_batch(train_images, train_lm, which, rng, t, True)
            pred = model(torch.from_numpy(x))  # (B, 4, 2)
            loss = (pred - torch.from_numpy(target)).abs().mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
        val_err = evaluate_patches(model, val_x, val_t, val_f)
        epoch += 1
        metrics = {"epoch": epoch, "train_l1_patch_px": float(np.mean(losses)),
                   "val_corner_px": float(val_err.mean()), "val_corner_px_median": float(np.median(val_err)),
                   "seconds": time.perf_counter() - tic}
        history.append(metrics)
        log(json.dumps(metrics))
        save(folder / "last", model, run, metrics)
        if metrics["val_corner_px"] < best:
            best = metrics["val_corner_px"]
            save(folder / "best", model, run, metrics)
        with atomic_path(state_path) as tmp:
            torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "epoch": epoch, "best": best}, tmp)
        write_json(folder / "history.json", history)
    return {"best_val_corner_px": best, "history": history, "best": str(folder / "best.safetensors")}


@torch.inference_mode()
def evaluate_patches(model: CornerNet, x: np.ndarray, target: np.ndarray, frame: np.ndarray,
                     batch: int = 256) -> np.ndarray:
    """Corner errors ``(N, 4)`` in original pixels on fixed patches."""
    model.eval()
    pred = np.concatenate([model(torch.from_numpy(x[i:i + batch])).numpy() for i in range(0, len(x), batch)])
    return corner_error_px(pred, target, frame)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Train the stage-2 corner network.")
    p.add_argument("--config")
    p.add_argument("--resume", action="store_true")
    p.add_argument("overrides", nargs="*", help="section.key=value")
    a = p.parse_args(argv)
    try:
        result = train(load_run_config(a.config, a.overrides), a.resume)
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"best validation corner error {result['best_val_corner_px']:.2f} px: {result['best']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
