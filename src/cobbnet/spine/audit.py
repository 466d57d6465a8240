"""Annotation audit: faults in a labelled split, reported; repaired only on request.

Each check is a function over the whole split at once (landmarks ``(N, 17, 4, 2)``) registered
in ``CHECKS`` under a short id; it returns, for each faulty sample, one sentence naming the
vertebra levels and the numbers at fault. A sample has at most one finding per check.

The files are never changed. ``treat_faulty_labels`` gives training (and ``repaired_landmarks``
gives scoring) the flagged labels re-ordered canonically (``landmarks.canonical_order``): a
label that lists its top vertebra last names every level wrong, and a model scored against it
by level would be charged for the labeller's slip.
"""

from __future__ import annotations

import dataclasses
import os
from collections import Counter
from collections.abc import Callable, Sequence

import numpy as np

from cobbnet.errors import InputError
from cobbnet.io.aasce import Sample, read_split
from cobbnet.spine.cobb import ANGLE_COLUMNS, cobb_angles_batch
from cobbnet.spine.landmarks import BL, BR, CORNERS, LEVELS, TL, TR, canonical_order, centers

MAX_LISTED = 4  # places named in one finding's detail before "and N more"


@dataclasses.dataclass(frozen=True)
class Finding:
    """One fault of one sample: ``name`` of the image, ``check`` id, ``detail`` sentence."""

    name: str
    check: str
    detail: str


@dataclasses.dataclass(frozen=True, eq=False)
class _Spines:
    landmarks: np.ndarray  # (N, 17, 4, 2)
    widths: np.ndarray  # (N,)
    heights: np.ndarray  # (N,)
    angles: np.ndarray  # (N, 3), NaN where a sample has no reference angles
    tol_deg: float  # how far computed Cobb angles may be from the reference angles


CheckFn = Callable[[_Spines], dict[int, str]]
CHECKS: dict[str, CheckFn] = {}


def _register(check_id: str) -> Callable[[CheckFn], CheckFn]:
    def add(fn: CheckFn) -> CheckFn:
        CHECKS[check_id] = fn
        return fn

    return add


def _listing(parts: list[str]) -> str:
    shown = ", ".join(parts[:MAX_LISTED])
    return shown if len(parts) <= MAX_LISTED else f"{shown} and {len(parts) - MAX_LISTED} more"


def _pair_faults(first: np.ndarray, second: np.ndarray, labels: tuple[str, str], fmt: str) -> dict[int, str]:
    """Samples where ``first > second`` for either of two corner pairs.

    ``first``/``second`` are ``(N, 17, 2)``: a coordinate of the pair's first and second corner,
    for the two pairs ``labels`` of each vertebra. ``fmt`` formats one place from the level,
    pair label and the two values.
    """
    bad = first > second  # (N, 17, 2)
    out = {}
    for i in np.flatnonzero(bad.any(axis=(1, 2))):
        places = [fmt.format(LEVELS[v], labels[k], first[i, v, k], second[i, v, k])
                  for v, k in np.argwhere(bad[i])]
        out[int(i)] = _listing(places)
    return out


@_register("corners-swapped-lr")
def _corners_swapped_lr(s: _Spines) -> dict[int, str]:
    x = s.landmarks[..., 0]
    found = _pair_faults(x[..., [TL, BL]], x[..., [TR, BR]], ("top", "bottom"),
                         "{} {} edge (left x {:.1f} > right x {:.1f})")
    return {i: f"left and right corners swapped at {d}" for i, d in found.items()}


@_register("corners-swapped-tb")
def _corners_swapped_tb(s: _Spines) -> dict[int, str]:
    y = s.landmarks[..., 1]
    found = _pair_faults(y[..., [TL, TR]], y[..., [BL, BR]], ("left", "right"),
                         "{} {} edge (top y {:.1f} > bottom y {:.1f})")
    return {i: f"top and bottom corners swapped at {d}" for i, d in found.items()}


