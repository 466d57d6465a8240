"""Which vertebra a candidate is: the ladder of training examples and the chain's level evidence (no torch)."""

from __future__ import annotations

import numpy as np
import pytest

from cobbnet.io.synthetic import synth_sample
from cobbnet.spine.chain import LEVEL_MARGIN, pick_chain
from cobbnet.spine.landmarks import LEVELS, centers
from cobbnet.spine.levels import (
    BEYOND,
    CLASSES,
    CONTEXT,
    LEVEL_CAP,
    LEVEL_WEIGHT,
    ladder,
    level_classes,
    level_frames,
    level_gain,
)
from cobbnet.spine.patches import frames

C7, S1 = CLASSES.index("C7"), CLASSES.index("S1")


def spine() -> np.ndarray:
    return synth_sample(0, 0)[2]  # (17, 4, 2)


def test_each_level_is_its_own_class() -> None:
    assert [CLASSES[k] for k in level_classes()] == list(LEVELS)
    assert CLASSES[:BEYOND] == ("C6", "C7") and CLASSES[-BEYOND:] == ("S1", "S2")


def test_the_ladder_extends_the_spine_by_whole_steps_beyond_each_end() -> None:
    lm = spine()
    rungs, classes = ladder(lm)
    assert rungs.shape == (17 + 2 * BEYOND, 4, 2)
    np.testing.assert_allclose(rungs[BEYOND:BEYOND + 17], lm)
    assert [CLASSES[k] for k in classes] == ["C6", "C7", *LEVELS, "S1", "S2"]
    c = centers(rungs)
    up, down = c[BEYOND] - c[BEYOND + 1], c[BEYOND + 16] - c[BEYOND + 15]
    np.testing.assert_allclose(c[BEYOND - 1] - c[BEYOND], up)  # C7 one T2->T1 step above T1
    np.testing.assert_allclose(c[0] - c[BEYOND], 2 * up)  # C6 two
    np.testing.assert_allclose(c[-BEYOND] - c[-BEYOND - 1], down)  # S1 one L4->L5 step below L5
    # the shape of T1 and L5, moved
    np.testing.assert_allclose(rungs[0] - rungs[0].mean(0), lm[0] - lm[0].mean(0))
    np.testing.assert_allclose(rungs[-1] - rungs[-1].mean(0), lm[-1] - lm[-1].mean(0))


def test_level_frames_widen_only_the_width() -> None:
    f = frames(spine())
    wide = level_frames(f)
    np.testing.assert_allclose(wide[:, :3], f[:, :3])
    np.testing.assert_allclose(wide[:, 3], CONTEXT * f[:, 3])
    assert not np.shares_memory(wide, f)


def test_level_gain_charges_the_ends_only_zero_at_the_likeliest_class_and_capped() -> None:
    T1, L5, T6 = CLASSES.index("T1"), CLASSES.index("L5"), CLASSES.index("T6")
    probs = np.full((4, len(CLASSES)), 0.01)
    probs[0, [C7, T1]] = 0.7, 0.1  # C7-like
    probs[1, T6] = 0.8  # T6-like
    probs[2] = 0.0
    probs[2, T1] = 1.0  # surely T1
    probs[3, [L5, S1]] = 0.3, 0.6  # S1-like
    g = level_gain(probs, weight=1.0)
    assert g.shape == (17, 4)
    np.testing.assert_allclose(g[0, 0], np.log(0.1 / 0.7))  # C7-like named T1
    np.testing.assert_allclose(g[0, 2], 0.0)
    np.testing.assert_allclose(g[-1, 2], -LEVEL_CAP)  # a sure T1 named L5 costs the cap, no more
    np.testing.assert_allclose(g[0, 1], max(np.log(0.01 / 0.8), -LEVEL_CAP))
    np.testing.assert_allclose(g[-1, 3], np.log(0.3 / 0.6))  # S1-like named L5
    assert (g[1:-1] == 0).all()  # no evidence between the ends
    assert (g <= 0).all() and (g >= -LEVEL_CAP).all()
    np.testing.assert_allclose(level_gain(probs, weight=0.5), 0.5 * g)
    np.testing.assert_allclose(level_gain(probs), LEVEL_WEIGHT * g)


