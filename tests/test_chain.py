"""Levels from a chain: picks the 17 vertebrae among more candidates and fills a miss (no torch)."""

from __future__ import annotations

import numpy as np
import pytest

from cobbnet.io.synthetic import synth_sample
from cobbnet.spine.chain import (
    EDGE_CAP,
    EDGE_MU,
    INTERPOLATED,
    LEVEL_MARGIN,
    _backward,
    _viterbi,
    edge_gain,
    level_doubt,
    pick_chain,
)
from cobbnet.spine.landmarks import centers
from cobbnet.spine.patches import frames


def spine() -> np.ndarray:
    return synth_sample(0, 0)[2]  # (17, 4, 2)


def test_true_vertebrae_in_any_order_come_back_in_order() -> None:
    lm = spine()
    perm = np.random.default_rng(0).permutation(17)
    chain = pick_chain(lm[perm], np.full(17, 0.8))
    np.testing.assert_allclose(chain.landmarks, lm)
    assert chain.n_interpolated == 0 and chain.flags == [[] for _ in range(17)]
    np.testing.assert_array_equal(perm[chain.picked], np.arange(17))


def test_strays_off_the_spine_and_duplicates_are_rejected() -> None:
    lm = spine()
    off = lm[8] + np.array([300.0, 0.0])  # beside the spine
    dup = lm[5] + 2.0  # a second peak on one vertebra
    cand = np.concatenate([lm, off[None], dup[None]])
    scores = np.concatenate([np.full(17, 0.7), [0.5, 0.45]])
    chain = pick_chain(cand, scores)
    np.testing.assert_array_equal(chain.picked, np.arange(17))


def test_a_missed_vertebra_is_interpolated_and_flagged() -> None:
    lm = spine()
    keep = [v for v in range(17) if v != 9]
    chain = pick_chain(lm[keep], np.full(16, 0.7))
    assert chain.flags[9] == [INTERPOLATED] and chain.picked[9] == -1 and chain.scores[9] == 0
    assert sum(bool(f) for f in chain.flags) == 1
    expected = (lm[8] + lm[10]) / 2
    assert np.linalg.norm(chain.landmarks[9] - expected, axis=-1).max() < 1e-9
    np.testing.assert_allclose(chain.landmarks[keep], lm[keep])


def test_a_missed_end_vertebra_is_extrapolated() -> None:
    lm = spine()
    chain = pick_chain(lm[:16], np.full(16, 0.7))
    assert chain.flags[16] == [INTERPOLATED]
    step = (lm[15] - lm[14]).mean(axis=0)
    assert np.linalg.norm(chain.landmarks[16].mean(axis=0) - (lm[15].mean(axis=0) + step)) < 1e-6


def test_nothing_found_gives_nan_and_every_level_flagged() -> None:
    chain = pick_chain(np.zeros((5, 4, 2)), np.zeros(5))
    assert np.isnan(chain.landmarks).all() and chain.n_interpolated == 17


def framed(top: float, bottom: float) -> tuple[np.ndarray, float]:
    """C7, T1 .. L5, S1 ``(19, 4, 2)`` of a synthetic spine (C7 and S1 one step beyond the ends)
    placed so T1's centre is ``top`` of its widths below the image's top and L5's ``bottom`` of
    its widths above the bottom; and the image height."""
    lm = spine()
    c = centers(lm)
    c7 = lm[0] + 0.92 * (c[0] - c[1])
    s1 = lm[-1] + (c[-1] - c[-2])
    ext = np.concatenate([c7[None], lm, s1[None]])
    w = frames(ext)[:, 3]
    ext = ext + np.array([0.0, top * w[1] - centers(ext)[1, 1]])
    return ext, float(centers(ext)[-2, 1] + bottom * w[-2])


@pytest.mark.parametrize("drop", [None, 9])
def test_the_edges_tell_t1_from_c7_and_l5_from_s1(drop: int | None) -> None:
    """C7 and S1 detected as strongly as the rest: counting alone cannot name the levels; a
    radiograph framed on the spine (T1 and L5 near its edges) can, also with a vertebra missed."""
    ext, height = framed(0.6, 0.8)
    keep = [i for i in range(19) if drop is None or i != drop + 1]
    chain = pick_chain(ext[keep], np.full(len(keep), 0.7), height=height)
    expected = ext[1:18].copy()
    if drop is None:
        np.testing.assert_allclose(chain.landmarks, expected)
    else:
        assert chain.flags[drop] == [INTERPOLATED]
        others = [v for v in range(17) if v != drop]
        np.testing.assert_allclose(chain.landmarks[others], expected[others])


def test_a_widely_framed_radiograph_leaves_the_count_alone() -> None:
    """Neck and pelvis in view: both ends lie beyond EDGE_CAP widths from the edges, so the
    edges weigh nothing and the chain is what counting gives."""
    ext, height = framed(8.0, 8.0)
    scores = np.full(19, 0.7)
    scores[[0, 18]] = 0.35  # C7 and S1 weaker: counting keeps T1 .. L5
    with_edges = pick_chain(ext, scores, height=height)
    np.testing.assert_allclose(with_edges.landmarks, pick_chain(ext, scores).landmarks)
    np.testing.assert_allclose(with_edges.landmarks, ext[1:18])