@_register("vertebrae-out-of-order")
def _out_of_order(s: _Spines) -> dict[int, str]:
    cy = centers(s.landmarks)[..., 1]  # (N, 17)
    bad = np.diff(cy, axis=1) <= 0  # (N, 16): vertebra v + 1 not below vertebra v
    out = {}
    for i in np.flatnonzero(bad.any(axis=1)):
        places = [f"{LEVELS[v + 1]} (centre y {cy[i, v + 1]:.1f}) is not below {LEVELS[v]} "
                  f"(centre y {cy[i, v]:.1f})" for v in np.flatnonzero(bad[i])]
        out[int(i)] = _listing(places)
    return out


def _orient(o: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """z of (a - o) x (b - o) for ``(..., 2)`` points: its sign says which side of o->a b is."""
    return (a[..., 0] - o[..., 0]) * (b[..., 1] - o[..., 1]) - (a[..., 1] - o[..., 1]) * (b[..., 0] - o[..., 0])


def _segments_cross(p1: np.ndarray, p2: np.ndarray, q1: np.ndarray, q2: np.ndarray) -> np.ndarray:
    """Proper crossing of segments p1-p2 and q1-q2 (touching or collinear does not count)."""
    return ((_orient(q1, q2, p1) * _orient(q1, q2, p2)) < 0) & ((_orient(p1, p2, q1) * _orient(p1, p2, q2)) < 0)


@_register("self-intersecting")
def _self_intersecting(s: _Spines) -> dict[int, str]:
    c = [s.landmarks[..., k, :] for k in range(len(CORNERS))]  # each (N, 17, 2)
    # the polygon TL-TR-BR-BL has two pairs of opposite edges: top/bottom and left/right
    crossing = np.stack([_segments_cross(c[TL], c[TR], c[BR], c[BL]),
                         _segments_cross(c[TR], c[BR], c[BL], c[TL])], axis=-1)  # (N, 17, 2)
    labels = ("top and bottom edges cross", "left and right edges cross")
    out = {}
    for i in np.flatnonzero(crossing.any(axis=(1, 2))):
        places = [f"{LEVELS[v]} ({labels[k]})" for v, k in np.argwhere(crossing[i])]
        out[int(i)] = f"quadrilateral TL-TR-BR-BL crosses itself at {_listing(places)}"
    return out


@_register("outside-image")
def _outside_image(s: _Spines) -> dict[int, str]:
    x, y = s.landmarks[..., 0], s.landmarks[..., 1]  # (N, 17, 4)
    w, h = s.widths[:, None, None], s.heights[:, None, None]
    bad = (x < 0) | (y < 0) | (x >= w) | (y >= h)
    out = {}
    for i in np.flatnonzero(bad.any(axis=(1, 2))):
        places = [f"{LEVELS[v]} {CORNERS[k]} ({x[i, v, k]:.1f}, {y[i, v, k]:.1f})"
                  for v, k in np.argwhere(bad[i])]
        out[int(i)] = (f"{len(places)} point(s) outside the {s.widths[i]:g} x {s.heights[i]:g} image: "
                       f"{_listing(places)}")
    return out


@_register("angles-mismatch")
def _angles_mismatch(s: _Spines) -> dict[int, str]:
    computed, _, _ = cobb_angles_batch(s.landmarks, s.heights)  # (N, 3)
    has_ref = ~np.isnan(s.angles).any(axis=1)
    diff = np.abs(computed - s.angles)
    bad = has_ref & ~np.all(diff <= s.tol_deg, axis=1)  # NaN computed angles count as mismatches
    out = {}
    for i in np.flatnonzero(bad):
        worst = int(np.nanargmax(diff[i])) if not np.isnan(diff[i]).all() else 0
        ref = ", ".join(f"{a:.3f}" for a in s.angles[i])
        got = ", ".join(f"{a:.3f}" for a in computed[i])
        out[int(i)] = (f"angles.csv ({ref}) differ from the landmarks' Cobb angles ({got}); "
                       f"largest difference {diff[i, worst]:.3f} degrees in column {ANGLE_COLUMNS[worst]}")
    return out


def audit_samples(samples: Sequence[Sample], tol_deg: float = 0.01) -> list[Finding]:
    """Every finding of every check, in sample order, then in ``CHECKS`` order.

    ``tol_deg`` is how far (degrees) computed Cobb angles may be from the reference angles.
    """
    if not samples:
        return []
    spines = _Spines(
        landmarks=np.stack([s.landmarks for s in samples]).astype(np.float64),
        widths=np.array([s.width for s in samples], dtype=np.float64),
        heights=np.array([s.height for s in samples], dtype=np.float64),
        angles=np.stack([np.full(len(ANGLE_COLUMNS), np.nan) if s.angles is None else np.asarray(s.angles, np.float64)
                         for s in samples]),
        tol_deg=tol_deg,
    )
    results = {check: fn(spines) for check, fn in CHECKS.items()}
    return [Finding(s.name, check, found[i])
            for i, s in enumerate(samples) for check, found in results.items() if i in found]


def audit_split(root: str | os.PathLike, split: str = "training", tol_deg: float = 0.01) -> list[Finding]:
    """Audit the labels of one split of an AASCE-layout dataset (see ``aasce.read_split``)."""
    return audit_samples(read_split(root, split), tol_deg)


def format_findings(findings: Sequence[Finding]) -> str:
    """One line ``name: check: detail`` a finding, then a count line."""
    if not findings:
        return "no findings"
    per_check = Counter(f.check for f in findings)
    images = len({f.name for f in findings})
    counts = ", ".join(f"{check} {per_check[check]}" for check in CHECKS if check in per_check)
    lines = [f"{f.name}: {f.check}: {f.detail}" for f in findings]
    lines.append(f"{len(findings)} finding(s) in {images} image(s): {counts}")
    return "\n".join(lines)


def findings_to_json(findings: Sequence[Finding]) -> list[dict]:
    """Findings as plain dicts ``{"name", "check", "detail"}`` for JSON output."""
    return [dataclasses.asdict(f) for f in findings]


FAULTY_LABELS: tuple[str, ...] = ("repair", "skip", "keep")
REPAIRABLE = tuple(c for c in CHECKS if c != "angles-mismatch")  # faults of the points themselves


def faulty_names(samples: Sequence[Sample]) -> set[str]:
    """Names of the samples whose points the audit flags (every check but ``angles-mismatch``,
    which concerns angles.csv)."""
    return {f.name for f in audit_samples(samples) if f.check in REPAIRABLE}


def treat_faulty_labels(samples: list[Sample], how: str, log: Callable[[str], object] = print) -> list[Sample]:
    """Samples with the labels the audit flags repaired, left out or kept (``how``).

    A repair re-orders vertebrae and corners canonically (``landmarks.canonical_order``);
    each repaired or skipped name is listed through ``log``.
    """
    if how not in FAULTY_LABELS:
        raise InputError(f"data.faulty_labels: {how!r} is not one of {', '.join(FAULTY_LABELS)}")
    if how == "keep":
        return samples
    faulty = faulty_names(samples)
    if faulty:
        log(f"{how} {len(faulty)} faulty training label(s): {', '.join(sorted(faulty))}")
    if how == "skip":
        return [s for s in samples if s.name not in faulty]
    return [dataclasses.replace(s, landmarks=canonical_order(s.landmarks)) if s.name in faulty else s
            for s in samples]


def repaired_landmarks(samples: Sequence[Sample]) -> tuple[np.ndarray, list[str]]:
    """The labels to score against, ``(N, 17, 4, 2)``: as ``treat_faulty_labels`` repairs them
    for training; and the names of the labels that the repair changed."""
    raw = np.stack([s.landmarks for s in samples]).astype(np.float64)
    fixed = np.stack([s.landmarks for s in treat_faulty_labels(list(samples), "repair", log=lambda _: None)])
    changed = [s.name for s, a, b in zip(samples, raw, fixed, strict=True) if not np.array_equal(a, b)]
    return fixed.astype(np.float64), changed