def one_hot(classes: np.ndarray, sure: float = 0.9) -> np.ndarray:
    p = np.full((len(classes), len(CLASSES)), (1 - sure) / (len(CLASSES) - 1))
    p[np.arange(len(classes)), classes] = sure
    return p


def with_c7(c7_score: float) -> tuple[np.ndarray, np.ndarray]:
    """C7 (one step above T1) and T1..L5 as candidates, and their scores: C7 strong, L5 weak."""
    lm = spine()
    c = centers(lm)
    c7 = lm[0] + (c[0] - c[1])
    scores = np.full(18, 0.7)
    scores[0], scores[-1] = c7_score, 0.35
    return np.concatenate([c7[None], lm]), scores


def test_counting_alone_takes_a_strong_c7_and_the_level_network_puts_it_back() -> None:
    cand, scores = with_c7(0.9)
    counted = pick_chain(cand, scores)
    np.testing.assert_array_equal(counted.picked, np.arange(17))  # C7 named T1, L5 left out
    classes = np.array([C7, *level_classes()])
    named = pick_chain(cand, scores, level_probs=one_hot(classes))
    np.testing.assert_array_equal(named.picked, np.arange(1, 18))
    assert named.margin >= LEVEL_MARGIN


@pytest.mark.parametrize("sure", [0.2, 0.5])
def test_a_level_network_that_knows_nothing_changes_nothing(sure: float) -> None:
    """Equal probabilities for every class (or a network unsure of every candidate alike)
    add the same evidence to every chain."""
    cand, scores = with_c7(0.9)
    flat = np.full((18, len(CLASSES)), 1 / len(CLASSES))
    np.testing.assert_array_equal(pick_chain(cand, scores, level_probs=flat).picked, pick_chain(cand, scores).picked)


def test_level_probs_follow_the_candidates_that_are_kept() -> None:
    """Candidates the chain ignores (not finite, or scoring 0) are dropped with their rows."""
    cand, scores = with_c7(0.9)
    classes = np.array([C7, *level_classes()])
    bad = np.full((1, 4, 2), np.nan)
    cand2 = np.concatenate([bad, cand])
    scores2 = np.concatenate([[0.9], scores])
    probs2 = np.concatenate([one_hot(np.array([C7 + 1])), one_hot(classes)])
    chain = pick_chain(cand2, scores2, level_probs=probs2)
    np.testing.assert_array_equal(chain.picked, np.arange(2, 19))


# ---- the predictor's use of a level network ----


def test_level_probs_read_each_usable_candidate_in_one_wide_patch() -> None:
    from cobbnet.infer.predict import level_probs
    from cobbnet.spine import patches

    image = np.random.default_rng(0).integers(0, 255, (2300, 1000), dtype=np.uint8)
    cand = np.concatenate([spine(), np.full((1, 4, 2), np.nan)])
    scores = np.concatenate([np.full(16, 0.7), [0.0, 0.9]])  # L5 scores 0; the last is not finite
    calls = []

    def net(x: np.ndarray) -> np.ndarray:
        calls.append(x)
        p = np.zeros((len(x), len(CLASSES)))
        p[:, C7] = 1.0
        return p

    probs = level_probs(net, image, cand, scores)
    assert len(calls) == 1 and calls[0].shape == (16, 1, *patches.PATCH_SHAPE) and calls[0].dtype == np.float32
    want = patches.cut_pyramid(patches.pyramid(image), level_frames(patches.frames(spine()[:16]), CONTEXT))[:, None] / 255.0
    np.testing.assert_allclose(calls[0], want, atol=1e-6)
    assert (probs[:16, C7] == 1.0).all()
    np.testing.assert_allclose(probs[16:], 1 / len(CLASSES))


def test_level_context_is_read_from_the_networks_config(tmp_path) -> None:
    from cobbnet.errors import InputError
    from cobbnet.infer.predict import level_context

    (tmp_path / "net.json").write_text('{"config": {"model": {"context": 2.5}}}')
    assert level_context(tmp_path / "net.safetensors") == 2.5
    (tmp_path / "old.json").write_text('{"config": {"model": {}}}')
    assert level_context(tmp_path / "old.safetensors") == CONTEXT
    with pytest.raises(InputError, match="missing.json: not a readable level-network config"):
        level_context(tmp_path / "missing.safetensors")
