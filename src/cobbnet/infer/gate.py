"""The input gate: is this a usable AP spine radiograph, and how far to trust the answer?

Two plain checks, one before the network and one after it:

- :func:`check_image` looks at the pixels alone: too small, blank or uniform, noise (or any
  picture without a radiograph's edges), a drawing of flat shapes, wider than tall (a spine
  film stored sideways). It returns a one-line reason to reject, or None.
- :func:`assess` looks at the chain of 17 vertebrae the network found: status ``"rejected"``
  when there is no plausible chain (scores of a picture without a spine, a chain that runs
  sideways, most vertebrae interpolated), ``"uncertain"`` with warnings when the chain is usable
  but doubtful (low scores, interpolated vertebrae, implausible spacing), else ``"ok"``.

Every threshold is named once below with the measurement it comes from:
``python benchmarks/gate.py`` (results in ``benchmarks/results/gate.md``) on the 481 AASCE
training radiographs, 120 synthetic ones (``cobbnet.io.synthetic``, seed 7) and generated
junk, with the bundled model. The image checks have wide margins (noise sits at an edge
kurtosis of 3, radiographs at 6 or more). The chain checks depend on the model's scores, and
the bundled model was trained on most of those AASCE images: an unseen radiograph may score
lower, so rerun the benchmark when the model changes.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from cobbnet.spine.chain import INTERPOLATED
from cobbnet.spine.landmarks import LEVELS, N_VERTEBRAE, centers

# ---- check_image: the pixels alone ----
MIN_SIDE = 256  # px on the shorter side; the narrowest AASCE radiograph is 355 px wide
PROBE_SIDE = 256  # the image is measured shrunk (INTER_AREA) to this longest side
MIN_CONTRAST = 8.0  # grey-level std of the probe; AASCE radiographs 20 or more
# kurtosis of neighbour differences in the probe: radiographs have sparse strong edges (AASCE
# 6.2 or more, synthetic 9.9 or more); noise of any blur, being Gaussian-like, gives 2.9-3.1
MIN_EDGE_KURTOSIS = 4.5
# A drawing of flat shapes: most neighbouring pixels are equal (0.95 or more at full
# resolution; AASCE radiographs 0.73 at most, median 0.36; synthetic 0.11 at most), or, under
# film grain, most neighbouring probe pixels are within FLAT_STEP grey levels (0.85 or more for
# a 2000 px drawing; AASCE radiographs 0.67 at most, synthetic 0.35 at most)
MAX_EQUAL_SHARE = 0.9
FLAT_STEP = 2.0
MAX_FLAT_SHARE = 0.8
# width / height: AASCE radiographs are 0.23-0.56 (synthetic 0.31-0.5); a spine film is always
# taller than wide, so a wider picture is one stored on its side
MAX_WIDTH_PER_HEIGHT = 1.0

# ---- assess: the chain of vertebrae ----
# The chain's evidence: the mean score over the 17 levels, an interpolated level counting 0.
# Below this, no spine was found. With the bundled model AASCE radiographs score 0.329 or more
# (1st percentile 0.405), synthetic 0.673 or more; the junk that passes check_image (small
# drawings under film grain) 0.04-0.22 (0.17-0.26 with an earlier stage 1): the narrowest
# margin of the gate (benchmarks/results/gate.md)
MIN_CHAIN_SCORE = 0.27
# more interpolated levels than this: the chain is guessed, not found. AASCE radiographs have
# at most 3 with the bundled model (5 with an earlier stage 1), synthetic none
MAX_INTERPOLATED = 6
# a step between neighbouring centres more than SIDEWAYS_STEP_DEG from vertical runs across
# the image; from MAX_SIDEWAYS_STEPS of the 16 steps on, the chain does not run top to bottom
# (AASCE radiographs have at most 4 such steps)
SIDEWAYS_STEP_DEG = 45.0
MAX_SIDEWAYS_STEPS = 8
# doubtful, not rejected (each flags 4-6 % of the AASCE radiographs, whose angle errors are
# then twice the others': see benchmarks/results/gate.md)
UNCERTAIN_MEAN_SCORE = 0.42
LOW_SCORE = 0.2  # a vertebra below this was barely found
MAX_STEP_RATIO = 2.5  # a step this many median steps long: a vertebra is probably missed
MIN_STEP_RATIO = 0.4  # a step this short: one vertebra probably found twice


def _probe(image: np.ndarray) -> np.ndarray:
    """``(H, W)`` uint8 -> float64 copy shrunk to ``PROBE_SIDE`` on its longest side."""
    H, W = image.shape
    scale = min(1.0, PROBE_SIDE / max(H, W))
    size = (max(2, round(W * scale)), max(2, round(H * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA).astype(np.float64)


def _kurtosis(values: np.ndarray) -> float:
    """Fourth standardised moment (3 for a Gaussian); 0 for constant values."""
    v = values.ravel() - values.mean()
    var = float(np.mean(v * v))
    return float(np.mean(v**4) / var**2) if var > 1e-9 else 0.0


def edge_kurtosis(image: np.ndarray) -> float:
    """The smaller kurtosis of the probe's horizontal and vertical neighbour differences."""
    probe = _probe(image)
    return min(_kurtosis(np.diff(probe, axis=1)), _kurtosis(np.diff(probe, axis=0)))


