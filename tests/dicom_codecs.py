"""Compressed DICOM files made by the tests themselves, one per transfer syntax.

Each file holds the same 12-bit (or 8-bit) grayscale pixels in another encoding, made by an
encoder independent of the decoder that cobbnet relies on (GDCM), where one exists:

- RLE Lossless: pydicom's own RLE encoder;
- JPEG-LS lossless and near-lossless: pydicom's encoder through pyjpegls (CharLS);
- JPEG 2000 lossless and lossy: Pillow's OpenJPEG codestream encoder, encapsulated here;
- JPEG baseline (process 1): Pillow's libjpeg-turbo encoder (8-bit), encapsulated here;
- JPEG Lossless, process 14 (selection values 1 and 7): ``lossless_jpeg`` below, a minimal
  hand-written encoder (ITU-T T.81 annex H), since neither pydicom nor Pillow encodes it.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image
from pydicom import uid
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate

CATEGORY_BITS = 5  # every difference category 0..16 gets a 5-bit Huffman code: 17 codes < 2**5 - 1


def _predict(rec: np.ndarray, y: int, x: int, selection: int, precision: int) -> int:
    """The predictor of sample (y, x) from reconstructed neighbours (T.81 table H.1)."""
    if y == 0 and x == 0:
        return 1 << (precision - 1)
    if y == 0:
        return int(rec[y, x - 1])
    if x == 0:
        return int(rec[y - 1, x])
    ra, rb, rc = int(rec[y, x - 1]), int(rec[y - 1, x]), int(rec[y - 1, x - 1])
    return {1: ra, 2: rb, 3: rc, 4: ra + rb - rc, 5: ra + ((rb - rc) >> 1),
            6: rb + ((ra - rc) >> 1), 7: (ra + rb) >> 1}[selection]


class _Bits:
    def __init__(self) -> None:
        self.out, self.acc, self.n = bytearray(), 0, 0

    def put(self, value: int, n: int) -> None:
        for k in range(n - 1, -1, -1):
            self.acc = (self.acc << 1) | ((value >> k) & 1)
            self.n += 1
            if self.n == 8:
                self.out.append(self.acc)
                if self.acc == 0xFF:
                    self.out.append(0x00)  # byte stuffing
                self.acc, self.n = 0, 0

    def flush(self) -> bytes:
        if self.n:
            self.put((1 << (8 - self.n)) - 1, 8 - self.n)  # pad with ones
        return bytes(self.out)


def _segment(marker: int, body: bytes) -> bytes:
    return bytes([0xFF, marker]) + (len(body) + 2).to_bytes(2, "big") + body


def lossless_jpeg(pixels: np.ndarray, precision: int, selection: int = 1) -> bytes:
    """``(H, W)`` unsigned samples below ``2**precision`` -> a JPEG Lossless (SOF3) stream."""
    H, W = pixels.shape
    counts = [0] * 16
    counts[CATEGORY_BITS - 1] = 17
    dht = _segment(0xC4, bytes([0x00, *counts, *range(17)]))
    sof = _segment(0xC3, bytes([precision]) + H.to_bytes(2, "big") + W.to_bytes(2, "big") + bytes([1, 1, 0x11, 0]))
    sos = _segment(0xDA, bytes([1, 1, 0x00, selection, 0, 0]))
    bits = _Bits()
    for y in range(H):
        for x in range(W):
            d = (int(pixels[y, x]) - _predict(pixels, y, x, selection, precision)) % 65536
            d = d - 65536 if d > 32768 else d
            ssss = 16 if d == 32768 else abs(d).bit_length()
            bits.put(ssss, CATEGORY_BITS)
            if 0 < ssss < 16:
                bits.put(d if d > 0 else d + (1 << ssss) - 1, ssss)
    return b"\xff\xd8" + dht + sof + sos + bits.flush() + b"\xff\xd9"


def _pillow(pixels: np.ndarray, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, fmt, **kwargs)
    return buf.getvalue()


def _dataset(pixels: np.ndarray, bits_stored: int) -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = uid.SecondaryCaptureImageStorage
    ds.SOPInstanceUID = uid.generate_uid()
    ds.Modality = "DX"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 8 if bits_stored <= 8 else 16
    ds.BitsStored, ds.HighBit = bits_stored, bits_stored - 1
    ds.PixelRepresentation = 0
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = uid.ExplicitVRLittleEndian
    return ds


def _encapsulated(ds: Dataset, frame: bytes, syntax: uid.UID) -> Dataset:
    ds.file_meta.TransferSyntaxUID = syntax
    ds.PixelData = encapsulate([frame])
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    return ds


# name -> (transfer syntax, bits stored, lossless)
SYNTAXES: dict[str, tuple[uid.UID, int, bool]] = {
    "rle": (uid.RLELossless, 12, True),
    "jpeg-baseline": (uid.JPEGBaseline8Bit, 8, False),
    "jpeg-lossless-sv1": (uid.JPEGLosslessSV1, 12, True),
    "jpeg-lossless-process14": (uid.JPEGLossless, 12, True),
    "jpeg-ls-lossless": (uid.JPEGLSLossless, 12, True),
    "jpeg-ls-near-lossless": (uid.JPEGLSNearLossless, 12, False),
    "jpeg-2000-lossless": (uid.JPEG2000Lossless, 16, True),
    "jpeg-2000": (uid.JPEG2000, 16, False),
}


def write_compressed(path: Path, pixels: np.ndarray, name: str) -> Path:
    """Write ``pixels`` ``(H, W)`` (below ``2**bits_stored`` of ``SYNTAXES[name]``) as a DICOM
    file in that transfer syntax."""
    syntax, bits, _ = SYNTAXES[name]
    pixels = np.ascontiguousarray(pixels, dtype=np.uint8 if bits <= 8 else np.uint16)
    ds = _dataset(pixels, bits)
    if name == "rle":
        ds.PixelData = pixels.tobytes()
        ds.compress(syntax, encoding_plugin="pydicom")
    elif name.startswith("jpeg-ls"):
        ds.PixelData = pixels.tobytes()
        ds.compress(syntax, encoding_plugin="pyjpegls", **({"jls_error": 2} if "near" in name else {}))
    elif name.startswith("jpeg-2000"):
        lossy = {"irreversible": True, "quality_mode": "rates", "quality_layers": [4]}
        _encapsulated(ds, _pillow(pixels, "JPEG2000", no_jp2=True,
                                  **({"irreversible": False} if name.endswith("lossless") else lossy)), syntax)
    elif name == "jpeg-baseline":
        _encapsulated(ds, _pillow(pixels, "JPEG", quality=95), syntax)
    else:
        _encapsulated(ds, lossless_jpeg(pixels, bits, 1 if name.endswith("sv1") else 7), syntax)
    ds.save_as(path, enforce_file_format=True)
    return path
