"""Training the level network, read top to bottom.

config -> the radiographs of the grouped split, decoded once at full resolution -> for each,
its ladder (``spine.levels.ladder``: C6, C7, T1..L5, S1, S2, each its own class; those whose
centre lies outside the radiograph left out) -> each epoch, every rung cut as a wide patch
(``spine.levels.level_frames``, from the radiograph's ``patches.pyramid``) around a jittered frame, mirrored and re-exposed at random ->
``LevelNet`` -> cross-entropy weighted so that each class counts alike -> each epoch, the
accuracy per class on fixed jitters of the validation radiographs -> ``last`` weights and a
resumable state (the validation split measures; it picks nothing).

``python -m cobbnet.training.levels --config configs/levels.yaml [--resume] [key=value ...]``
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
import yaml
from safetensors.torch import load_file, save_file

from cobbnet.errors import InputError
from cobbnet.io.aasce import read_split
from cobbnet.io.outputs import atomic_path, write_json
from cobbnet.nn.levels import LevelConfig, LevelNet
from cobbnet.spine import patches
from cobbnet.spine.audit import treat_faulty_labels
from cobbnet.spine.levels import CLASSES, CONTEXT, ladder, level_frames
from cobbnet.training.config import apply_overrides
from cobbnet.training.data import split_indices
from cobbnet.training.refine import load_images, lr_at

FORMAT = "cobbnet-levels"


@dataclass
class LevelTrain:
    """The schedule and data of a level-network run."""

    root: str = "../shared/boostnet_labeldata"
    split: str = "training"
    holdout: float = 0.2  # the same grouped split as stages 1 and 2
    fold_seed: int = 0
    holdout_file: str | None = None
    faulty_labels: str = "repair"
    # frame jitter, as multiples of the vertebra width / degrees / log-scale sigma: as far off
    # as stage 1's candidates are (configs/stage2.yaml)
    jitter_centre: float = 0.15
    jitter_angle: float = 7.0
    jitter_scale: float = 0.2
    epochs: int = 16
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 1e-4
    seed: int = 0
    threads: int | None = 1
    out_dir: str = "runs"
    name: str = "levels"


@dataclass
class LevelRun:
    model: LevelConfig = field(default_factory=LevelConfig)
    train: LevelTrain = field(default_factory=LevelTrain)

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model.to_dict(), "train": asdict(self.train)}


def load_run_config(path: str | None, overrides: list[str]) -> LevelRun:
    raw: dict[str, Any] = yaml.safe_load(Path(path).read_text()) if path else {}
    raw = apply_overrides(raw, overrides)
    known = {"model": LevelConfig, "train": LevelTrain}
    for section, values in raw.items():
        if section not in known or set(values) - {f.name for f in fields(known[section])}:
            raise InputError(f"{path or 'overrides'}: unknown section or key in {section!r}")
    return LevelRun(LevelConfig(**raw.get("model", {})), LevelTrain(**raw.get("train", {})))


# ---- data ----


def rungs(images: list[np.ndarray], landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every radiograph's ladder: ``image (M,)`` index, ``corners (M, 4, 2)`` and ``classes (M,)``,
    leaving out rungs whose centre lies outside their radiograph."""
    idx, corners, classes = [], [], []
    for i, (image, lm) in enumerate(zip(images, landmarks, strict=True)):
        c, k = ladder(lm)
        centre = c.mean(axis=1)
        H, W = image.shape[:2]
        inside = (centre[:, 0] >= 0) & (centre[:, 0] < W) & (centre[:, 1] >= 0) & (centre[:, 1] < H)
        idx.append(np.full(inside.sum(), i))
        corners.append(c[inside])
        classes.append(k[inside])
    return np.concatenate(idx), np.concatenate(corners), np.concatenate(classes)


def patch_batch(pyramids: list[list[np.ndarray]], image: np.ndarray, corners: np.ndarray, rng: np.random.Generator,
                t: LevelTrain, augment: bool, context: float = CONTEXT) -> np.ndarray:
    """Level patches ``(N, 1, P, P)`` float32 of rungs ``corners (N, 4, 2)`` of radiographs
    ``image (N,)`` (each as its ``patches.pyramid``, cut as the predictor cuts), around jittered
    frames; with ``augment``, half mirrored and every one given a random gain, offset and gamma."""
    frame = patches.jitter(patches.frames(corners), rng, t.jitter_centre, t.jitter_angle, t.jitter_scale)
    frame = level_frames(frame, context)
    x = np.stack([patches.cut_pyramid(pyramids[i], f[None])[0] for i, f in zip(image, frame, strict=True)])
    x = x.astype(np.float32) / 255.0
    if augment:
        N = len(x)
        flip = rng.random(N) < 0.5
        x[flip] = x[flip, :, ::-1]
        gamma = np.exp(rng.normal(0, 0.25, (N, 1, 1)))
        x = np.clip(x, 0, 1) ** gamma * rng.uniform(0.8, 1.2, (N, 1, 1)) + rng.uniform(-0.1, 0.1, (N, 1, 1))
    return x[:, None].astype(np.float32)


def class_weights(classes: np.ndarray) -> torch.Tensor:
    """``(C,)`` weights that make each class count alike in the loss (mean 1 over the rungs)."""
    counts = np.bincount(classes, minlength=len(CLASSES)).astype(np.float64)
    w = np.where(counts > 0, len(classes) / ((counts > 0).sum() * np.maximum(counts, 1)), 0.0)
    return torch.tensor(w, dtype=torch.float32)


