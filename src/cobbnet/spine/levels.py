"""Which vertebra a candidate is: the ends of the spine told apart by what lies around them.

Counting and spacing cannot tell C7 from T1 or S1 from L5 when stage 1 scores them alike
(``spine.chain``). What can is their surroundings: the first ribs leave the spine at T1 and
not at C7, and the sacrum below L5 is wide, with the iliac wings beside it. The level
network (``nn.levels.LevelNet``, run by the predictor on every stage-1 candidate) reads a
wide patch around a candidate (``CONTEXT`` times the corner stage's, so
``patches.PATCH_SCALE * CONTEXT`` = 6 vertebra widths a side, ribs and pelvis in view) and
returns the probabilities
``(K, 21)`` of the classes ``CLASSES``: each level C6, C7, T1..L5, S1, S2 its own class.

Every level is a class of its own, not "T1", "L5" and one class for the 15 between: a
broad class spreads its likelihood over 15 unlike vertebrae, so a network trained that way
took L4 for L5 more readily than for "inside". With one class a level, the classes are
balanced by themselves (one of each a radiograph).

``level_gain`` turns them into the chain's evidence at its ends only: a candidate named T1
gains ``LEVEL_WEIGHT * log(p(T1) / max_c p(c))``, 0 where T1 is its most likely level and at
least ``-LEVEL_CAP``, and one named L5 the same with p(L5). A candidate the network takes
for C7 or T2 costs where the chain would call it T1. The levels between get none: inside
the spine the network tells a vertebra from its neighbours no better than counting does
(58% of held-out patches named exactly), and charging every level took the chain from 82 to
67 of the 94 held-out radiographs with all levels right (docs/two-stage.md).

Training examples (``ladder``): the true T1..L5 and, one and two steps beyond each end (the
T1-T2 and L4-L5 centre steps, the shape of T1 and L5), C7, C6, S1 and S2.
"""

from __future__ import annotations

import numpy as np

from cobbnet.spine.landmarks import LEVELS, N_VERTEBRAE

BEYOND = 2  # extrapolated vertebrae beyond each end in training (C7, C6; S1, S2)
CLASSES: tuple[str, ...] = ("C6", "C7", *LEVELS, "S1", "S2")
CONTEXT = 3.0  # level patch side / corner-stage patch side, for the same vertebra
LEVEL_WEIGHT = 0.5  # the level network's log-probabilities in units of the chain's evidence
LEVEL_CAP = 4.0  # the most one candidate's level evidence can cost at one level


def level_classes(n: int = N_VERTEBRAE) -> np.ndarray:
    """``(n,)`` the class of each level of the chain, T1..L5."""
    return BEYOND + np.arange(n, dtype=np.int64)


def level_frames(frames: np.ndarray, context: float = CONTEXT) -> np.ndarray:
    """Corner-stage frames ``(..., 4)`` ``(cx, cy, angle, width)`` -> the level patch's frames:
    the width times ``context``, so ``patches.cut`` takes ``context`` times the side."""
    f = np.array(frames, dtype=np.float64, copy=True)
    f[..., 3] *= context
    return f


def ladder(landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(17, 4, 2)`` true corners -> ``(17 + 2 * BEYOND, 4, 2)`` corners and ``(17 + 2 * BEYOND,)``
    classes: C6, C7 (above), T1..L5, S1, S2 (below), top to bottom. The vertebrae beyond the
    ends are T1 or L5 moved by whole centre steps T2->T1 or L4->L5."""
    lm = np.asarray(landmarks, dtype=np.float64)
    up = lm[0].mean(axis=0) - lm[1].mean(axis=0)  # (2,) T2 -> T1
    down = lm[-1].mean(axis=0) - lm[-2].mean(axis=0)  # (2,) L4 -> L5
    above = np.stack([lm[0] + k * up for k in range(BEYOND, 0, -1)])
    below = np.stack([lm[-1] + k * down for k in range(1, BEYOND + 1)])
    classes = np.arange(len(lm) + 2 * BEYOND, dtype=np.int64)
    return np.concatenate([above, lm, below]), classes


def level_gain(probs: np.ndarray, n: int = N_VERTEBRAE, weight: float = LEVEL_WEIGHT) -> np.ndarray:
    """Class probabilities ``(K, 21)`` -> the chain's level evidence ``(n, K)``: at the first
    level (T1) and the last (L5), ``weight`` times ``log(p(that level) / max_c p(c))``, at least
    ``-LEVEL_CAP``; 0 at the levels between."""
    p = np.clip(np.asarray(probs, dtype=np.float64), 1e-9, None)
    rel = np.maximum(np.log(p / p.max(axis=1, keepdims=True)), -LEVEL_CAP)  # (K, 21), 0 at the likeliest
    levels = level_classes(n)
    gain = np.zeros((n, len(p)))
    gain[0], gain[-1] = rel[:, levels[0]], rel[:, levels[-1]]
    return weight * gain