def equal_share(image: np.ndarray) -> float:
    """Share of horizontally or vertically neighbouring pixels with equal values."""
    same = np.count_nonzero(image[:, 1:] == image[:, :-1]) + np.count_nonzero(image[1:] == image[:-1])
    H, W = image.shape
    return same / max(1, H * (W - 1) + (H - 1) * W)


def flat_share(image: np.ndarray) -> float:
    """Share of the probe's horizontal and vertical neighbours less than ``FLAT_STEP`` apart."""
    probe = _probe(image)
    steps = np.concatenate([np.abs(np.diff(probe, axis=1)).ravel(), np.abs(np.diff(probe, axis=0)).ravel()])
    return float(np.mean(steps < FLAT_STEP))


def check_image(image: np.ndarray) -> str | None:
    """A one-line reason why ``image`` ``(H, W)`` uint8 is not a usable AP spine radiograph,
    or None when it may be one (the network and :func:`assess` decide the rest)."""
    image = np.asarray(image)
    if image.ndim != 2 or image.dtype != np.uint8:
        raise ValueError(f"expected an (H, W) uint8 image, got {image.dtype} of shape {image.shape}")
    H, W = image.shape
    if min(H, W) < MIN_SIDE:
        return f"image too small ({W} x {H} px; a radiograph needs at least {MIN_SIDE} px on each side)"
    probe = _probe(image)
    spread = float(probe.std())
    if spread < MIN_CONTRAST:
        return f"blank or uniform image (grey-level spread {spread:.1f}, below {MIN_CONTRAST:g})"
    kurt = edge_kurtosis(image)
    if kurt == 0.0:
        return "no detail along its rows or its columns (a gradient or stripes, not a radiograph)"
    if kurt < MIN_EDGE_KURTOSIS:
        return (f"looks like noise or a pattern, not a radiograph (edge kurtosis {kurt:.1f}; "
                f"radiographs have {MIN_EDGE_KURTOSIS:g} or more)")
    equal, flat = equal_share(image), flat_share(image)
    if equal > MAX_EQUAL_SHARE or flat > MAX_FLAT_SHARE:
        return (f"looks like a drawing of flat shapes, not a radiograph ({100 * equal:.0f} % of "
                f"neighbouring pixels equal, {100 * flat:.0f} % nearly)")
    if W > MAX_WIDTH_PER_HEIGHT * H:
        return (f"image is wider than tall ({W} x {H} px): the spine must run from top to bottom; "
                "is the radiograph stored on its side?")
    return None


def _levels(indices: Sequence[int] | np.ndarray) -> str:
    return ", ".join(LEVELS[int(i)] for i in indices)


