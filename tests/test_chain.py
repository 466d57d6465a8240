"""Levels from a chain: picks the 17 vertebrae among more candidates and fills a miss (no torch)."""

from __future__ import annotations

import numpy as np

from cobbnet.io.synthetic import synth_sample
from cobbnet.spine.chain import INTERPOLATED, pick_chain


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
