"""Reading radiographs: any supported file -> ``(H, W)`` uint8 grayscale, and sizes from headers.

Two readers, chosen by a small registry: raster files (JPEG, PNG, TIFF, BMP) through Pillow,
DICOM through pydicom. Wide data (16-bit PNG/TIFF, DICOM) is mapped to 8 bits by its display
range: the DICOM window or VOI LUT when the file has one, else the data's own minimum and maximum.
Every array, whether decoded from a file or handed to the Python API, becomes grayscale in one
place, :func:`to_gray_uint8`.

Raster files are shown as every viewer shows them: an EXIF orientation tag is applied when the
pixels are read, and :func:`image_size` reports the size after it, so that an image read here
and the size read from its header always describe the same pixel grid as the landmarks.
Compressed DICOM (RLE, JPEG baseline and extended, JPEG Lossless, JPEG-LS, JPEG 2000) is
decoded by pydicom's pixel-data plugins: its own RLE decoder, GDCM (``python-gdcm``) and Pillow.
A multi-frame DICOM file gives its first frame, with a warning
(:func:`read_image_with_warnings`).

Every failure is an ``InputError`` whose message starts with the file's path.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pydicom
from PIL import Image, ImageOps, UnidentifiedImageError
from pydicom.errors import InvalidDicomError
from pydicom.pixels import (
    apply_color_lut,
    apply_modality_lut,
    apply_voi,
    apply_windowing,
    get_decoder,
)
from pydicom.uid import UID, ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from cobbnet.errors import InputError

RASTER_SUFFIXES: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp")
DICOM_SUFFIXES: tuple[str, ...] = (".dcm", ".dicom")
IMAGE_SUFFIXES: tuple[str, ...] = RASTER_SUFFIXES + DICOM_SUFFIXES
# ITU-R 601 luma, the weights Pillow's convert("L") uses, so colour DICOM and colour JPEG agree.
LUMA = np.array([0.299, 0.587, 0.114])
# Pillow modes whose pixels numpy reads as they are; every other mode is converted to RGB(A)
# first (palette, CMYK, YCbCr, 1-bit) so that ``to_gray_uint8`` sees plain channels.
_ARRAY_MODES = frozenset({"1", "L", "LA", "RGB", "RGBA", "I;16", "I;16L", "I;16B", "I;16N", "I", "F"})
# EXIF orientations 5-8 turn the stored picture by a quarter turn: width and height swap.
_EXIF_ORIENTATION, _QUARTER_TURNS = 0x0112, frozenset({5, 6, 7, 8})
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


def _channels_last(arr: np.ndarray, source: str) -> np.ndarray:
    """``(H, W)``, ``(H, W, 1|2)`` (gray, gray + alpha), ``(H, W, 3)`` or ``(H, W, 4)`` ->
    ``(H, W)`` or ``(H, W, 3)``; alpha is dropped (transparency carries no anatomy)."""
    if arr.ndim == 2:
        return arr
    if arr.ndim == 3 and arr.shape[2] in (1, 2, 3, 4):
        return arr[..., 0] if arr.shape[2] <= 2 else arr[..., :3]
    if arr.ndim == 3 and arr.shape[0] in (1, 3, 4):
        raise InputError(f"{source}: image array of shape {arr.shape} looks channels-first; "
                         "expected (H, W), (H, W, 3) or (H, W, 4): use array.transpose(1, 2, 0)")
    raise InputError(f"{source}: image array of shape {arr.shape}; expected (H, W), (H, W, 3) or (H, W, 4)")


def to_gray_uint8(array: np.ndarray, source: str = "array") -> np.ndarray:
    """Any image array -> ``(H, W)`` uint8 grayscale: the one conversion every path uses.

    Shapes: ``(H, W)``, ``(H, W, 1)``, ``(H, W, 3)`` RGB and ``(H, W, 4)`` RGBA (alpha dropped);
    colour becomes gray by ITU-R 601 luma (``LUMA``). Values, by dtype: uint8 as it is; bool
    as 0 / 255; other integers (16-bit and wider) windowed from their minimum to their maximum,
    as a 16-bit PNG is; floats in [0, 1] scaled by 255, floats in [0, 255] as they are, other
    float ranges windowed like wide integers. Empty, channels-first ``(3, H, W)``, non-numeric
    or non-finite arrays raise InputError naming ``source``.
    """
    arr = np.asarray(array)
    if arr.size == 0:
        raise InputError(f"{source}: empty image array of shape {arr.shape}")
    if arr.dtype.kind not in "biuf":
        raise InputError(f"{source}: image array of dtype {arr.dtype}; expected integers, floats or bools")
    arr = _channels_last(arr, source)
    if arr.dtype == np.uint8 and arr.ndim == 2:
        return np.ascontiguousarray(arr)
    if arr.dtype.kind == "b":
        arr = arr.astype(np.uint8) * 255
    if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
        raise InputError(f"{source}: image array holds NaN or infinite values")
    values = arr.astype(np.float64)
    if values.ndim == 3:
        values = values @ LUMA
    if arr.dtype == np.uint8:
        return to_uint8(values, 0.0, 255.0)
    lo, hi = float(values.min()), float(values.max())
    if arr.dtype.kind == "f" and lo >= 0.0 and hi <= 1.0:
        return to_uint8(values, 0.0, 1.0)
    if arr.dtype.kind == "f" and lo >= 0.0 and hi <= 255.0:
        return to_uint8(values, 0.0, 255.0)
    return to_uint8(values, lo, hi)


# ---- raster files (Pillow) ----


def _pil_to_gray(im: Image.Image, path: Path) -> np.ndarray:
    if im.mode not in _ARRAY_MODES:
        im = im.convert("RGBA" if "A" in im.getbands() or "transparency" in im.info else "RGB")
    return to_gray_uint8(np.asarray(im), str(path))


def _read_raster(path: Path, warned: list[str]) -> np.ndarray:
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
                if getattr(im, "n_frames", 1) > 1:
                    warned.append(f"{path}: {fmt} file holds {im.n_frames} images; read the first")
                # shown as every viewer shows it: a phone or scanner's rotation tag applied
                return _pil_to_gray(ImageOps.exif_transpose(im), path)
    except UnidentifiedImageError:
        raise InputError(f"{path}: cannot decode image (not a recognised image format)") from None
    except (OSError, SyntaxError, ValueError, EOFError, UserWarning, Image.DecompressionBombError) as e:
        raise InputError(f"{path}: cannot decode image (truncated or corrupt {fmt}: {_one_line(e)})") from None


def _raster_size(path: Path) -> tuple[int, int]:
    try:
        with Image.open(path) as im:  # parses the header only
            width, height = int(im.size[0]), int(im.size[1])
            turned = im.getexif().get(_EXIF_ORIENTATION) in _QUARTER_TURNS
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise InputError(f"{path}: cannot read image header ({_one_line(e)})") from None
    return (height, width) if turned else (width, height)


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


def _transfer_syntax(ds: pydicom.Dataset) -> UID | None:
    uid = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    return UID(str(uid)) if uid else None


def _decoder_missing(ds: pydicom.Dataset) -> str | None:
    """Why no installed plugin decodes this file's transfer syntax, or None when one does."""
    uid = _transfer_syntax(ds)
    if uid is None:
        return None
    try:
        decoder = get_decoder(uid)
    except NotImplementedError:
        return f"transfer syntax {uid.name} ({uid}) is not supported"
    if decoder.is_available:
        return None
    return f"no installed plugin decodes {uid.name} ({uid}); install python-gdcm"


