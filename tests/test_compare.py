"""The paired comparison of two evaluation folders (benchmarks/compare.py)."""

from __future__ import annotations

import csv
from pathlib import Path

import compare
import pytest

from cobbnet.errors import InputError
from cobbnet.spine import metrics

TRUE = [[20.0, 30.0, 10.0], [40.0, 20.0, 25.0], [10.0, 10.0, 5.0]]


def _evaluation(folder: Path, preds: list[list[float]], wrong: list[int], names=("a.jpg", "b.jpg", "c.jpg")) -> Path:
    folder.mkdir()
    with (folder / "per_image.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["filename", "true_pt", "true_mt", "true_tl", "pred_pt", "pred_mt", "pred_tl", "levels_wrong"])
        for name, t, p, k in zip(names, TRUE, preds, wrong, strict=True):
            w.writerow([name, *t, *p, k])
    return folder


def test_compare_pairs_radiographs_by_name(tmp_path: Path) -> None:
    pa = [[22.0, 30.0, 10.0], [40.0, 28.0, 25.0], [10.0, 10.0, 5.0]]
    pb = [[20.0, 31.0, 10.0], [40.0, 20.0, 25.0], [10.0, 16.0, 5.0]]
    a = _evaluation(tmp_path / "a", pa, [0, 2, 0])
    b = _evaluation(tmp_path / "b", pb, [0, 0, 1])
    r = compare.compare(a, b)
    assert r["radiographs"] == 3
    assert r["smape_b_minus_a"][0] == pytest.approx(metrics.smape(pb, TRUE) - metrics.smape(pa, TRUE))
    assert r["levels_right"] == [2, 2]
    assert r["levels_right_only_in_a"] == ["c.jpg"] and r["levels_right_only_in_b"] == ["b.jpg"]
    assert r["within_5deg_all"] == pytest.approx([2 / 3, 2 / 3])
    assert compare.main([str(a), str(b), "--out", str(tmp_path / "c.json")]) == 0
    assert (tmp_path / "c.json").is_file()


def test_compare_refuses_evaluations_of_different_radiographs(tmp_path: Path, capsys) -> None:
    a = _evaluation(tmp_path / "a", TRUE, [0, 0, 0])
    b = _evaluation(tmp_path / "b", TRUE, [0, 0, 0], names=("a.jpg", "b.jpg", "d.jpg"))
    with pytest.raises(InputError, match="not the radiographs"):
        compare.compare(a, b)
    assert compare.main([str(a), str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "missing" in err and "\n" not in err
