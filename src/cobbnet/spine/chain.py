"""Levels from a chain: the 17 vertebrae T1..L5 picked from more candidates as one ordered chain.

Stage 1 proposes ``K`` candidates (its strongest heatmap peaks, more than 17). Taking the 17
strongest lets one stray peak (the sacrum, a rib crossing) push every level name by one. The
chain instead assigns levels by dynamic programming (Viterbi), maximising

    sum over chosen candidates of  log(score / SCORE_FLOOR)            (evidence)
  - SPACING_WEIGHT * sum over links of (log(distance / expected) / sigma)^2
  - TILT_WEIGHT * sum over links of (link tilt / TILT_SIGMA)^2
  - MISSING_COST * (levels without a candidate, at either end or between)
  + EDGE_WEIGHT * (fit of T1 and L5 to the image's top and bottom edges, below)

where a link joins consecutive chosen candidates, possibly a few levels apart, and its tilt
is its angle from the image's vertical (see ``pick_chain`` for the expected distance). Candidates off the chain are rejected; a level
without a candidate is filled from its neighbours (linear in each corner between the two
chosen vertebrae around it, or extrapolated by the neighbouring step at either end) and
flagged ``interpolated``.

The geometric constants come from the 481 AASCE training labels: the centre distance of
consecutive vertebrae is 0.79 mean endplate widths (1st-99th percentile 0.42-1.16), it grows
down the spine (``LEVEL_SPACING``) with a log spread of about 0.2 around that profile, and
consecutive links turn by under 17 degrees in 95% of cases.

Where the ends lie. Counting alone cannot tell C7 from T1 or S1 from L5 when stage 1 scores
them alike, and a chain that takes C7 often skips a level lower down to stay 17 long. An AP
radiograph for scoliosis is framed on the spine: on the labels of the 366 training
radiographs (the 191 training patients of configs/splits/aasce-holdout.txt, labels running
top to bottom) T1's centre lies a median 0.70 of its width below the top edge and L5's 0.97
of its width above the bottom edge, log-normally spread (``EDGE_MU``, ``EDGE_SIGMA``). With
the image height given, the chain's value adds ``EDGE_WEIGHT`` times that log-density for
its first and last vertebrae (for a chain that starts below T1 or ends above L5, of where
the missing end would lie, ``SPACING_PER_WIDTH`` widths a level beyond). Distances beyond
``EDGE_CAP`` widths count as ``EDGE_CAP``: on a radiograph framed wider (neck or pelvis in
view) the edges say nothing and the count stands. ``EDGE_WEIGHT`` was chosen on the bundled
stage 1's candidates for those 366 training radiographs (0, 0.5, 1, 2 against three other
constants, 48 settings): all 17 levels right on 306 with 0.5, against 279 without.

How sure the names are. A shifted chain usually wins by little. ``Chain.margin`` is how far
the best rival that names the chain's first or last vertebra one level up or down (the best
chain with that candidate at the other level: a forward and a backward pass of the same
dynamic programme, whose sum is the best chain through any candidate at any level) lies below
the chosen chain, and
``level_doubt`` turns a margin under ``LEVEL_MARGIN`` into a warning; the predictor then
marks the reading uncertain. It cannot say which reading is right, only that a person should
check T1 and L5.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numpy as np

from cobbnet.spine.landmarks import LEVELS, N_VERTEBRAE, centers
from cobbnet.spine.patches import frames

SCORE_FLOOR = 0.3  # a candidate scoring below this costs more than it brings
SPACING_PER_WIDTH = 0.785  # median centre distance / mean endplate width (AASCE labels)
# median distance from level l to l + 1 over a spine's median distance (AASCE labels): the
# spacing grows 1.8 times from T1-T2 to L4-L5
LEVEL_SPACING = np.array([0.728, 0.798, 0.855, 0.898, 0.923, 0.932, 0.949, 0.972, 1.012, 1.082,
                          1.15, 1.214, 1.266, 1.317, 1.358, 1.319])
WIDTH_SIGMA = 0.45  # log-ratio spread of a distance against the widths (first pass)
SPACING_SIGMA = 0.2  # log-ratio spread against the chain's own spacing, 5th-95th percentile band (second pass)
SPACING_WEIGHT = 0.5
TILT_SIGMA = np.deg2rad(35.0)  # links of severe curves tilt 30-40 degrees from vertical
TILT_WEIGHT = 0.5
MISSING_COST = 1.5  # per level without a candidate
MAX_GAP = 3  # levels one link may skip
# log of (T1 centre to the top edge, L5 centre to the bottom edge) in that vertebra's widths:
# mean and spread over the 366 training radiographs (see above)
EDGE_MU = np.log([0.703, 0.974])
EDGE_SIGMA = np.array([0.391, 0.369])
EDGE_CAP = 3.0  # widths: an end farther from its edge than this counts as this far
EDGE_WEIGHT = 0.5
INTERPOLATED = "interpolated"
# A chain whose best renamed rival (its first or last vertebra named one level up or down,
# ``Chain.margin``) lies less than this below it has uncertain level names: the largest
# threshold at which, on the bundled stage 1's chains for the 387 training radiographs
# (configs/splits/aasce-holdout.txt), a marked reading is at least as likely misnamed as not.
# For the stage 1 bundled since 2026-12-06-2, a margin under 1.5 marks 77 of them, 39
# misnamed (51%; 49% under 1.6), against the repaired labels; for the one bundled from
# 2026-12-05, 81 and 42 (52%). The stage 1 bundled before that gave 1.0 (42 marked, 22
# misnamed against the labels as written).
LEVEL_MARGIN = 1.5


@dataclass
class Chain:
    """The chosen chain: ``landmarks (17, 4, 2)``, ``scores (17,)`` (0 where interpolated),
    ``picked (17,)`` candidate index per level or -1, and per-level ``flags``.

    ``margin`` is how far (in the chain's log-value) the best rival that names the chain's
    first or last vertebra one level up or down lies below it (inf without a rival);
    ``renamed`` is that rival's (level now, level then), e.g. ("T1", "T2")."""

    landmarks: np.ndarray
    scores: np.ndarray
    picked: np.ndarray
    flags: list[list[str]]
    margin: float = np.inf
    renamed: tuple[str, str] = ("", "")

    @property
    def n_interpolated(self) -> int:
        return int((self.picked < 0).sum())


def _geometry(centre: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distance, tilt from vertical and "i below j" of every pair (j row, i column): ``(K, K)`` each."""
    d = centre[None, :, :] - centre[:, None, :]  # (K, K, 2) from j to i
    tilt = np.arctan2(np.abs(d[..., 0]), np.maximum(d[..., 1], 1e-6))
    return np.linalg.norm(d, axis=-1), tilt, d[..., 1] > 0


def _viterbi(gain: np.ndarray, link: callable, n: int, first: np.ndarray, last: np.ndarray
             ) -> tuple[np.ndarray, float, np.ndarray]:
    """Levels ``(n,)`` -> candidate or -1, the chain's value and the forward table ``(n, K)``,
    maximising gains ``(n, K)`` (candidate k at level l) minus ``link(level_above, level)``
    costs ``(K, K)`` and MISSING_COST per level without a candidate. ``first`` and ``last``
    ``(n, K)`` add to the chain's value when candidate k is its first or last pick at a level.
    The forward table holds the best value of the chain down to candidate k at level l."""
    K = gain.shape[1]
    best = np.full((n, K), -np.inf)
    back = np.full((n, K, 2), -1, dtype=np.int64)  # (previous level, previous candidate)
    for lvl in range(n):
        best[lvl] = gain[lvl] - MISSING_COST * lvl + first[lvl]  # k starts the chain: the levels above it missing
        for g in range(1, min(MAX_GAP, lvl) + 1):
            cost = link(lvl - g, lvl) + MISSING_COST * (g - 1)
            total = best[lvl - g][:, None] - cost + gain[lvl][None, :]  # (K above, K here)
            j = np.argmax(total, axis=0)
            value = total[j, np.arange(K)]
            better = value > best[lvl]
            best[lvl] = np.where(better, value, best[lvl])
            back[lvl, better] = np.stack([np.full(better.sum(), lvl - g), j[better]], axis=-1)
    ends = best - MISSING_COST * (n - 1 - np.arange(n))[:, None] + last  # the levels below the last missing
    lvl, i = np.unravel_index(int(np.argmax(ends)), ends.shape)
    value = float(ends[lvl, i])
    picked = np.full(n, -1, dtype=np.int64)
    while lvl >= 0 and i >= 0:
        picked[lvl] = i
        lvl, i = back[lvl, i]
    return picked, value, best


def _backward(gain: np.ndarray, link: callable, n: int, last: np.ndarray) -> np.ndarray:
    """The mirror of ``_viterbi``'s forward table, ``(n, K)``: the best value of the chain
    below candidate k at level l (its later gains, links, missing levels and ``last``, not
    k's own gain). Forward plus backward is the best chain that picks k at l."""
    K = gain.shape[1]
    rest = np.full((n, K), -np.inf)
    for lvl in range(n - 1, -1, -1):
        rest[lvl] = -MISSING_COST * (n - 1 - lvl) + last[lvl]  # k ends the chain: the levels below it missing
        for g in range(1, min(MAX_GAP, n - 1 - lvl) + 1):
            cost = link(lvl, lvl + g) + MISSING_COST * (g - 1)  # (K here, K below)
            total = -cost + (gain[lvl + g] + rest[lvl + g])[None, :]
            rest[lvl] = np.maximum(rest[lvl], total.max(axis=1))
    return rest


def _renamed(gain: np.ndarray, link: callable, n: int, last: np.ndarray, best: np.ndarray,
             picked: np.ndarray, value: float) -> tuple[float, tuple[str, str]]:
    """How far ``value`` (the chosen chain's) lies above the best chain that names its first
    or its last vertebra one level up or down, and those two level names ``(now, then)``.
    Each alternative is the best chain with that candidate at the other level: the forward
    table ``best`` of ``_viterbi`` plus the backward one of ``_backward``."""
    have = np.flatnonzero(picked >= 0)
    margin, renamed = np.inf, ("", "")
    if len(have) < 2:
        return margin, renamed
    rival = best + _backward(gain, link, n, last)  # (n, K): the best chain with k at l
    for lvl in (have[0], have[-1]):
        for to in (lvl - 1, lvl + 1):
            if 0 <= to < n and value - rival[to, picked[lvl]] < margin:
                margin, renamed = value - rival[to, picked[lvl]], (LEVELS[lvl], LEVELS[to])
    return max(float(margin), 0.0), renamed


def edge_gain(gap: np.ndarray, end: int) -> np.ndarray:
    """Log-normal log-density (up to a constant) of T1's (``end`` 0) or L5's (``end`` 1)
    distance ``gap`` from its edge, in its widths, capped at ``EDGE_CAP``."""
    z = (np.log(np.clip(gap, 1e-3, EDGE_CAP)) - EDGE_MU[end]) / EDGE_SIGMA[end]
    return -0.5 * z**2


def edge_terms(centre: np.ndarray, width: np.ndarray, height: float | None, n: int) -> tuple[np.ndarray, np.ndarray]:
    """``(n, K)`` each: the edge fit (``edge_gain``) of T1 when candidate k at level
    l starts the chain (T1 then lies l steps of ``SPACING_PER_WIDTH`` widths above it), and of
    L5 when it ends the chain; zeros without an image height."""
    if height is None or EDGE_WEIGHT == 0:
        return np.zeros((n, len(centre))), np.zeros((n, len(centre)))
    steps = np.arange(n)[:, None] * SPACING_PER_WIDTH  # (n, 1)
    top = centre[None, :, 1] / width[None, :] - steps
    bottom = (height - centre[None, :, 1]) / width[None, :] - steps[::-1]
    return EDGE_WEIGHT * edge_gain(top, 0), EDGE_WEIGHT * edge_gain(bottom, 1)


def pick_chain(candidates: np.ndarray, scores: np.ndarray, n: int = N_VERTEBRAE,
               height: float | None = None) -> Chain:
    """Choose ``n`` ordered vertebrae from ``candidates (K, 4, 2)`` with ``scores (K,)``.

    ``height`` (the radiograph's, in the candidates' pixels) adds the edge fit of the chain's
    ends; None leaves it out. Two passes: the first expects consecutive centres ``SPACING_PER_WIDTH`` mean widths
    apart (loosely: widths of tilted or misread vertebrae vary); the second expects the
    chain's own spacing, measured on the first pass, growing down the spine as
    ``LEVEL_SPACING``. With no usable candidate every level is interpolated from nothing
    and the landmarks are NaN (the caller rejects such a result).
    """
    cand = np.asarray(candidates, dtype=np.float64)
    s = np.asarray(scores, dtype=np.float64)
    keep = np.flatnonzero(np.isfinite(cand).all(axis=(1, 2)) & (s > 0))
    cand, s = cand[keep], s[keep]
    if len(cand) == 0:
        nan = np.full((n, 4, 2), np.nan)
        return Chain(nan, np.zeros(n), np.full(n, -1), [[INTERPOLATED] for _ in range(n)])
    centre = centers(cand)  # (K, 2)
    width = frames(cand)[:, 3]
    gain = np.repeat(np.log(np.maximum(s, 1e-6) / SCORE_FLOOR)[None], n, axis=0)  # (n, K): the same at every level
    dist, tilt, below = _geometry(centre)
    dist = np.maximum(dist, 1e-6)
    base = TILT_WEIGHT * (tilt / TILT_SIGMA) ** 2 + np.where(below, 0.0, np.inf)
    mean_w = (width[:, None] + width[None, :]) / 2.0

    def by_width(upper: int, lower: int) -> np.ndarray:
        ratio = dist / ((lower - upper) * SPACING_PER_WIDTH * mean_w)
        return base + SPACING_WEIGHT * (np.log(ratio) / WIDTH_SIGMA) ** 2

    first, last = edge_terms(centre, width, height, n)
    link = cache(by_width)  # each link's costs once: the forward and backward passes share them
    picked, value, best = _viterbi(gain, link, n, first, last)
    have = np.flatnonzero(picked >= 0)
    if len(have) >= 3:  # the chain's own spacing: median of distance / expected share
        steps = [dist[picked[a], picked[b]] / LEVEL_SPACING[a:b].sum() for a, b in zip(have, have[1:], strict=False)]
        unit = float(np.median(steps))
        cum = np.concatenate([[0.0], np.cumsum(LEVEL_SPACING)])

        def by_spacing(upper: int, lower: int) -> np.ndarray:
            ratio = dist / (unit * (cum[lower] - cum[upper]))
            return base + SPACING_WEIGHT * (np.log(ratio) / SPACING_SIGMA) ** 2

        link = cache(by_spacing)
        picked, value, best = _viterbi(gain, link, n, first, last)
    chain = _fill(cand, s, picked, keep)
    chain.margin, chain.renamed = _renamed(gain, link, n, last, best, picked, value)
    return chain


def level_doubt(chain: Chain) -> str | None:
    """A warning line when the chain's level names are uncertain (``margin`` under
    ``LEVEL_MARGIN``), else None."""
    if not chain.margin < LEVEL_MARGIN:
        return None
    now, then = chain.renamed
    return (f"level names uncertain: a reading that names {now} as {then} scores only "
            f"{chain.margin:.2f} below this one (under {LEVEL_MARGIN:g}); check T1 and L5")


def _fill(cand: np.ndarray, s: np.ndarray, picked: np.ndarray, keep: np.ndarray) -> Chain:
    """The chain's landmarks with unpicked levels interpolated (or extrapolated at the ends)."""
    n = len(picked)
    lm = np.full((n, 4, 2), np.nan)
    have = np.flatnonzero(picked >= 0)
    lm[have] = cand[picked[have]]
    levels = np.arange(n)
    if len(have) == 1:  # one vertebra: nothing to step by; repeat it one width apart
        step = np.array([0.0, SPACING_PER_WIDTH * frames(lm[have[0]])[3]])
        lm = lm[have[0]][None] + (levels - have[0])[:, None, None] * step
    elif len(have) >= 2:
        flat = lm.reshape(n, -1)
        for k in range(flat.shape[1]):
            # inside: linear between neighbours; outside: np.interp would hold the end value,
            # so extrapolate with the step of the two chosen vertebrae nearest the end
            col = np.interp(levels, have, flat[have, k])
            lo, hi = have[:2], have[-2:]
            col[: have[0]] = flat[lo[0], k] + (levels[: have[0]] - lo[0]) * (flat[lo[1], k] - flat[lo[0], k]) / (lo[1] - lo[0])
            col[have[-1] + 1:] = flat[hi[1], k] + (levels[have[-1] + 1:] - hi[1]) * (flat[hi[1], k] - flat[hi[0], k]) / (hi[1] - hi[0])
            flat[:, k] = col
        lm = flat.reshape(n, 4, 2)
    scores = np.where(picked >= 0, s[np.maximum(picked, 0)], 0.0)
    flags = [[] if p >= 0 else [INTERPOLATED] for p in picked]
    original = np.where(picked >= 0, keep[np.maximum(picked, 0)], -1)
    return Chain(lm, scores, original, flags)