def _steps(landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(16,) step lengths between neighbouring centres over their median, and (16,) step
    angles from vertical in degrees."""
    d = np.diff(centers(landmarks), axis=0)  # (16, 2)
    length = np.hypot(d[:, 0], d[:, 1])
    median = float(np.median(length))
    ratio = length / median if median > 0 else np.full(len(length), np.inf)
    return ratio, np.degrees(np.arctan2(np.abs(d[:, 0]), d[:, 1]))


def assess(landmarks: np.ndarray, scores: np.ndarray, flags: Sequence[Sequence[str]] | None,
           image_size: tuple[int, int], level_doubt: str | None = None) -> tuple[str, str | None, list[str]]:
    """(status, reason, warnings) of a predicted chain.

    Args:
        landmarks: ``(17, 4, 2)`` corners in image pixels.
        scores: ``(17,)`` detection scores.
        flags: 17 lists of vertebra flags (``"interpolated"``), or None for none.
        image_size: (width, height) of the image.
        level_doubt: the chain's warning that its level names are uncertain
            (``spine.chain.level_doubt``), or None; a doubt like the others.

    Returns:
        ``("rejected", reason, warnings)`` when no plausible chain was found;
        ``("uncertain", None, warnings)`` when it is usable but doubtful; else ``("ok", None, [])``.
    """
    lm = np.asarray(landmarks, dtype=np.float64)
    sc = np.asarray(scores, dtype=np.float64).reshape(-1)
    flags = [list(f) for f in flags] if flags is not None else [[] for _ in range(N_VERTEBRAE)]
    if lm.shape != (N_VERTEBRAE, 4, 2) or len(sc) != N_VERTEBRAE or len(flags) != N_VERTEBRAE:
        raise ValueError(f"expected (17, 4, 2) landmarks, 17 scores and 17 flag lists, got "
                         f"{lm.shape}, {sc.shape}, {len(flags)}")
    if not (np.all(np.isfinite(lm)) and np.all(np.isfinite(sc))):
        return "rejected", "no plausible chain of vertebrae (non-finite landmarks or scores)", []
    interpolated = [i for i, f in enumerate(flags) if INTERPOLATED in f]
    detected = np.setdiff1d(np.arange(N_VERTEBRAE), interpolated)
    # an interpolated vertebra has no score of its own: it adds nothing to the evidence
    evidence = float(sc[detected].sum()) / N_VERTEBRAE
    if evidence < MIN_CHAIN_SCORE:
        return "rejected", (f"no spine found (chain score {evidence:.2f}, below "
                            f"{MIN_CHAIN_SCORE:g})"), []
    mean = float(sc[detected].mean())
    if len(interpolated) > MAX_INTERPOLATED:
        return "rejected", (f"no plausible chain of vertebrae ({len(interpolated)} of "
                            f"{N_VERTEBRAE} interpolated, not found)"), []
    ratio, angle = _steps(lm)
    sideways = int((angle > SIDEWAYS_STEP_DEG).sum())
    if sideways >= MAX_SIDEWAYS_STEPS:
        return "rejected", (f"no plausible chain of vertebrae ({sideways} of {len(angle)} steps run "
                            "sideways: the spine does not run from top to bottom)"), []
    warnings = _doubts(lm, sc, detected, mean, interpolated, ratio, angle, image_size)
    if level_doubt is not None:
        warnings.append(level_doubt)
    return ("uncertain" if warnings else "ok"), None, warnings


def _doubts(lm: np.ndarray, sc: np.ndarray, detected: np.ndarray, mean: float, interpolated: list[int],
            ratio: np.ndarray, angle: np.ndarray, image_size: tuple[int, int]) -> list[str]:
    """One warning line per doubt about a chain that is not rejected."""
    warnings = []
    if mean < UNCERTAIN_MEAN_SCORE:
        warnings.append(f"low mean detection score {mean:.2f} (below {UNCERTAIN_MEAN_SCORE:g})")
    low = detected[sc[detected] < LOW_SCORE]
    if len(low):
        warnings.append(f"low detection score at {_levels(low)} (below {LOW_SCORE:g})")
    if interpolated:
        warnings.append(f"{_levels(interpolated)} interpolated between neighbours, not detected")
    long_steps = np.flatnonzero(ratio > MAX_STEP_RATIO)
    if len(long_steps):
        pairs = ", ".join(f"{LEVELS[i]}-{LEVELS[i + 1]}" for i in long_steps)
        warnings.append(f"implausible spacing: gap {pairs} over {MAX_STEP_RATIO:g}x the median "
                        "(a vertebra may be missed and the levels below it off by one)")
    short_steps = np.flatnonzero(ratio < MIN_STEP_RATIO)
    if len(short_steps):
        pairs = ", ".join(f"{LEVELS[i]}-{LEVELS[i + 1]}" for i in short_steps)
        warnings.append(f"implausible spacing: {pairs} under {MIN_STEP_RATIO:g}x the median apart "
                        "(one vertebra may be counted twice)")
    steep = np.flatnonzero(angle > SIDEWAYS_STEP_DEG)
    if len(steep):
        pairs = ", ".join(f"{LEVELS[i]}-{LEVELS[i + 1]}" for i in steep)
        warnings.append(f"implausible spacing: {pairs} side by side rather than one above the other")
    W, H = image_size
    c = centers(lm)
    outside = np.flatnonzero((c[:, 0] < 0) | (c[:, 0] > W) | (c[:, 1] < 0) | (c[:, 1] > H))
    if len(outside):
        warnings.append(f"{_levels(outside)} outside the image")
    return warnings
