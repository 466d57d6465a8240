"""Training, read top to bottom: config -> data -> Lightning module -> trainer -> best weights.

``train(cfg)`` trains one fold and returns its metrics; ``train_folds`` runs several in turn.
Each run's folder (``out_dir/name/fold-K``) holds its resolved ``config.yaml``, CSV logs,
``best.safetensors`` + ``best.json`` (lowest validation loss so far, as in the paper),
``last.safetensors`` + ``last.json`` and ``state/`` with Lightning's resumable state.
"""

from __future__ import annotations

import copy
import math
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint, OnExceptionCheckpoint
from lightning.pytorch.loggers import CSVLogger
from torch.utils.data import ConcatDataset, DataLoader

from cobbnet.errors import InputError
from cobbnet.io.aasce import read_split
from cobbnet.io.outputs import write_text
from cobbnet.spine.audit import treat_faulty_labels
from cobbnet.training import checkpoint
from cobbnet.training.config import Config, dump_yaml
from cobbnet.training.data import Augment, SpineDataset, set_dataset_epoch, split_indices
from cobbnet.training.hardware import lightning_precision
from cobbnet.training.lit import LitCobbNet

# Lightning 2.6 warns about a checkpoint path nobody passed and about its own deprecated internals
for _pattern in (r".*\.fit\(ckpt_path=.*", r".*LeafSpec.*", r".*litlogger.*"):
    warnings.filterwarnings("ignore", message=_pattern)


def run_dir(cfg: Config) -> Path:
    return Path(cfg.train.out_dir) / cfg.train.name / f"fold-{cfg.data.fold}"


def build_datasets(cfg: Config) -> tuple[Any, Any]:
    """(train, val) datasets for the configured source and fold."""
    d, size = cfg.data, tuple(cfg.model.input_size)
    augment = Augment(keep=d.augment_keep) if d.augment else None
    synth_size = tuple(d.synthetic_size) if d.synthetic_size else None
    if d.source == "synthetic":
        train = SpineDataset.from_synthetic(d.synthetic_train, d.synthetic_seed, synth_size, size, augment, cfg.train.seed)
        val = SpineDataset.from_synthetic(d.synthetic_val, d.synthetic_seed + 10_000, synth_size, size, None)
        return train, val
    if d.source != "aasce":
        raise InputError(f"data.source: unknown source {d.source!r}; expected aasce or synthetic")
    samples = read_split(d.root, d.split)
    if not 0 <= d.fold < d.folds:
        raise InputError(f"data.fold: {d.fold} is not in 0..{d.folds - 1}")
    train_idx, val_idx = split_indices([s.name for s in samples], d.folds, d.fold, d.fold_seed, d.holdout, d.holdout_file)
    train_samples = treat_faulty_labels([samples[i] for i in train_idx], d.faulty_labels)
    train = SpineDataset.from_aasce(train_samples, size, augment, cfg.train.seed)
    val = SpineDataset.from_aasce([samples[i] for i in val_idx], size, None)
    if d.extra_synthetic:
        extra = SpineDataset.from_synthetic(d.extra_synthetic, d.synthetic_seed, synth_size, size, augment, cfg.train.seed)
        train = ConcatDataset([train, extra])
    return train, val


class EpochAugmentation(Callback):
    """A new augmentation stream each epoch, reproducible from (seed, epoch, index)."""

    def on_train_epoch_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        set_dataset_epoch(trainer.train_dataloader.dataset, trainer.current_epoch)


class SafetensorsExport(Callback):
    """After each validation: ``last.*`` always, ``best.*`` when ``monitor`` is the lowest so far."""

    def __init__(self, folder: Path, cfg: Config, monitor: str = "val/smape"):
        self.folder, self.cfg, self.monitor = folder, cfg, monitor
        self.best = math.inf

    def on_validation_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
        metrics["epoch"] = trainer.current_epoch
        checkpoint.save(self.folder / "last", module.eval_model, self.cfg, metrics)
        value = metrics.get(self.monitor, math.inf)
        if value < self.best:
            self.best = value
            checkpoint.save(self.folder / "best", module.eval_model, self.cfg, metrics)

    def state_dict(self) -> dict[str, float]:
        return {"best": self.best}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.best = state["best"]


def state_checkpoint(state: Path) -> ModelCheckpoint:
    """Lightning's full state as ``state/last.ckpt`` after every epoch, overwritten in place.

    (``save_last=True`` with ``save_top_k=0`` would write it only when training ends, so a
    killed run could not resume.)
    """
    return ModelCheckpoint(dirpath=state, filename="last", save_top_k=1, save_last=False,
                           every_n_epochs=1, enable_version_counter=False)


