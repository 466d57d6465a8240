"""Shared fixtures: the AASCE data when present, tiny spines, tiny datasets, DICOM files."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch
from PIL import Image
from spines import AASCE

from cobbnet.spine import landmarks


@pytest.fixture(autouse=True, scope="session")
def _onnx_cache(tmp_path_factory):
    """Exported ONNX graphs go to a temporary folder, never the user's cache."""
    mp = pytest.MonkeyPatch()
    mp.setenv("COBBNET_CACHE", str(tmp_path_factory.mktemp("onnx-cache")))
    yield
    mp.undo()


@pytest.fixture
def one_thread():
    """One intra-op thread: on shared cores a second one mostly spins waiting for the first."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def aasce_root() -> Path:
    """Root of the AASCE ``boostnet_labeldata`` folder; skips the test when it is absent."""
    if not (AASCE / "labels" / "training").is_dir():
        pytest.skip(f"AASCE data not found at {AASCE}")
    return AASCE


def spine(width: float, height: float, bend: float = 0.0) -> np.ndarray:
    """A well-formed ``(17, 4, 2)`` spine: vertebrae evenly spaced down the image.

    ``bend`` (pixels) shifts the centres sideways along half a sine wave; each vertebra is
    tilted to follow the curve, so the Cobb angle grows with ``bend``.
    """
    t = np.linspace(0.08, 0.92, landmarks.N_VERTEBRAE)
    cy = t * height
    cx = width / 2 + bend * np.sin(np.pi * t)
    slope = bend * np.pi * np.cos(np.pi * t) / height  # dx/dy of the centre line
    theta = np.arctan(slope)  # (17,) tilt of each vertebra
    half_w, half_h = 0.15 * width, 0.3 * (cy[1] - cy[0])
    corners = np.array([[-half_w, -half_h], [half_w, -half_h], [-half_w, half_h], [half_w, half_h]])
    cos, sin = np.cos(theta)[:, None], np.sin(theta)[:, None]  # (17, 1)
    x = cx[:, None] + corners[:, 0] * cos - corners[:, 1] * sin  # (17, 4)
    y = cy[:, None] + corners[:, 0] * sin + corners[:, 1] * cos
    return np.stack([x, y], axis=-1)


@pytest.fixture
def make_spine() -> Callable[..., np.ndarray]:
    """``make_spine(width, height, bend=0.0) -> (17, 4, 2)``; see ``spine``."""
    return spine


def write_dataset(
    root: Path,
    spines: Sequence[np.ndarray],
    sizes: Sequence[tuple[int, int]],
    names: Sequence[str] | None = None,
    angles: np.ndarray | None = None,
    split: str = "training",
    mat: bool = True,
    csv: bool = True,
) -> Path:
    """Write a tiny AASCE-layout dataset under ``root`` and return ``root``.

    One flat grey JPEG of ``sizes[i]`` = (width, height) per spine; ``.mat`` files (p2 as
    float64, so faulty spines may hold negative or fractional points) when ``mat``;
    ``landmarks.csv`` when ``csv``; ``angles.csv`` when ``angles`` ``(N, 3)`` is given.
    """
    names = list(names) if names is not None else [f"case {i:02d} AP.jpg" for i in range(len(spines))]
    data_dir, label_dir = root / "data" / split, root / "labels" / split
    data_dir.mkdir(parents=True, exist_ok=True)
    label_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for name, lm, (w, h) in zip(names, spines, sizes, strict=True):
        Image.fromarray(np.full((h, w), 90, dtype=np.uint8)).save(data_dir / name, format="JPEG")
        if mat:
            scipy.io.savemat(label_dir / f"{name}.mat", {"p2": landmarks.to_p2(lm)})
        rows.append(",".join(f"{v:.10g}" for v in landmarks.to_csv_row(lm, w, h)))
    (label_dir / "filenames.csv").write_text("".join(f"{n}\r\n" for n in names))  # CRLF, as AASCE
    if csv:
        (label_dir / "landmarks.csv").write_text("\n".join(rows) + "\n")
    if angles is not None:
        (label_dir / "angles.csv").write_text("".join(",".join(f"{a:.6g}" for a in r) + "\n" for r in angles))
    return root


@pytest.fixture
def tmp_dataset(tmp_path: Path) -> Callable[..., Path]:
    """``tmp_dataset(spines, sizes, names=None, angles=None, split=..., mat=True, csv=True)``.

    Writes under a fresh temporary folder; see ``write_dataset``.
    """
    def make(spines, sizes, **kwargs) -> Path:
        return write_dataset(tmp_path / "dataset", spines, sizes, **kwargs)

    return make


def write_dicom(
    path: Path,
    pixels: np.ndarray,
    photometric: str = "MONOCHROME2",
    bits_stored: int = 16,
    rescale: tuple[float, float] | None = None,
    window: tuple[float, float] | None = None,
    voi_lut: np.ndarray | None = None,
    preamble: bool = True,
) -> Path:
    """Write ``pixels`` ``(H, W)`` uint16 as an uncompressed DICOM file.

    ``rescale`` = (slope, intercept); ``window`` = (center, width); ``voi_lut`` the uint16 entries
    of a VOI LUT indexed from stored value 0; ``preamble=False`` writes a
    bare data set without the 128-byte preamble and file meta, as older systems did.
    """
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    ds = Dataset()
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.Modality = "DX"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, bits_stored, bits_stored - 1
    ds.PixelRepresentation = 0
    if rescale is not None:
        ds.RescaleSlope, ds.RescaleIntercept = rescale
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = window
    if voi_lut is not None:
        item = Dataset()
        item.LUTDescriptor = [len(voi_lut), 0, 16]
        item.add_new(0x00283006, "OW", np.asarray(voi_lut, dtype="<u2").tobytes())  # LUT Data
        ds.VOILUTSequence = [item]
    ds.PixelData = np.ascontiguousarray(pixels, dtype="<u2").tobytes()
    if preamble:
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.save_as(path, enforce_file_format=True)
    else:
        ds.save_as(path, implicit_vr=True, little_endian=True)
    return path


@pytest.fixture
def dicom_writer() -> Callable[..., Path]:
    """``dicom_writer(path, pixels, photometric=..., rescale=..., window=..., voi_lut=..., preamble=True)``."""
    return write_dicom
