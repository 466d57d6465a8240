"""The input gate: synthetic and real radiographs pass, generated junk is rejected, and each
doubt about a chain becomes a warning (cobbnet.infer.gate; calibration in benchmarks/gate.py)."""

from __future__ import annotations

import numpy as np
import pytest
from gate import junk_images, sideways

from cobbnet.infer.gate import (
    INTERPOLATED,
    MAX_INTERPOLATED,
    MIN_CHAIN_SCORE,
    assess,
    check_image,
)
from cobbnet.io.synthetic import synth_sample
from cobbnet.spine.landmarks import N_VERTEBRAE

SIZE = (W, H) = (400, 1000)


@pytest.fixture(scope="module")
def synthetic() -> list[np.ndarray]:
    return [synth_sample(i, 21, size=(1000, 400))[1] for i in range(4)] + [synth_sample(4, 21)[1]]


@pytest.fixture(scope="module")
def predictor():
    from cobbnet.infer.predict import Predictor

    return Predictor()


def test_synthetic_radiographs_pass_the_image_check(synthetic):
    for image in synthetic:
        assert check_image(image) is None


def test_every_generated_junk_image_is_rejected_by_the_image_check():
    # film grain on a drawing this small survives the probe: the chain check is left for those
    for name, image in junk_images(seed=3, scale=0.5).items():
        reason = check_image(image)
        assert (reason is not None and "\n" not in reason) or "film grain" in name, name
    for name, image in junk_images(seed=3, scale=1.0).items():
        if "film grain" in name and "lines" not in name:
            assert "drawing" in check_image(image), name


@pytest.mark.parametrize("name, needle", [
    ("blank black", "blank"), ("uniform grey, faint noise", "uniform"), ("1x1", "too small"),
    ("tiny 64x32", "too small"), ("uniform noise", "noise"), ("uniform noise, JPEG", "noise"),
    ("blurred noise (sigma 20)", "noise"), ("vertical gradient", "gradient"), ("circles", "drawing"),
    ("lines", "drawing"), ("checkerboard", "drawing"),
])
def test_junk_reasons_say_what_is_wrong(name, needle):
    assert needle in check_image(junk_images(seed=0, scale=0.5)[name])


def test_sideways_radiograph_is_rejected_and_upright_passes(synthetic):
    assert "wider than tall" in check_image(sideways(synthetic[0]))
    assert check_image(synthetic[0]) is None


def test_check_image_wants_gray_uint8():
    with pytest.raises(ValueError):
        check_image(np.zeros((300, 300, 3), np.uint8))


# ---- assess: chains built by hand ----


def chain(make_spine, scores=0.6):
    return make_spine(W, H, bend=40.0), np.full(N_VERTEBRAE, scores), [[] for _ in range(N_VERTEBRAE)]


def test_a_well_formed_chain_is_ok(make_spine):
    lm, sc, fl = chain(make_spine)
    assert assess(lm, sc, fl, SIZE) == ("ok", None, [])
    assert assess(lm, sc, None, SIZE)[0] == "ok"


def test_low_scores_everywhere_mean_no_spine(make_spine):
    lm, sc, fl = chain(make_spine, scores=MIN_CHAIN_SCORE - 0.05)
    status, reason, _ = assess(lm, sc, fl, SIZE)
    assert status == "rejected" and "no spine" in reason


def test_one_interpolated_vertebra_is_uncertain_and_named(make_spine):
    lm, sc, fl = chain(make_spine)
    fl[6].append(INTERPOLATED)
    sc[6] = 0.0
    status, reason, warnings = assess(lm, sc, fl, SIZE)
    assert status == "uncertain" and reason is None
    assert any(w.startswith("T7 interpolated") for w in warnings), warnings


def test_mostly_interpolated_chain_is_rejected(make_spine):
    lm, sc, fl = chain(make_spine, scores=0.9)
    for v in range(MAX_INTERPOLATED + 1):
        fl[2 * v].append(INTERPOLATED)
        sc[2 * v] = 0.0
    status, reason, _ = assess(lm, sc, fl, SIZE)
    assert status == "rejected" and "interpolated" in reason


def test_a_barely_found_vertebra_is_uncertain(make_spine):
    lm, sc, fl = chain(make_spine)
    sc[16] = 0.1
    status, _, warnings = assess(lm, sc, fl, SIZE)
    assert status == "uncertain" and any("low detection score at L5" in w for w in warnings)