def _frames(ds: pydicom.Dataset) -> int:
    try:
        return max(1, int(ds.get("NumberOfFrames", 1) or 1))
    except (TypeError, ValueError):
        return 1


def _dicom_pixels(path: Path, ds: pydicom.Dataset, warned: list[str]) -> np.ndarray:
    """The first frame's stored pixels: ``(H, W)`` or ``(H, W, 3)``."""
    missing = _decoder_missing(ds)
    if missing:
        raise InputError(f"{path}: cannot decode DICOM pixel data ({missing})")
    frames = _frames(ds)
    if frames > 1:
        # decode the radiograph only, not a whole cine loop or tomosynthesis stack
        warned.append(f"{path}: DICOM file holds {frames} frames; read the first")
        ds.pixel_array_options(index=0)
    return ds.pixel_array


def _read_dicom(path: Path, warned: list[str]) -> np.ndarray:
    ds = _dcmread(path)
    if "PixelData" not in ds:
        raise InputError(f"{path}: DICOM file has no pixel data")
    try:
        arr = _dicom_pixels(path, ds, warned)
        if arr.ndim == 3 and _frames(ds) > 1 and arr.shape[-1] not in (3, 4):
            arr = arr[0]  # a decoder that ignored the frame index
        photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
        if photometric == "PALETTE COLOR":
            arr = apply_color_lut(arr, ds)
        if arr.ndim == 3:  # (H, W, 3) colour: the shared conversion
            return to_gray_uint8(arr, str(path))
        values, lo, hi = _display_range_voi(apply_modality_lut(arr, ds), ds)
    except InputError:
        raise
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


_READERS: dict[str, Callable[[Path, list[str]], np.ndarray]] = {"raster": _read_raster, "dicom": _read_dicom}
_SIZERS: dict[str, Callable[[Path], tuple[int, int]]] = {"raster": _raster_size, "dicom": _dicom_size}


def read_image_with_warnings(path: str | os.PathLike) -> tuple[np.ndarray, list[str]]:
    """Decode an image file fully: ``(H, W)`` uint8 grayscale and the warnings reading it gave
    (one line each, starting with the path; e.g. a multi-frame DICOM read at its first frame).

    Raises InputError for a file that cannot be read.
    """
    path = Path(path)
    warned: list[str] = []
    img = _READERS[image_kind(path)](path, warned)
    if img.ndim != 2 or img.size == 0:
        raise InputError(f"{path}: decoded to an unusable pixel array of shape {img.shape}")
    return img, warned


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Decode an image file fully to ``(H, W)`` uint8 grayscale, or raise InputError."""
    return read_image_with_warnings(path)[0]


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
