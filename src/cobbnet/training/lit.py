"""A thin LightningModule around :class:`cobbnet.nn.model.CobbNet`: one shared step for train and val.

Validation also decodes the heads and scores the Cobb angles, so a run's log shows the figure
the paper reports (SMAPE) beside the losses it optimises.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import lightning as L
import numpy as np
import torch

from cobbnet.nn.decode import decode, to_original
from cobbnet.nn.losses import compute_losses
from cobbnet.nn.model import build_model
from cobbnet.spine.cobb import cobb_angles_batch
from cobbnet.spine.metrics import landmark_error, smape
from cobbnet.training.config import Config, from_dict


class LitCobbNet(L.LightningModule):
    def __init__(self, config: dict[str, Any]):
        super().__init__()
        # a plain dict, so resume checkpoints load with torch.load(weights_only=True)
        self.save_hyperparameters({"config": config})
        self.cfg: Config = from_dict(config)
        self.model = build_model(self.cfg.model)
        if self.cfg.train.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.ema = None
        if self.cfg.train.ema > 0:  # the average of the weights, buffers (batch-norm statistics) included
            from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

            self.ema = AveragedModel(self.model, multi_avg_fn=get_ema_multi_avg_fn(self.cfg.train.ema),
                                     use_buffers=True)

    @property
    def eval_model(self) -> torch.nn.Module:
        """The network that validation runs and checkpoints save: the EMA when it is on."""
        return self.model if self.ema is None else self.ema.module

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self.ema is not None:
            self.ema.update_parameters(self.model)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.model(x)

    def _step(self, batch: dict[str, Any], stage: str) -> tuple[dict, dict]:
        x = batch["image"]
        if self.cfg.train.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        outputs = (self.model if stage == "train" else self.eval_model)(x)
        losses = compute_losses(outputs, batch, self.cfg.loss)
        B = x.shape[0]
        for name, value in losses.items():
            self.log(f"{stage}/{name}", value, prog_bar=name == "total", batch_size=B,
                     on_step=stage == "train", on_epoch=True, sync_dist=stage != "train")
        return outputs, losses

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        return self._step(batch, "train")[1]["total"]

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        outputs, _ = self._step(batch, "val")
        pred = predicted_landmarks(outputs, batch, tuple(self.cfg.model.input_size))  # (B, 17, 4, 2)
        true = batch["landmarks"].detach().cpu().numpy()
        heights = batch["orig_size"][:, 0].cpu().numpy()
        pred_angles = cobb_angles_batch(pred, heights)[0]
        true_angles = cobb_angles_batch(true, heights)[0]
        B = len(true)
        # per-image means, weighted by batch size: the epoch value is the mean over images
        self.log("val/smape", smape(pred_angles, true_angles), batch_size=B, sync_dist=True, prog_bar=True)
        self.log("val/landmark_error", landmark_error(pred, true), batch_size=B, sync_dist=True)

    def configure_optimizers(self) -> Any:
        t = self.cfg.train
        opt = torch.optim.Adam(self.model.parameters(), lr=t.lr, weight_decay=t.weight_decay)
        total = max(1, int(self.trainer.estimated_stepping_batches))
        schedule = functools.partial(lr_factor, warmup=t.warmup_steps, total=total, shape=t.lr_schedule)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def lr_factor(step: int, warmup: int, total: int, shape: str) -> float:
    """Multiplier of the base learning rate at optimiser step ``step``: linear warm-up, then
    constant (the paper) or a cosine decay to zero at the last step."""
    if shape not in ("constant", "cosine"):
        raise ValueError(f"unknown lr_schedule {shape!r}; expected constant or cosine")
    if step < warmup:
        return (step + 1) / warmup
    if shape == "constant":
        return 1.0
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def predicted_landmarks(outputs: dict[str, torch.Tensor], batch: dict[str, Any],
                        input_size: tuple[int, int]) -> np.ndarray:
    """Decode a batch's heads into ``(B, 17, 4, 2)`` landmarks in original-image pixels."""
    lm, _ = decode({k: v.detach().float() for k, v in outputs.items()})
    lm = lm.cpu().numpy()
    sizes = batch["orig_size"].cpu().numpy()
    return np.stack([to_original(lm[i], input_size, tuple(sizes[i])) for i in range(len(lm))])
