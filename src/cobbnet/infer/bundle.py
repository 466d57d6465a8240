"""What ships inside the package: the two-stage model and a synthetic example radiograph.

    weights/bundle.json                    names, input size, files and their sha256, validation figures
    weights/stage1.onnx, stage2.onnx       the two stages as the light install runs them (ONNX Runtime)
    weights/stage1.safetensors + .json     the same weights in fp16 for fine-tuning (training extra)
    weights/stage2.safetensors + .json
    weights/MODEL_CARD.md                  data and licence, training, results, intended use
    examples/synthetic-spine.jpg + .json   a generated radiograph, its true corners and angles

The AASCE radiographs may not be redistributed, so the example is made by
:func:`cobbnet.io.synthetic.synth_sample` from a seed no training set uses. No torch here:
``python -m cobbnet.training.ship`` writes the model files.

    python -m cobbnet.infer.bundle example                      # rewrite the example
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from cobbnet.errors import InputError
from cobbnet.io.outputs import write_bytes, write_json
from cobbnet.spine.cobb import ANGLE_COLUMNS, cobb_angles
from cobbnet.spine.landmarks import LEVELS

BUNDLE = "bundle.json"  # inside cobbnet/weights/
BUNDLE_FORMAT = "cobbnet-bundle"
CARD = "MODEL_CARD.md"
MAX_MODEL_BYTES = 25 * 2**20  # both stages, every file
EXAMPLE = "synthetic-spine"  # inside cobbnet/examples/: .jpg and .json
EXAMPLE_SEED, EXAMPLE_INDEX = 2026, 1  # an S curve; training uses seeds 0 and 10000 (data.synthetic_seed)
EXAMPLE_JPEG_QUALITY = 92


def _package_dir(name: str) -> Path:
    return Path(str(resources.files("cobbnet") / name))


def weights_dir() -> Path:
    return _package_dir("weights")


def sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class Bundle:
    """The bundled model as ``bundle.json`` describes it; paths inside ``folder``."""

    folder: Path
    meta: dict[str, Any]

    def _file(self, stage: str, kind: str) -> Path:
        return self.folder / self.meta[stage][kind]

    @property
    def name(self) -> str:
        return str(self.meta["name"])

    @property
    def input_size(self) -> tuple[int, int]:
        H, W = self.meta["input_size"]
        return int(H), int(W)

    @property
    def stage1_onnx(self) -> Path:
        return self._file("stage1", "onnx")

    @property
    def stage2_onnx(self) -> Path:
        return self._file("stage2", "onnx")

    @property
    def stage1_weights(self) -> Path:
        return self._file("stage1", "weights")

    @property
    def stage2_weights(self) -> Path:
        return self._file("stage2", "weights")

    def describe(self, engine: str) -> dict[str, Any]:
        """The ``model`` block of a result: name, the sha256 of ``bundle.json`` (which lists
        every file's sha256) and the engine."""
        return {"name": self.name, "sha256": sha256(self.folder / BUNDLE), "engine": engine}


def read_bundle(folder: str | os.PathLike | None = None) -> Bundle:
    """The bundled model (InputError when this installation has none or it is damaged)."""
    folder = Path(folder) if folder else weights_dir()
    path = folder / BUNDLE
    if not path.is_file():
        raise InputError(f"{path}: no bundled model in this installation; pass --checkpoint")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise InputError(f"{path}: not a readable bundle description ({err})") from None
    if not isinstance(meta, dict) or meta.get("format") != BUNDLE_FORMAT:
        raise InputError(f"{path}: not a cobbnet bundle (format field missing or wrong)")
    return Bundle(folder, meta)


def bundled_checkpoint() -> Path:
    """Stage 1's fine-tuning weights (``stage1.safetensors``; its config beside it)."""
    path = read_bundle().stage1_weights
    if not path.is_file():
        raise InputError(f"{path}: the bundled stage-1 weights are missing from this installation")
    return path


def example_path() -> Path:
    """The bundled synthetic radiograph (JPEG)."""
    return _package_dir("examples") / f"{EXAMPLE}.jpg"


def example_truth() -> dict[str, Any]:
    """The example's true corners ``landmarks`` (17, 4, 2) and Cobb ``angles`` (3,), as arrays."""
    data = json.loads(example_path().with_suffix(".json").read_text(encoding="utf-8"))
    data["landmarks"] = np.asarray(data["landmarks"], dtype=np.float64)
    data["angles"] = np.asarray(data["angles"], dtype=np.float64)
    return data


def write_example(folder: str | os.PathLike | None = None) -> Path:
    """Generate the example radiograph and its truth into ``folder`` (default: the package's)."""
    from cobbnet.io.synthetic import synth_sample

    folder = Path(folder) if folder else example_path().parent
    _, image, lm = synth_sample(EXAMPLE_INDEX, EXAMPLE_SEED)
    ok, jpeg = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, EXAMPLE_JPEG_QUALITY])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    result = cobb_angles(lm, image.shape[0])
    truth = {
        "source": f"cobbnet.io.synthetic.synth_sample(index={EXAMPLE_INDEX}, seed={EXAMPLE_SEED})",
        "height": int(image.shape[0]), "width": int(image.shape[1]),
        "levels": list(LEVELS), "landmarks": np.round(lm, 3),
        "angle_columns": list(ANGLE_COLUMNS), "angles": np.round(result.angles, 3),
        "shape": result.shape,
    }
    path = folder / f"{EXAMPLE}.jpg"
    write_bytes(path, jpeg.tobytes())
    write_json(path.with_suffix(".json"), truth)
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m cobbnet.infer.bundle", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    ex = sub.add_parser("example", help="rewrite the bundled synthetic radiograph")
    ex.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    print(write_example(args.out))


if __name__ == "__main__":
    main()