def edge_fit(landmarks: np.ndarray, height: float) -> float:
    """How well T1 and L5 of ``landmarks (17, 4, 2)`` sit below the top and above the bottom of
    a radiograph ``height`` pixels tall (0 at best)."""
    c, w = centers(landmarks), frames(landmarks)[:, 3]
    return float(edge_gain(c[0, 1] / w[0], 0) + edge_gain((height - c[-1, 1]) / w[-1], 1))


def test_the_edge_fit_peaks_at_the_measured_distances() -> None:
    ext, height = framed(*np.exp(EDGE_MU))
    best = edge_fit(ext[1:18], height)
    assert best == pytest.approx(0.0, abs=1e-9)
    assert edge_fit(ext[:17], height) < best - 1.0 and edge_fit(ext[2:], height) < best - 1.0
    assert edge_gain(np.array([EDGE_CAP, 10 * EDGE_CAP]), 0)[0] == edge_gain(np.array([10 * EDGE_CAP]), 0)[0]


# ---- how sure the level names are ----


def test_a_spine_with_nothing_beyond_its_ends_has_sure_level_names() -> None:
    """Renaming T1 as T2 (or L5 as L4) would leave a level without a vertebra: the rival
    lies at least MISSING_COST below."""
    chain = pick_chain(spine(), np.full(17, 0.8))
    assert chain.margin >= LEVEL_MARGIN and level_doubt(chain) is None
    assert chain.renamed in {("T1", "T2"), ("L5", "L4")}


def test_c7_and_s1_as_strong_as_the_rest_make_the_names_uncertain_without_edges() -> None:
    """19 equal vertebrae and no image edges: T1..L5 and C7..L4 (or T2..S1) tie, and the
    chain says so."""
    ext, _ = framed(0.6, 0.8)
    chain = pick_chain(ext, np.full(19, 0.7))
    assert 0.0 <= chain.margin < LEVEL_MARGIN
    now, then = chain.renamed
    doubt = level_doubt(chain)
    assert doubt is not None and f"names {now} as {then}" in doubt and "\n" not in doubt
    assert {now, then} in ({"T1", "T2"}, {"L5", "L4"}, {"T1", "C7"})


def test_the_edges_make_the_same_names_sure() -> None:
    ext, height = framed(0.6, 0.8)
    without = pick_chain(ext, np.full(19, 0.7))
    framed_chain = pick_chain(ext, np.full(19, 0.7), height=height)
    assert framed_chain.margin >= LEVEL_MARGIN > without.margin
    assert level_doubt(framed_chain) is None


def test_the_margin_falls_as_c7_gains() -> None:
    """Counting alone (no edges), S1 faint: the stronger C7, the closer the rival that starts
    at C7 (the chosen T1 renamed T2); once C7 is the stronger, the chain starts there."""
    ext, _ = framed(0.6, 0.8)
    margins, first = [], []
    for c7 in (0.1, 0.4, 0.6, 0.8):
        scores = np.full(19, 0.7)
        scores[[0, 18]] = c7, 0.05
        chain = pick_chain(ext, scores)
        margins.append(chain.margin)
        first.append(int(chain.picked[0]))
    assert margins[0] > margins[1] > margins[2] >= 0.0
    assert first == [1, 1, 1, 0] and margins[2] < LEVEL_MARGIN <= margins[0]


def test_no_candidates_means_no_rival() -> None:
    chain = pick_chain(np.zeros((5, 4, 2)), np.zeros(5))
    assert chain.margin == np.inf and level_doubt(chain) is None


def test_forward_plus_backward_is_the_best_chain_through_each_candidate() -> None:
    """The two passes mirror each other: their sum at (level, candidate) equals the forward
    pass re-run with that candidate held at that level, on random gains and links (negative
    gains leave levels missing, so the gaps between picks and their costs are exercised)."""
    rng = np.random.default_rng(0)
    n, K = 6, 5
    gain = rng.normal(0.0, 1.0, (n, K))
    first, last = rng.normal(0.0, 0.5, (n, K)), rng.normal(0.0, 0.5, (n, K))
    costs = {(a, b): np.abs(rng.normal(0.0, 1.0, (K, K))) for a in range(n) for b in range(a + 1, n)}
    link = lambda a, b: costs[a, b]  # noqa: E731
    _, value, best = _viterbi(gain, link, n, first, last)
    through = best + _backward(gain, link, n, last)
    assert through.max() == pytest.approx(value)
    hold = 1e4
    for lvl in range(n):
        for k in range(K):
            held = gain.copy()
            held[lvl, k] += hold
            picked, alt, _ = _viterbi(held, link, n, first, last)
            assert picked[lvl] == k
            assert through[lvl, k] == pytest.approx(alt - hold, abs=1e-6)
