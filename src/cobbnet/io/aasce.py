"""The AASCE ``boostnet_labeldata`` layout: one split -> a list of ``Sample``.

::

    ROOT/data/<split>/<name>                 the radiographs
    ROOT/labels/<split>/<name>.mat           variable p2, (68, 2) pixel (x, y) points
    ROOT/labels/<split>/filenames.csv        one image name a line, no header: the row order
    ROOT/labels/<split>/landmarks.csv        136 values a row (68 x / width, then 68 y / height)
    ROOT/labels/<split>/angles.csv           3 Cobb angles a row, degrees (optional)

Landmarks come from the ``.mat`` file of an image when it exists, else from its
``landmarks.csv`` row (de-normalised by the image size read from the image header). Layout
conversions live in ``landmarks.py``; this module only finds, parses and validates files.
Every problem is an ``InputError`` naming the file (and the CSV line) at fault.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cobbnet.errors import InputError
from cobbnet.io import matfile
from cobbnet.io.images import _one_line, image_size
from cobbnet.spine import landmarks

FILENAMES_CSV = "filenames.csv"
LANDMARKS_CSV = "landmarks.csv"
ANGLES_CSV = "angles.csv"
MAT_VARIABLE = "p2"
N_ANGLES = 3
LANDMARK_COLUMNS = 2 * landmarks.N_POINTS  # 136
# "sunhl-1th-02-Jan-2017-162 A AP.jpg": the number before the view letter names the patient
# (its letters A, B, C... run on across scan dates: 165 A on 03-Jan, 165 B and C on 04-Jan)
_PATIENT = re.compile(r"-(\d+)\s*[A-Za-z]+\s*AP", re.IGNORECASE)  # also "AP2", "AP (2)"


@dataclass(frozen=True, eq=False)  # eq=False: arrays have no single truth value
class Sample:
    """One labelled radiograph of a split."""

    name: str
    image_path: Path
    landmarks: np.ndarray = field(repr=False)  # (17, 4, 2) float64 pixel (x, y)
    angles: np.ndarray | None = field(repr=False)  # (3,) degrees in the challenge's column order, or None
    width: int
    height: int


def patient_key(name: str) -> str:
    """The patient a radiograph of the AASCE data belongs to: every split groups by this.

    ``"sunhl-1th-02-Jan-2017-162 A AP.jpg"`` and ``"...-162 B AP.jpg"`` both give ``"162"``.
    A name without that pattern (the 17 ``...-coronalN.jpg`` files) is its own patient: the
    name without its extension. By number alone, the 481 training radiographs come from 237
    patients (the 248 sometimes quoted counts date and number, which splits patients such as
    165 whose views were taken on two days).
    """
    m = _PATIENT.search(name)
    return m.group(1) if m else Path(name).stem


def read_labels_mat(path: str | os.PathLike) -> np.ndarray:
    """The ``p2`` points of one ``.mat`` file as ``(17, 4, 2)`` float64 pixels."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such label file")
    try:
        content = matfile.read_mat(path)
        found = [] if MAT_VARIABLE in content else sorted(matfile.variable_names(path))
    except (ValueError, OSError) as e:
        raise InputError(f"{path}: cannot read MATLAB file ({_one_line(e)})") from None
    if MAT_VARIABLE in found:  # there, but of a class read_mat skips (char, cell, complex...)
        raise InputError(f"{path}: {MAT_VARIABLE} is not a numeric matrix")
    if MAT_VARIABLE not in content:
        raise InputError(f"{path}: no variable {MAT_VARIABLE!r} (variables: {', '.join(found) or 'none'})")
    p2 = content[MAT_VARIABLE]
    if not (isinstance(p2, np.ndarray) and p2.dtype.kind in "iuf"):
        raise InputError(f"{path}: {MAT_VARIABLE} is not a numeric matrix")
    return landmarks.from_p2(p2, source=f"{path}: {MAT_VARIABLE}")


def _read_names(path: Path) -> list[str]:
    """Image names of ``filenames.csv``, exactly as written (names hold spaces and mixed case)."""
    if not path.is_file():
        raise InputError(f"{path}: missing (it lists the split's images)")
    first_line: dict[str, int] = {}
    for lineno, line in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), 1):
        if not line.strip():
            continue
        if line in first_line:
            raise InputError(f"{path}: line {lineno}: image name {line!r} repeats line {first_line[line]}")
        first_line[line] = lineno
    if not first_line:
        raise InputError(f"{path}: empty split (no image names)")
    return list(first_line)


def _read_table(path: Path, columns: int, rows: int) -> np.ndarray:
    """A headerless numeric CSV of exactly ``rows`` x ``columns`` finite values.

    Blank lines are skipped; errors name the file and its 1-based line number.
    """
    table = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), 1):
        if not line.strip():
            continue
        cells = line.split(",")
        if len(cells) != columns:
            raise InputError(f"{path}: line {lineno}: expected {columns} values, got {len(cells)}")
        values = []
        for cell in cells:
            try:
                values.append(float(cell))
            except ValueError:
                raise InputError(f"{path}: line {lineno}: not a number: {cell.strip()!r}") from None
        if not np.all(np.isfinite(values)):
            raise InputError(f"{path}: line {lineno}: NaN or infinite value")
        table.append(values)
    if len(table) != rows:
        raise InputError(f"{path}: {len(table)} rows, but {FILENAMES_CSV} lists {rows} images")
    return np.asarray(table, dtype=np.float64).reshape(rows, columns)


def _split_dirs(root: str | os.PathLike, split: str) -> tuple[Path, Path]:
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"{root}: no such dataset folder")
    data_dir, label_dir = root / "data" / split, root / "labels" / split
    for folder in (data_dir, label_dir):
        if not folder.is_dir():
            have = sorted(p.name for p in (root / "labels").glob("*") if p.is_dir())
            raise InputError(f"{folder}: no such split folder (splits found: {', '.join(have) or 'none'})")
    return data_dir, label_dir


def read_split(root: str | os.PathLike, split: str = "training") -> list[Sample]:
    """All samples of ``split`` in ``filenames.csv`` order; raise InputError on any fault."""
    data_dir, label_dir = _split_dirs(root, split)
    names = _read_names(label_dir / FILENAMES_CSV)
    n = len(names)
    csv_path, angles_path = label_dir / LANDMARKS_CSV, label_dir / ANGLES_CSV
    csv_rows = _read_table(csv_path, LANDMARK_COLUMNS, n) if csv_path.is_file() else None
    angles = _read_table(angles_path, N_ANGLES, n) if angles_path.is_file() else None

    samples = []
    for i, name in enumerate(names):
        image_path = data_dir / name
        if not image_path.is_file():
            raise InputError(f"{image_path}: image listed in {FILENAMES_CSV} is missing")
        width, height = image_size(image_path)
        mat_path = label_dir / f"{name}.mat"
        if mat_path.is_file():
            lm = read_labels_mat(mat_path)
        elif csv_rows is not None:
            lm = landmarks.from_csv_row(csv_rows[i], width, height, source=f"{csv_path}: row {i + 1}")
        else:
            raise InputError(f"{mat_path}: no labels for this image (and no {LANDMARKS_CSV})")
        samples.append(Sample(name, image_path, lm, None if angles is None else angles[i], width, height))
    return samples
