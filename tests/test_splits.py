"""Patient-grouped splits: no patient on both sides, in k-fold and the fixed holdout."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cobbnet.errors import InputError
from cobbnet.io.aasce import patient_key, read_split
from cobbnet.io.splits import holdout_indices, kfold_indices, split_indices

AASCE = Path(__file__).resolve().parents[2] / "shared" / "boostnet_labeldata"


def test_patient_key_is_the_number_before_the_view_letter() -> None:
    assert patient_key("sunhl-1th-02-Jan-2017-162 A AP.jpg") == "162"
    assert patient_key("sunhl-1th-02-Jan-2017-162 B AP.jpg") == "162"
    assert patient_key("sunhl-1th-04-Jan-2017-165 C AP.jpg") == patient_key("sunhl-1th-03-Jan-2017-165 A AP.jpg")
    assert patient_key("sunhl-1th-21-Nov-2016-138 D AP2.jpg") == "138"
    assert patient_key("sunhl-1th-22-Nov-2016-142 A AP (2).jpg") == "142"
    assert patient_key("sunhl-1th-20-Jul-2016-coronal12.jpg") == "sunhl-1th-20-Jul-2016-coronal12"


def _names(rng: np.random.Generator, patients: int) -> list[str]:
    return [f"x-{p} {chr(65 + v)} AP.jpg" for p in range(patients) for v in range(int(rng.integers(1, 6)))]


@pytest.mark.parametrize("k", [2, 5, 15])
def test_grouped_kfold_keeps_each_patient_on_one_side(k: int) -> None:
    names = _names(np.random.default_rng(k), 60)
    groups = [patient_key(n) for n in names]
    seen = np.zeros(len(names), dtype=int)
    for fold in range(k):
        train, val = kfold_indices(len(names), k, fold, seed=3, groups=groups)
        assert not {groups[i] for i in train} & {groups[i] for i in val}
        assert sorted(np.concatenate([train, val])) == list(range(len(names)))
        seen[val] += 1
    assert (seen == 1).all()  # every radiograph validated exactly once


def test_holdout_takes_a_share_of_patients_and_is_stable() -> None:
    names = _names(np.random.default_rng(0), 100)
    groups = [patient_key(n) for n in names]
    train, val = holdout_indices(groups, 0.2, seed=0)
    held = {groups[i] for i in val}
    assert len(held) == 20 and not held & {groups[i] for i in train}
    assert np.array_equal(val, split_indices(names, 15, 0, 0, 0.2)[1])
    with pytest.raises(ValueError, match="holdout fraction"):
        holdout_indices(groups, 1.0)


def test_a_frozen_split_file_holds_out_its_patients(tmp_path) -> None:
    names = _names(np.random.default_rng(0), 10)
    (tmp_path / "s.txt").write_text("# two patients\n3\n7  # and a comment\n")
    train, val = split_indices(names, 15, 0, holdout_file=str(tmp_path / "s.txt"))
    assert {patient_key(names[i]) for i in val} == {"3", "7"}
    with pytest.raises(InputError, match="no such split file"):
        split_indices(names, 15, 0, holdout_file="nowhere")


@pytest.mark.skipif(not AASCE.is_dir(), reason="AASCE data not available at ../shared")
def test_the_configured_aasce_split_shares_no_patient() -> None:
    names = [s.name for s in read_split(AASCE, "training")]
    assert len({patient_key(n) for n in names}) == 237
    for split in ({"holdout": 0.2}, {"holdout_file": "aasce-holdout"}):
        train, val = split_indices(names, 15, 0, 0, **split)
        assert 85 <= len(val) <= 105
        assert not {patient_key(names[i]) for i in train} & {patient_key(names[i]) for i in val}
    assert len(val) == 94 and len({patient_key(names[i]) for i in val}) == 46
    for fold in (0, 7, 14):
        train, val = split_indices(names, 15, fold, 0)
        assert not {patient_key(names[i]) for i in train} & {patient_key(names[i]) for i in val}
