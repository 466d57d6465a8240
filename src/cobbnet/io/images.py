"""Reading radiographs: any supported file -> ``(H, W)`` uint8 grayscale, and sizes from headers.

Two readers, chosen by a small registry: raster files (JPEG, PNG, TIFF, BMP) through Pillow,
DICOM through pydicom. Wide data (16-bit PNG/TIFF, DICOM) is mapped to 8 bits by its display
range: the DICOM window or VOI LUT when the file has one, else the data's own minimum and maximum.

Pixels keep their stored orientation (no EXIF rotation) so that an image read here and the size
read from its header always describe the same pixel grid as the landmarks.

Every failure is an ``InputError`` whose message starts with the file's path.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pydicom
from PIL import Image, UnidentifiedImageError
from pydicom.errors import InvalidDicomError
from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi, apply_windowing
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from cobbnet.errors import InputError

RASTER_SUFFIXES: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp")
DICOM_SUFFIXES: tuple[str, ...] = (".dcm", ".dicom")
IMAGE_SUFFIXES: tuple[str, ...] = RASTER_SUFFIXES + DICOM_SUFFIXES
# ITU-R 601 luma, the weights Pillow's convert("L") uses, so colour DICOM and colour JPEG agree.
LUMA = np.array([0.299, 0.587, 0.114])
# Pillow modes holding more than 8 bits a pixel: windowed to 8 bits rather than truncated.
_WIDE_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I", "F"})
_DICOM_MAGIC_OFFSET, _DICOM_MAGIC = 128, b"DICM"
# (implicit VR, little endian) as pydicom found them -> the uncompressed transfer syntax
_SYNTAX_BY_ENCODING = {(True, True): ImplicitVRLittleEndian, (False, True): ExplicitVRLittleEndian,
                       (False, False): ExplicitVRBigEndian}


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return text or type(error).__name__


def _has_dicom_preamble(path: Path) -> bool:
    """True when the file carries the DICOM Part 10 marker 'DICM' after its 128-byte preamble."""
    try:
        with open(path, "rb") as f:
            head = f.read(_DICOM_MAGIC_OFFSET + len(_DICOM_MAGIC))
    except OSError:
        return False
    return head[_DICOM_MAGIC_OFFSET:] == _DICOM_MAGIC


def _looks_extensionless(path: Path) -> bool:
    """No suffix, or a numeric one as in DICOM files named by their UID (``1.2.840.113``)."""
    return path.suffix == "" or path.suffix[1:].isdigit()


def image_kind(path: str | os.PathLike) -> str:
    """``'raster'`` or ``'dicom'`` for an existing file, by suffix or DICOM marker.

    Raises InputError for a missing path, a folder, or an unsupported type.
    """
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{path}: is a folder, not an image file")
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if suffix in RASTER_SUFFIXES:
        return "raster"
    if suffix in DICOM_SUFFIXES or _has_dicom_preamble(path):
        return "dicom"
    raise InputError(
        f"{path}: unsupported image type {suffix or '(no suffix)'!r}; "
        f"expected one of {', '.join(IMAGE_SUFFIXES)} or a DICOM file"
    )


def to_uint8(values: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Map ``[lo, hi]`` linearly onto ``0..255`` (clipped); a flat range gives zeros."""
    values = np.asarray(values, dtype=np.float64)
    if not hi > lo:
        return np.zeros(values.shape, dtype=np.uint8)
    return np.clip(np.rint((values - lo) * (255.0 / (hi - lo))), 0, 255).astype(np.uint8)


# ---- raster files (Pillow) ----


def _pil_to_gray(im: Image.Image) -> np.ndarray:
    if im.mode in _WIDE_MODES:
        arr = np.asarray(im, dtype=np.float64)
        return to_uint8(arr, arr.min(), arr.max())
    return np.array(im if im.mode == "L" else im.convert("L"), dtype=np.uint8)


def _read_raster(path: Path) -> np.ndarray:
    fmt = "image"
    try:
        # Pillow decodes lazily and reports some damage only as warnings: decode fully here,
        # with its data warnings (UserWarning) as errors, so a damaged file fails now rather
        # than in training. (DecompressionBombWarning is a RuntimeWarning: size, not damage.)
        with warnings.catch_warnings():
            warnings.simplefilter("error", UserWarning)
            with Image.open(path) as im:
                fmt = im.format or fmt
                im.load()
                return _pil_to_gray(im)
    except UnidentifiedImageError:
        raise InputError(f"{path}: cannot decode image (not a recognised image format)") from None
    except (OSError, SyntaxError, ValueError, EOFError, UserWarning, Image.DecompressionBombError) as e:
        raise InputError(f"{path}: cannot decode image (truncated or corrupt {fmt}: {_one_line(e)})") from None


def _raster_size(path: Path) -> tuple[int, int]:
    try:
        with Image.open(path) as im:  # parses the header only
            return int(im.size[0]), int(im.size[1])
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise InputError(f"{path}: cannot read image header ({_one_line(e)})") from None


# ---- DICOM (pydicom) ----


