"""The level network: a wide patch around a stage-1 candidate in, which vertebra it is out.

``(N, 1, P, P)`` patch in [0, 1] (``spine.patches.cut`` of ``spine.levels.level_frames``:
the candidate level in the middle, about two vertebrae above and below it) -> ``(N, 21)``
logits of ``spine.levels.CLASSES`` (C6, C7, T1..L5, S1, S2). The corner
network's encoder (``nn.refine.stage``, strides 2 to 16) and a small MLP on its P/16 map,
flattened: where a rib or the sacrum lies, above, beside or below the middle, is the point. The exported graph returns the probabilities (softmax).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from cobbnet.nn.refine import stage, standardize
from cobbnet.spine.levels import CLASSES, CONTEXT
from cobbnet.spine.patches import PATCH_SIZE


@dataclass
class LevelConfig:
    """What decides the level network."""

    width: int = 16  # channels of the first stage; each later stage doubles them
    patch_size: int = PATCH_SIZE
    dropout: float = 0.2
    context: float = CONTEXT  # patch side / the corner stage's (spine.levels.level_frames)

    def to_dict(self) -> dict:
        return asdict(self)


class LevelNet(nn.Module):
    def __init__(self, cfg: LevelConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg = cfg or LevelConfig()
        c = cfg.width
        self.stages = nn.Sequential(stage(1, c, 2), stage(c, 2 * c, 2), stage(2 * c, 4 * c, 2),
                                    stage(4 * c, 8 * c, 2))
        self.head = nn.Sequential(nn.Conv2d(8 * c, 32, 1), nn.ReLU(inplace=True), nn.Flatten(),
                                  nn.Dropout(cfg.dropout), nn.Linear(32 * (cfg.patch_size // 16) ** 2, 64),
                                  nn.ReLU(inplace=True), nn.Linear(64, len(CLASSES)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, 1, P, P)`` in [0, 1] -> ``(N, 21)`` class logits."""
        return self.head(self.stages(standardize(x)))


class LevelProbs(nn.Module):
    """The exported form: probabilities instead of logits."""

    def __init__(self, net: LevelNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).softmax(dim=-1)
