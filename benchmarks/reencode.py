"""Do the level names survive re-encoding? How far the 17 level centres move, per radiograph.

A model reads each held-out radiograph as it is and re-encoded.

    python benchmarks/reencode.py [--checkpoint C ...] [--root ../shared/boostnet_labeldata] [--out FILE.json]

Encodings: a 12-bit DICOM without a window (the reader stretches it over its own range, so
its grey levels are the JPEG's scaled and rounded), one grey level added, and the JPEG saved
again at quality 95 (also with one grey level added) and at quality 90. A radiograph "moves a
level" when some level centre moves by more than half a vertebra (the median centre spacing
of its reading). For the bundled model the lossless ones are held to zero moves by the slow
test ``tests/test_bundle.py -k re_encoding``; lossy JPEG changes the pixels themselves, so it
is measured here, not held to zero. ``--checkpoint`` measures training checkpoints instead
(ONNX Runtime, fp32, as ``cobbnet evaluate --precision fp32`` reads them), each in turn.
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np

from cobbnet.infer.evaluate import fold_samples
from cobbnet.infer.predict import Predictor, bundle_info
from cobbnet.io.aasce import read_split
from cobbnet.io.images import read_image
from cobbnet.io.outputs import write_json

ROOT = Path(__file__).resolve().parents[1]
HALF_VERTEBRA = 0.5


def _dicom(pixels: np.ndarray, folder: Path) -> np.ndarray:
    """``pixels`` (H, W) uint8 as a 12-bit DICOM (x16, no window), read back as cobbnet reads it."""
    sys.path.insert(0, str(ROOT / "tests"))
    from conftest import write_dicom  # the tests' DICOM writer (needs the dev extra)

    return read_image(write_dicom(folder / "reencoded.dcm", pixels.astype(np.uint16) * 16, bits_stored=12))


def _jpeg(pixels: np.ndarray, quality: int) -> np.ndarray:
    ok, data = cv2.imencode(".jpg", pixels, [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return cv2.imdecode(data, cv2.IMREAD_GRAYSCALE)


def encodings(pixels: np.ndarray, folder: Path) -> dict[str, np.ndarray]:
    """The re-encodings of one radiograph ``(H, W)`` uint8, by name."""
    brighter = np.minimum(pixels.astype(np.int16) + 1, 255).astype(np.uint8)
    return {"dicom_12bit": _dicom(pixels, folder), "one_grey_level": brighter,
            "jpeg_q95": _jpeg(pixels, 95), "jpeg_q95_one_grey_level": _jpeg(brighter, 95),
            "jpeg_q90": _jpeg(pixels, 90)}


def measure(predictor: Predictor, held_out: list, folder: Path) -> dict[str, dict[str, float]]:
    """``radiograph -> {encoding: largest level-centre move in vertebrae}``."""
    moves: dict[str, dict[str, float]] = {}
    for i, sample in enumerate(held_out):
        pixels = read_image(sample.image_path)  # (H, W) uint8
        variants = encodings(pixels, folder)
        reads = predictor.predict_arrays([pixels, *variants.values()], [None] * (1 + len(variants)))
        centres = [r.landmarks.mean(axis=1) for r in reads]  # (17, 2) each
        step = np.median(np.linalg.norm(np.diff(centres[0], axis=0), axis=1))  # one vertebra, px
        moves[sample.name] = {k: float(np.linalg.norm(c - centres[0], axis=1).max() / step)
                              for k, c in zip(variants, centres[1:], strict=True)}
        print(f"{i + 1}/{len(held_out)} {sample.name}", flush=True)
    return moves


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", type=Path, action="append", default=None,
                   help="a stage-1 training checkpoint instead of the bundled model (repeatable)")
    p.add_argument("--root", type=Path, default=ROOT.parent / "shared" / "boostnet_labeldata")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "reencode.json")
    p.add_argument("--limit", type=int, default=None, help="only the first N held-out radiographs")
    a = p.parse_args(argv)
    held_out = fold_samples(None, read_split(a.root, "training"))[: a.limit]
    models = {}
    with tempfile.TemporaryDirectory() as tmp:
        for ck in a.checkpoint or [None]:
            predictor = Predictor(ck, precision="fp32")
            moves = measure(predictor, held_out, Path(tmp))
            names = list(next(iter(moves.values())))
            summary = {k: {"moved": sorted(n for n, m in moves.items() if m[k] > HALF_VERTEBRA),
                           "largest_vertebrae": max(m[k] for m in moves.values())} for k in names}
            label = bundle_info().name if ck is None else str(ck)
            models[label] = {"encodings": summary, "per_radiograph": moves}
            for k, s in summary.items():
                print(f"{label}, {k}: {len(s['moved'])} of {len(held_out)} move a level {s['moved']}; "
                      f"the largest move {s['largest_vertebrae']:.2f} vertebrae")
    write_json(a.out, {"radiographs": len(held_out), "threshold_vertebrae": HALF_VERTEBRA, "models": models,
                       "cpus": os.cpu_count(), "date": datetime.date.today().isoformat(),
                       "command": " ".join(["python", *sys.argv])})


if __name__ == "__main__":
    main()