def test_a_gap_and_a_double_are_implausible_spacing(make_spine):
    lm, sc, fl = chain(make_spine)
    gap = lm.copy()
    gap[9:] += np.array([0.0, 2.0 * (lm[9, 0, 1] - lm[8, 0, 1])])  # T10 on: pushed down two steps
    status, _, warnings = assess(gap, sc, fl, (W, 2 * H))
    assert status == "uncertain" and any("gap T9-T10" in w for w in warnings), warnings
    double = lm.copy()
    double[5] = double[4] + np.array([0.0, 3.0])  # T6 drawn on T5
    status, _, warnings = assess(double, sc, fl, SIZE)
    assert status == "uncertain" and any("T5-T6 under" in w for w in warnings), warnings


def test_a_chain_running_across_the_image_is_rejected(make_spine):
    lm, sc, fl = chain(make_spine)
    across = lm[..., ::-1].copy()  # x and y swapped: the spine lies on its side
    status, reason, _ = assess(across, sc, fl, (H, W))
    assert status == "rejected" and "top to bottom" in reason


def test_non_finite_chain_is_rejected(make_spine):
    lm, sc, fl = chain(make_spine)
    lm[3, 1, 0] = np.nan
    assert assess(lm, sc, fl, SIZE)[0] == "rejected"


def test_assess_checks_its_shapes(make_spine):
    lm, sc, fl = chain(make_spine)
    with pytest.raises(ValueError):
        assess(lm[:16], sc, fl, SIZE)


# ---- with the bundled model ----


def test_synthetic_radiographs_pass_with_the_model(synthetic, predictor):
    for image in synthetic[:3]:
        p = predictor.predict_arrays([image], [None])[0]
        status, reason, _ = assess(p.landmarks, p.scores, getattr(p, "flags", None), p.image_size)
        assert status != "rejected", reason


def test_real_radiographs_pass_the_image_check(aasce_root):
    from cobbnet.io.images import find_images, read_image

    paths = find_images([aasce_root / "data" / "training"])
    for path in paths[::8]:
        assert check_image(read_image(path)) is None, path.name


@pytest.mark.slow
def test_every_real_radiograph_passes_the_gate(aasce_root, predictor):
    from cobbnet.io.images import find_images, read_image

    for path in find_images([aasce_root / "data" / "training"]):
        image = read_image(path)
        assert check_image(image) is None, path.name
        p = predictor.predict_arrays([image], [None])[0]
        status, reason, _ = assess(p.landmarks, p.scores, getattr(p, "flags", None), p.image_size)
        assert status != "rejected", (path.name, reason)


def test_level_names_in_doubt_make_the_reading_uncertain():
    """C7 and S1 found as strongly as T1..L5, the spine far from both edges: two readings tie,
    so the predictor marks the result uncertain and names the renaming that scores as well."""
    from cobbnet.infer.predict import Predictor
    from cobbnet.infer.preprocess import to_input
    from cobbnet.spine.chain import LEVEL_MARGIN
    from cobbnet.spine.landmarks import centers

    lm = synth_sample(0, 0)[2]  # (17, 4, 2) in a 979 x 2274 radiograph
    c = centers(lm)
    ext = np.concatenate([(lm[0] + (c[0] - c[1]))[None], lm, (lm[-1] + (c[-1] - c[-2]))[None]])
    ext[..., 1] += 2000.0  # neck and pelvis in view: the edges weigh nothing
    image = np.zeros((int(ext[..., 1].max()) + 2000, 979), np.uint8)
    predictor = Predictor(refine=False)
    corners = to_input(ext, image.shape, predictor.input_size)
    result = predictor._read(image, "wide.png", corners, np.full(19, 0.7), [])
    assert result.status == "uncertain", (result.status, result.warnings)
    assert result.image is image and 0.0 <= result.level_margin < LEVEL_MARGIN
    assert result.level_doubt in result.warnings
    doubt = [w for w in result.warnings if w.startswith("level names uncertain")]
    assert len(doubt) == 1 and f"under {LEVEL_MARGIN:g}" in doubt[0]
    sure = predictor._read(image, "wide.png", corners[1:18], np.full(17, 0.7), [])
    assert not any(w.startswith("level names uncertain") for w in sure.warnings), sure.warnings
    ungated = Predictor(refine=False, gate=False)._read(image, "wide.png", corners, np.full(19, 0.7), [])
    assert ungated.status == "ok" and ungated.warnings == []
