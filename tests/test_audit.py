from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cobbnet.errors import InputError
from cobbnet.io.aasce import Sample
from cobbnet.spine.audit import (
    CHECKS,
    Finding,
    audit_samples,
    audit_split,
    findings_to_json,
    format_findings,
    repaired_landmarks,
    treat_faulty_labels,
)
from cobbnet.spine.cobb import cobb_angles_batch
from cobbnet.spine.landmarks import BL, BR, LEVELS, TL, TR, canonical_order, level_index

W, H = 80, 200


@pytest.fixture
def clean(make_spine):
    return make_spine(W, H, bend=15.0)


def sample(lm, name="s", angles=None, width=W, height=H):
    return Sample(name, Path(name), np.asarray(lm, dtype=np.float64), angles, width, height)


def checks_of(findings, name="s"):
    return {f.check for f in findings if f.name == name}


def test_clean_spine_has_no_findings(clean):
    angles, _, _ = cobb_angles_batch(clean[None], np.array([H]))
    assert angles[0, 0] > 5  # the fixture spine is really curved
    assert audit_samples([sample(clean, angles=angles[0])]) == []


def test_empty_input():
    assert audit_samples([]) == []


def test_left_right_swap(clean):
    lm = clean.copy()
    v = level_index("T5")
    lm[v] = lm[v][[TR, TL, BR, BL]]  # a mirrored vertebra: same outline, sides swapped
    findings = audit_samples([sample(lm)])
    assert checks_of(findings) == {"corners-swapped-lr"}
    assert "T5" in findings[0].detail and "top edge" in findings[0].detail


def test_top_bottom_swap(clean):
    lm = clean.copy()
    v = level_index("L2")
    lm[v] = lm[v][[BL, BR, TL, TR]]
    findings = audit_samples([sample(lm)])
    assert checks_of(findings) == {"corners-swapped-tb"}
    assert "L2" in findings[0].detail


def test_vertebrae_out_of_order(clean):
    lm = clean.copy()
    a, b = level_index("T7"), level_index("T8")
    lm[[a, b]] = lm[[b, a]]
    findings = audit_samples([sample(lm)])
    assert checks_of(findings) == {"vertebrae-out-of-order"}
    assert "T8" in findings[0].detail and "T7" in findings[0].detail


def test_self_intersecting_without_any_swap(clean):
    # a bowtie whose corners keep left < right and top < bottom: only its edges cross
    bowtie = np.array([[3.0, 0.0], [5.0, 6.0], [1.0, 2.0], [8.0, 8.0]])  # TL, TR, BL, BR
    lm = clean.copy()
    v = level_index("T9")
    lm[v] = bowtie - bowtie.mean(axis=0) + lm[v].mean(axis=0)  # same centre, order kept
    findings = audit_samples([sample(lm)])
    assert checks_of(findings) == {"self-intersecting"}
    assert "T9" in findings[0].detail


def test_one_swapped_pair_also_crosses_the_outline(clean):
    lm = clean.copy()
    v = level_index("L4")
    lm[v, [BL, BR]] = lm[v, [BR, BL]]
    assert checks_of(audit_samples([sample(lm)])) == {"corners-swapped-lr", "self-intersecting"}


def test_concave_outline_is_not_self_intersecting(clean):
    lm = clean.copy()
    v = level_index("T3")
    c = lm[v].mean(axis=0)
    # an arrowhead: the bottom-left corner pushed up inside, outline still simple
    lm[v] = c + np.array([[-6.0, -3.0], [6.0, -3.0], [-1.0, -1.0], [6.0, 3.0]])
    assert "self-intersecting" not in checks_of(audit_samples([sample(lm)]))


@pytest.mark.parametrize("level, corner, axis, value, outside", [
    ("T1", TL, 0, -1.0, True), ("T1", TL, 0, 0.0, False),
    ("T1", TR, 0, W, True), ("T1", TR, 0, W - 0.5, False),
    ("T1", TL, 1, -0.5, True), ("T1", TL, 1, 0.0, False),
    ("L5", BR, 1, H, True), ("L5", BR, 1, H - 0.5, False),
])
def test_outside_image(clean, level, corner, axis, value, outside):
    lm = clean.copy()
    lm[level_index(level), corner, axis] = value  # stays on its own side of the vertebra
    findings = audit_samples([sample(lm)])
    assert {f.check for f in findings} == ({"outside-image"} if outside else set())
    if outside:
        assert level in findings[0].detail and f"{W} x {H}" in findings[0].detail