def _resume_path(state: Path) -> Path | None:
    """The newest resumable state: the end of the last epoch or the moment of an interruption."""
    found = [p for p in (state / "last.ckpt", state / "interrupted.ckpt") if p.is_file()]
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


def train(cfg: Config, resume: bool = False, progress: bool = True) -> dict[str, Any]:
    """Train one fold; returns the final validation metrics and the checkpoint paths."""
    cfg = copy.deepcopy(cfg)
    folder = run_dir(cfg)
    folder.mkdir(parents=True, exist_ok=True)
    write_text(folder / "config.yaml", dump_yaml(cfg))
    L.seed_everything(cfg.train.seed, workers=True, verbose=False)
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)

    train_set, val_set = build_datasets(cfg)
    t = cfg.train
    loader = dict(batch_size=t.batch_size, num_workers=cfg.data.num_workers,
                  persistent_workers=cfg.data.num_workers > 0)
    train_loader = DataLoader(train_set, shuffle=True, drop_last=len(train_set) > t.batch_size, **loader)
    val_loader = DataLoader(val_set, shuffle=False, **loader)

    state = folder / "state"
    # one version folder per (re)start, so a resumed run never overwrites earlier logs
    loggers: list[Any] = [CSVLogger(folder, name="logs")]
    try:
        import tensorboard  # noqa: F401
        from lightning.pytorch.loggers import TensorBoardLogger

        loggers.append(TensorBoardLogger(folder, name="tb"))
    except ImportError:
        pass
    callbacks: list[Callback] = [
        state_checkpoint(state),
        OnExceptionCheckpoint(dirpath=state, filename="interrupted"),
        SafetensorsExport(folder, cfg, cfg.train.monitor),
        EpochAugmentation(),
    ]
    trainer = L.Trainer(
        max_epochs=t.epochs, precision=lightning_precision(t.precision, t.accelerator),
        accelerator=t.accelerator, devices=t.devices, strategy=t.strategy, num_nodes=t.num_nodes,
        logger=loggers, callbacks=callbacks, enable_progress_bar=progress,
        enable_model_summary=False, deterministic=False, log_every_n_steps=max(1, min(10, len(train_loader))),
        limit_train_batches=t.limit_train_batches, limit_val_batches=t.limit_val_batches,
        check_val_every_n_epoch=t.val_every, default_root_dir=folder, num_sanity_val_steps=0,
    )
    module = LitCobbNet(cfg.to_dict())
    if t.init:
        checkpoint.load_weights(t.init, module.model)
        if module.ema is not None:  # the average starts from the same weights
            module.ema.module.load_state_dict(module.model.state_dict())
        print(f"started from {t.init}")
    ckpt = _resume_path(state) if resume else None
    if resume and ckpt is None:
        start = f"from {t.init}" if t.init else "from scratch"
        print(f"no saved state in {state}: starting at the first epoch, {start}")
    if ckpt is None:
        trainer.fit(module, train_loader, val_loader)
    else:  # our own state files, still read with the restricted (no-code) unpickler
        trainer.fit(module, train_loader, val_loader, ckpt_path=ckpt, weights_only=True)
    if trainer.interrupted:
        raise KeyboardInterrupt(f"training interrupted; resume with --resume (state in {state})")
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    metrics.update(run_dir=str(folder), best=str(folder / "best.safetensors"),
                   last=str(folder / "last.safetensors"), fold=cfg.data.fold)
    return metrics


def train_folds(cfg: Config, folds: list[int], resume: bool = False, progress: bool = True) -> list[dict[str, Any]]:
    """Train each listed fold in turn (skipping folds whose run already finished, when resuming)."""
    results = []
    for fold in folds:
        fold_cfg = copy.deepcopy(cfg)
        fold_cfg.data.fold = fold
        done = run_dir(fold_cfg) / "state" / "last.ckpt"
        if resume and done.is_file() and _finished(done, fold_cfg.train.epochs):
            results.append({"fold": fold, "run_dir": str(run_dir(fold_cfg)), "skipped": True,
                            "best": str(run_dir(fold_cfg) / "best.safetensors")})
            continue
        results.append(train(fold_cfg, resume=resume, progress=progress))
    return results


def completed_epochs(state: dict[str, Any]) -> int:
    """Epochs whose training a Lightning state holds (saved at validation end or at the end)."""
    return int(state["loops"]["fit_loop"]["epoch_progress"]["current"]["processed"])


def _finished(last_ckpt: Path, epochs: int) -> bool:
    return completed_epochs(torch.load(last_ckpt, map_location="cpu", weights_only=True)) >= epochs