def _dcmread(path: Path, **kwargs) -> pydicom.Dataset:
    try:
        try:
            return pydicom.dcmread(path, **kwargs)
        except InvalidDicomError:
            # older files lack the preamble and file meta; force reads them from the first
            # element, and the encoding pydicom found there stands in for the transfer syntax
            ds = pydicom.dcmread(path, force=True, **kwargs)
    except Exception as e:  # pydicom raises many types for damaged files
        raise InputError(f"{path}: cannot read DICOM file ({_one_line(e)})") from None
    syntax = _SYNTAX_BY_ENCODING.get(tuple(ds.original_encoding))
    if "TransferSyntaxUID" not in ds.file_meta and syntax is not None:
        ds.file_meta.TransferSyntaxUID = syntax
    return ds


def _display_range_voi(values: np.ndarray, ds: pydicom.Dataset) -> tuple[np.ndarray, float, float]:
    """Apply the VOI LUT or window; return the values and the range they display over.

    The range is the transform's whole output range (found by passing it its extreme inputs),
    not the data's, so a window keeps its meaning: its lower edge is black, its upper white.
    """
    if ds.get("VOILUTSequence"):
        desc = ds.VOILUTSequence[0].LUTDescriptor
        entries = apply_voi(np.arange(desc[1], desc[1] + (desc[0] or 2**16)), ds)
        out = apply_voi(np.rint(values).astype(np.int64), ds)  # a LUT is indexed by integers
        return out, float(entries.min()), float(entries.max())
    if "WindowCenter" in ds and "WindowWidth" in ds:
        try:
            ends = apply_windowing(np.array([-np.inf, np.inf]), ds)
            return apply_windowing(values, ds), float(ends.min()), float(ends.max())
        except ValueError:
            pass  # an unusable window (e.g. width 0) says nothing about the pixels: use their range
    return values, float(values.min()), float(values.max())


def _read_dicom(path: Path) -> np.ndarray:
    ds = _dcmread(path)
    if "PixelData" not in ds:
        raise InputError(f"{path}: DICOM file has no pixel data")
    try:
        arr = ds.pixel_array
        if int(ds.get("NumberOfFrames", 1) or 1) > 1:
            arr = arr[0]  # a multi-frame file: the first frame is the radiograph
        photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
        if photometric == "PALETTE COLOR":
            arr = apply_color_lut(arr, ds)
        if arr.ndim == 3:  # (H, W, 3) colour
            top = np.iinfo(arr.dtype).max if arr.dtype.kind in "iu" else float(arr.max())
            return to_uint8(arr @ LUMA, 0.0, top)
        values, lo, hi = _display_range_voi(apply_modality_lut(arr, ds), ds)
    except Exception as e:  # decoders (compressed transfer syntaxes, bad lengths) vary widely
        raise InputError(f"{path}: cannot decode DICOM pixel data ({_one_line(e)})") from None
    img = to_uint8(values, lo, hi)
    # MONOCHROME1 stores bone dark: invert so that every image shows bone bright
    return 255 - img if photometric == "MONOCHROME1" else img


def _dicom_size(path: Path) -> tuple[int, int]:
    ds = _dcmread(path, stop_before_pixels=True, specific_tags=["Rows", "Columns"])
    if "Rows" not in ds or "Columns" not in ds:
        raise InputError(f"{path}: DICOM header has no Rows/Columns")
    return int(ds.Columns), int(ds.Rows)


_READERS: dict[str, Callable[[Path], np.ndarray]] = {"raster": _read_raster, "dicom": _read_dicom}
_SIZERS: dict[str, Callable[[Path], tuple[int, int]]] = {"raster": _raster_size, "dicom": _dicom_size}


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Decode an image file fully to ``(H, W)`` uint8 grayscale, or raise InputError."""
    path = Path(path)
    img = _READERS[image_kind(path)](path)
    if img.ndim != 2 or img.size == 0:
        raise InputError(f"{path}: decoded to an unusable pixel array of shape {img.shape}")
    return img


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """``(width, height)`` from the file header without decoding pixels, or raise InputError."""
    path = Path(path)
    return _SIZERS[image_kind(path)](path)


def _is_image_file(path: Path) -> bool:
    if path.name.startswith("."):  # hidden files, e.g. macOS '._x.jpg' resource forks
        return False
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return True
    return _looks_extensionless(path) and _has_dicom_preamble(path)


def find_images(paths: Sequence[str | os.PathLike]) -> list[Path]:
    """Image files among ``paths``: files as given, folders searched recursively.

    Files named explicitly keep their order; a folder contributes its images sorted by path.
    Duplicates are dropped. A missing path, or a folder without images, raises InputError.
    """
    found: list[Path] = []
    for p in map(Path, paths):
        if p.is_file():
            found.append(p)
        elif p.is_dir():
            inside = sorted(f for f in p.rglob("*") if f.is_file() and _is_image_file(f))
            if not inside:
                raise InputError(f"{p}: no images found (looked for {', '.join(IMAGE_SUFFIXES)} and DICOM files)")
            found.extend(inside)
        else:
            raise InputError(f"{p}: no such file or folder")
    return list(dict.fromkeys(found))