def test_angles_mismatch_beyond_tolerance_only(clean):
    angles, _, _ = cobb_angles_batch(clean[None], np.array([H]))
    close = angles[0] + np.array([0.0, 0.005, 0.0])
    far = angles[0] + np.array([0.0, 0.0, 0.5])
    findings = audit_samples([sample(clean, "close", close), sample(clean, "far", far),
                              sample(clean, "none", None)])
    assert [(f.name, f.check) for f in findings] == [("far", "angles-mismatch")]
    assert "tl" in findings[0].detail and "0.500" in findings[0].detail
    assert audit_samples([sample(clean, "far", far)], tol_deg=1.0) == []


def test_findings_come_in_sample_then_check_order(clean):
    lm = clean.copy()
    lm[0, TL, 0] = -5.0  # outside
    lm[[3, 4]] = lm[[4, 3]]  # out of order
    findings = audit_samples([sample(clean, "a"), sample(lm, "b"), sample(lm, "c")])
    assert [(f.name, f.check) for f in findings] == [
        ("b", "vertebrae-out-of-order"), ("b", "outside-image"),
        ("c", "vertebrae-out-of-order"), ("c", "outside-image"),
    ]
    assert list(CHECKS).index("vertebrae-out-of-order") < list(CHECKS).index("outside-image")


def test_format_and_json():
    findings = [Finding("a.jpg", "outside-image", "1 point(s) outside"),
                Finding("a.jpg", "angles-mismatch", "differ"),
                Finding("b c.jpg", "outside-image", "2 point(s) outside")]
    text = format_findings(findings).splitlines()
    assert text[:3] == ["a.jpg: outside-image: 1 point(s) outside", "a.jpg: angles-mismatch: differ",
                        "b c.jpg: outside-image: 2 point(s) outside"]
    assert text[3].startswith("3 finding(s) in 2 image(s)")
    assert "outside-image 2" in text[3] and "angles-mismatch 1" in text[3]
    assert format_findings([]) == "no findings"
    data = json.loads(json.dumps(findings_to_json(findings)))
    assert data[2] == {"name": "b c.jpg", "check": "outside-image", "detail": "2 point(s) outside"}


def test_audit_split_on_a_written_dataset(tmp_dataset, make_spine):
    good, bad = make_spine(W, H, 10.0), make_spine(W, H, -10.0)
    bad[LEVELS.index("L1"), [TL, TR]] = bad[LEVELS.index("L1"), [TR, TL]]
    angles = cobb_angles_batch(np.stack([good, bad]), np.array([H, H]))[0]
    root = tmp_dataset([good, bad], [(W, H), (W, H)], names=["good.jpg", "bad.jpg"], angles=angles)
    findings = audit_split(root, "training")
    assert {f.name for f in findings} == {"bad.jpg"}
    assert "corners-swapped-lr" in checks_of(findings, "bad.jpg")


def test_real_training_labels_audit(aasce_root):
    findings = audit_split(aasce_root, "training")
    faulty = {f.name for f in findings}
    # the data's README speaks of about 25 imperfect annotations among 481
    assert 10 <= len(faulty) <= 60
    assert not any(f.check == "angles-mismatch" for f in findings)
    assert all(f.check in CHECKS for f in findings)


def top_listed_last(lm):
    """The slip of some AASCE labels: the top vertebra listed after the bottom one."""
    return np.concatenate([lm[1:], lm[:1]])


def test_repaired_landmarks_puts_a_label_listed_out_of_order_back(clean):
    good, slipped = sample(clean, "good"), sample(top_listed_last(clean), "slipped")
    fixed, names = repaired_landmarks([good, slipped])
    assert names == ["slipped"]
    np.testing.assert_array_equal(fixed[0], clean)
    np.testing.assert_array_equal(fixed[1], clean)
    np.testing.assert_array_equal(slipped.landmarks, top_listed_last(clean))  # the sample itself is untouched


def test_repaired_landmarks_names_only_labels_the_reordering_changed(clean):
    lm = clean.copy()
    lm[level_index("T3"), TL, 0] = -5.0  # outside the image: flagged, but the order is already canonical
    fixed, names = repaired_landmarks([sample(lm, "outside")])
    assert names == []
    np.testing.assert_array_equal(fixed[0], lm)


def test_treat_faulty_labels_repairs_skips_or_keeps(clean):
    samples = [sample(clean, "good"), sample(top_listed_last(clean), "slipped")]
    said = []
    repaired = treat_faulty_labels(samples, "repair", said.append)
    np.testing.assert_array_equal(repaired[1].landmarks, canonical_order(samples[1].landmarks))
    assert repaired[0] is samples[0] and said == ["repair 1 faulty training label(s): slipped"]
    assert [s.name for s in treat_faulty_labels(samples, "skip", said.append)] == ["good"]
    assert treat_faulty_labels(samples, "keep") is samples
    with pytest.raises(InputError, match="'mend' is not one of repair, skip, keep"):
        treat_faulty_labels(samples, "mend")