def recall(pred: np.ndarray, classes: np.ndarray) -> dict[str, float]:
    """The share of each class's rungs classed right."""
    return {name: float((pred[classes == c] == c).mean()) for c, name in enumerate(CLASSES) if (classes == c).any()}


# ---- checkpoints ----


def save(path: Path, model: LevelNet, run: LevelRun, metrics: dict[str, Any],
         dtype: torch.dtype | None = None) -> None:
    """``path.safetensors`` (optionally cast, e.g. to fp16 for shipping) + ``path.json``."""
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    if dtype is not None:
        state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
    with atomic_path(path.with_suffix(".safetensors")) as tmp:
        save_file(state, str(tmp), metadata={"format": FORMAT})
    write_json(path.with_suffix(".json"), {"format": FORMAT, "config": run.to_dict(), "metrics": metrics})


def load(path: str | Path) -> tuple[LevelNet, dict[str, Any]]:
    """A level-network checkpoint (``NAME.safetensors`` + ``NAME.json``) as an eval-mode LevelNet."""
    stem = Path(path).with_suffix("")
    try:
        meta = json.loads(stem.with_suffix(".json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise InputError(f"{stem.with_suffix('.json')}: not a readable level-network config ({err})") from None
    if meta.get("format") != FORMAT:
        raise InputError(f"{stem.with_suffix('.json')}: not a cobbnet level-network checkpoint (format {meta.get('format')!r})")
    model = LevelNet(LevelConfig(**meta["config"]["model"]))
    state = {k: v.float() if v.is_floating_point() else v for k, v in load_file(str(stem.with_suffix(".safetensors"))).items()}
    model.load_state_dict(state)
    return model.eval(), meta


# ---- the loop ----


def train(run: LevelRun, resume: bool = False, log: Any = print) -> dict[str, Any]:
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
    tr_img, tr_c, tr_k = rungs(train_images, np.stack([s.landmarks for s in train_samples]))
    va_img, va_c, va_k = rungs(val_images, np.stack([s.landmarks for s in val_samples]))
    train_pyr = [patches.pyramid(im) for im in train_images]
    # the validation patches are fixed: the same jitter every epoch
    val_x = patch_batch([patches.pyramid(im) for im in val_images], va_img, va_c, np.random.default_rng(12345), t,
                        False, run.model.context)
    weights = class_weights(tr_k)

    torch.manual_seed(t.seed)
    model = LevelNet(run.model)
    opt = torch.optim.AdamW(model.parameters(), lr=t.lr, weight_decay=t.weight_decay)
    steps_per_epoch = len(tr_k) // t.batch_size
    total = steps_per_epoch * t.epochs
    epoch, history = 0, []
    state_path = folder / "state.pt"
    if resume and state_path.is_file():
        state = torch.load(state_path, map_location="cpu", weights_only=True)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        epoch = int(state["epoch"])
        history = json.loads((folder / "history.json").read_text())
        log(f"resumed after epoch {epoch}")
    while epoch < t.epochs:
        model.train()
        rng = np.random.default_rng([t.seed, epoch])
        order = rng.permutation(len(tr_k))
        tic, losses = time.perf_counter(), []
        for b in range(steps_per_epoch):
            for g in opt.param_groups:
                g["lr"] = lr_at(epoch * steps_per_epoch + b, total, t.lr)
            pick = order[b * t.batch_size:(b + 1) * t.batch_size]
            x = patch_batch(train_pyr, tr_img[pick], tr_c[pick], rng, t, True, run.model.context)
            loss = F.cross_entropy(model(torch.from_numpy(x)), torch.from_numpy(tr_k[pick]), weight=weights)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
        pred = classify(model, val_x).argmax(axis=1)
        epoch += 1
        metrics = {"epoch": epoch, "train_loss": float(np.mean(losses)),
                   "val_accuracy": float((pred == va_k).mean()),
                   "val_within_one": float((np.abs(pred - va_k) <= 1).mean()), "val_recall": recall(pred, va_k),
                   "seconds": time.perf_counter() - tic}
        history.append(metrics)
        log(json.dumps(metrics))
        save(folder / "last", model, run, metrics)
        with atomic_path(state_path) as tmp:
            torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "epoch": epoch}, tmp)
        write_json(folder / "history.json", history)
    return {"history": history, "last": str(folder / "last.safetensors")}


@torch.inference_mode()
def classify(model: LevelNet, x: np.ndarray, batch: int = 256) -> np.ndarray:
    """Class probabilities ``(N, C)`` of fixed patches."""
    model.eval()
    return np.concatenate([model(torch.from_numpy(x[i:i + batch])).softmax(dim=-1).numpy()
                           for i in range(0, len(x), batch)])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Train the level network.")
    p.add_argument("--config")
    p.add_argument("--resume", action="store_true")
    p.add_argument("overrides", nargs="*", help="section.key=value")
    a = p.parse_args(argv)
    try:
        result = train(load_run_config(a.config, a.overrides), a.resume)
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    last = result["history"][-1] if result["history"] else {}
    print(f"validation accuracy {last.get('val_accuracy', float('nan')):.3f}: {result['last']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
