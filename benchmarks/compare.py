"""Two evaluations of the same radiographs, paired: is B better than A, or only different?

    python benchmarks/compare.py EVAL_A EVAL_B [--out FILE.json]

``EVAL_A`` and ``EVAL_B`` are folders ``cobbnet evaluate`` wrote (``per_image.csv``,
``metrics.json``), on the same split. Prints SMAPE(B) - SMAPE(A) with a paired bootstrap 95%
interval over the radiographs both read (``metrics.smape_difference``: negative means B is
better), the radiographs whose 17 level names are all right in each and how many each names
right that the other does not, and the share with all three angles within 5 degrees.
A single split of 94 radiographs moves by a point of SMAPE between runs of one recipe: a
difference whose interval holds zero is not shown to be one.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import numpy as np

from cobbnet.errors import InputError
from cobbnet.io.outputs import write_json
from cobbnet.spine.cobb import ANGLE_COLUMNS
from cobbnet.spine.metrics import DEFAULT_TOLERANCE_DEG, smape_difference


def read(folder: Path) -> dict[str, dict[str, float]]:
    """``filename -> {column: value}`` of an evaluation's ``per_image.csv``, or an InputError."""
    path = folder / "per_image.csv"
    if not path.is_file():
        raise InputError(f"{path}: not found (expected a folder cobbnet evaluate wrote)")
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    need = ["filename", "levels_wrong", *(f"{w}_{c}" for w in ("true", "pred") for c in ANGLE_COLUMNS)]
    missing = [c for c in need if rows and c not in rows[0]]
    if not rows or missing:
        raise InputError(f"{path}: {'no rows' if not rows else 'lacks ' + ', '.join(missing)}")
    return {r["filename"]: {k: _number(v) for k, v in r.items() if k != "filename"} for r in rows}


def _number(value: str) -> float:
    try:
        return float(value)
    except ValueError:
        return float("nan")


def compare(a: Path, b: Path) -> dict:
    """The paired comparison of evaluation B against evaluation A (see the module's docstring)."""
    rows_a, rows_b = read(a), read(b)
    names = sorted(set(rows_a) & set(rows_b))
    if set(rows_a) != set(rows_b):
        raise InputError(f"{b / 'per_image.csv'}: not the radiographs of {a / 'per_image.csv'} "
                         f"({len(set(rows_a) ^ set(rows_b))} differ): compare evaluations of one split")
    cols = lambda rows, w: np.array([[rows[n][f"{w}_{c}"] for c in ANGLE_COLUMNS] for n in names])  # noqa: E731
    true = cols(rows_a, "true")
    if not np.allclose(true, cols(rows_b, "true"), atol=1e-3, equal_nan=True):
        raise InputError(f"{b / 'per_image.csv'}: its true angles differ from {a / 'per_image.csv'}'s")
    pred_a, pred_b = cols(rows_a, "pred"), cols(rows_b, "pred")
    d, lo, hi = smape_difference(pred_a, pred_b, true)
    right_a = np.array([rows_a[n]["levels_wrong"] == 0 for n in names])
    right_b = np.array([rows_b[n]["levels_wrong"] == 0 for n in names])
    within = lambda p: float((np.abs(p - true) <= DEFAULT_TOLERANCE_DEG).all(axis=1).mean())  # noqa: E731
    return {"a": str(a), "b": str(b), "radiographs": len(names),
            "smape_b_minus_a": [d, lo, hi],
            "levels_right": [int(right_a.sum()), int(right_b.sum())],
            "levels_right_only_in_a": [n for n, x, y in zip(names, right_a, right_b, strict=True) if x and not y],
            "levels_right_only_in_b": [n for n, x, y in zip(names, right_a, right_b, strict=True) if y and not x],
            "within_5deg_all": [within(pred_a), within(pred_b)]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("a", type=Path, help="the reference evaluation folder")
    p.add_argument("b", type=Path, help="the evaluation folder compared with it")
    p.add_argument("--out", type=Path, default=None, help="also write the comparison as JSON")
    args = p.parse_args(argv)
    try:
        r = compare(args.a, args.b)
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    d, lo, hi = r["smape_b_minus_a"]
    print(f"{r['radiographs']} radiographs; SMAPE B - A {d:+.2f} ({lo:+.2f} to {hi:+.2f}), paired 95%")
    print(f"all 17 levels right: A {r['levels_right'][0]}, B {r['levels_right'][1]} "
          f"(only A {len(r['levels_right_only_in_a'])}, only B {len(r['levels_right_only_in_b'])})")
    print(f"all three angles within 5 deg: A {r['within_5deg_all'][0]:.3f}, B {r['within_5deg_all'][1]:.3f}")
    if args.out:
        write_json(args.out, r)
    return 0


if __name__ == "__main__":
    sys.exit(main())
