"""Patient-grouped splits of labelled radiographs: k-fold, a drawn holdout, and the frozen
holdout (``configs/splits/aasce-holdout.txt``) that every figure of the two-stage model is
measured on. No torch.

Every split is grouped by ``aasce.patient_key``: radiographs of one patient never fall on
both sides, since the official test split shares no patient with the training split.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from cobbnet.errors import InputError
from cobbnet.io.aasce import patient_key


def _groups(groups: Sequence[str]) -> tuple[np.ndarray, int]:
    """Group labels -> ``(codes (n,), number of groups)``, codes in order of first appearance."""
    _, first, codes = np.unique(np.asarray(groups, dtype=object).astype(str), return_index=True,
                                return_inverse=True)
    rank = np.argsort(np.argsort(first))  # group codes by first appearance, not by name
    return rank[codes].astype(np.int64), len(first)


def kfold_indices(n: int, k: int, fold: int, seed: int = 0,
                  groups: Sequence[str] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Shuffled k-fold split of ``range(n)``, grouped: ``(train_idx, val_idx)``, sorted int64.

    ``groups (n,)`` names each item's group (for AASCE radiographs ``aasce.patient_key``;
    None: every item its own group). Groups never straddle folds: they are permuted by
    ``default_rng(seed)``, then dealt, largest first, to the fold with the fewest items so
    far, so fold sizes stay within one largest group of each other. Part ``fold`` is
    validation. Every index is in exactly one validation fold, and the same
    ``(groups, k, seed)`` always gives the same folds.
    """
    if k < 2 or n < k:
        raise ValueError(f"k-fold needs 2 <= k <= n, got k={k} for n={n}")
    if not 0 <= fold < k:
        raise ValueError(f"fold {fold} is not in 0..{k - 1}")
    codes, n_groups = _groups(range(n) if groups is None else groups)
    if len(codes) != n:
        raise ValueError(f"groups: expected {n} labels, got {len(codes)}")
    if n_groups < k:
        raise ValueError(f"k-fold needs at least k={k} groups, got {n_groups}")
    order = np.random.default_rng(seed).permutation(n_groups)
    sizes = np.bincount(codes, minlength=n_groups)
    order = order[np.argsort(-sizes[order], kind="stable")]  # largest first, ties shuffled
    load, assign = np.zeros(k, dtype=np.int64), np.empty(n_groups, dtype=np.int64)
    for g in order:
        assign[g] = int(np.argmin(load))
        load[assign[g]] += sizes[g]
    in_val = assign[codes] == fold
    return np.flatnonzero(~in_val).astype(np.int64), np.flatnonzero(in_val).astype(np.int64)


def holdout_indices(groups: Sequence[str], fraction: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A fixed grouped validation split: ``fraction`` of the groups (patients) held out.

    The groups are permuted by ``default_rng(seed)`` and the first ``round(fraction * G)``
    are validation. Returns ``(train_idx, val_idx)`` sorted int64; no group is on both sides.
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"holdout fraction must lie in (0, 1), got {fraction}")
    codes, n_groups = _groups(groups)
    n_val = min(max(1, round(fraction * n_groups)), n_groups - 1)
    held = np.random.default_rng(seed).permutation(n_groups)[:n_val]
    in_val = np.isin(codes, held)
    return np.flatnonzero(~in_val).astype(np.int64), np.flatnonzero(in_val).astype(np.int64)


SPLITS_DIR = Path(__file__).resolve().parents[1] / "configs" / "splits"


def read_holdout(name: str | os.PathLike) -> set[str]:
    """The patient keys of a frozen validation split: a file with one key a line (``#``
    comments), given as a path or by its name in the package's ``configs/splits``."""
    path = Path(name)
    if not path.is_file():
        path = SPLITS_DIR / f"{name}.txt" if not str(name).endswith(".txt") else SPLITS_DIR / Path(name).name
    if not path.is_file():
        raise InputError(f"{name}: no such split file (looked in {SPLITS_DIR} too)")
    lines = [line.split("#", 1)[0].strip() for line in path.read_text(encoding="utf-8").splitlines()]
    return {line for line in lines if line}


def split_indices(names: Sequence[str], folds: int, fold: int, seed: int = 0,
                  holdout: float = 0.0, holdout_file: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The configured split of AASCE radiographs ``names``, grouped by ``aasce.patient_key``:
    the frozen split ``holdout_file`` when given; else a holdout of ``holdout`` of the patients
    when it is above 0; else fold ``fold`` of ``folds``. ``(train_idx, val_idx)``."""
    groups = [patient_key(n) for n in names]
    if holdout_file:
        held = read_holdout(holdout_file)
        in_val = np.array([g in held for g in groups], dtype=bool)
        return np.flatnonzero(~in_val).astype(np.int64), np.flatnonzero(in_val).astype(np.int64)
    if holdout > 0:
        return holdout_indices(groups, holdout, seed)
    return kfold_indices(len(names), folds, fold, seed, groups)
