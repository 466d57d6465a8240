"""MATLAB level-5 MAT-files: the subset cobbnet reads and writes, with numpy and zlib only.

The AASCE labels are ``.mat`` files holding one ``(68, 2)`` matrix ``p2``; this module reads
and writes such files so that the light install needs no SciPy. Layout of a level-5 file
(MathWorks, "MAT-File Format"), as far as this module goes:

- A 128-byte header: 116 bytes of descriptive text, an 8-byte subsystem data offset (zeros or
  spaces when there is none), the version ``0x0100`` and the endian indicator: the characters
  ``IM`` for a little-endian file, ``MI`` for a big-endian one. Every number after it is in
  the file's byte order.
- Then data elements, each an 8-byte tag (uint32 type, uint32 byte count) and its data,
  padded to a multiple of 8 bytes. A tag whose upper 16 bits of its first uint32 are not zero
  is a *small* element: type in the low 16 bits, 1-4 data bytes in the tag's second half.
- ``miMATRIX`` (14) is a variable: sub-elements array flags (``miUINT32``: class in the low
  byte, complex 0x08 / global 0x04 / logical 0x02 in the next; nzmax), dimensions
  (``miINT32``), name (``miINT8``), then the real part in column-major order.
- ``miCOMPRESSED`` (15) is a zlib stream holding one or more such elements (not padded).

``read_mat`` returns the real numeric variables (classes double, single, int8-64, uint8-64)
as arrays of their stored shape, at least 2-D, in native byte order. Values keep the element
type they were stored in, as ``scipy.io.loadmat`` does by default: MATLAB saves a double
matrix of small integers as ``miUINT16``, so the AASCE ``p2`` reads as uint16, and a logical
matrix (class uint8, logical flag) reads as uint8. Variables of other classes (char, cell, struct, object, sparse, function, opaque),
complex ones, the subsystem data and top-level elements other than ``miMATRIX`` are skipped;
``variable_names`` lists every variable, skipped ones included. Level-4 and 7.3 (HDF5) files,
and anything malformed or truncated, raise ``ValueError`` with a short reason.

``write_mat`` writes real double, single and integer arrays, uncompressed or compressed, in
the layout ``scipy.io.savemat`` writes (little-endian unless asked otherwise).
"""

from __future__ import annotations

import math
import os
import re
import struct
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cobbnet.io import outputs

__all__ = ["DEFAULT_HEADER", "mat_bytes", "read_mat", "variable_names", "write_mat"]

DEFAULT_HEADER = b"MATLAB 5.0 MAT-file, written by cobbnet"
HEADER_BYTES = 128
TEXT_BYTES = 116
VERSION = 0x0100
_ENDIAN = {b"IM": "<", b"MI": ">"}
# element types
MI_INT8, MI_UINT32, MI_INT32, MI_MATRIX, MI_COMPRESSED = 1, 6, 5, 14, 15
MI_DTYPES = {1: "i1", 2: "u1", 3: "i2", 4: "u2", 5: "i4", 6: "u4", 7: "f4", 9: "f8",
             12: "i8", 13: "u8"}
# array classes: the numeric ones and the element type each is written with
MX_NUMERIC = {6: "f8", 7: "f4", 8: "i1", 9: "u1", 10: "i2", 11: "u2", 12: "i4", 13: "u4",
              14: "i8", 15: "u8"}
MX_OPAQUE = 17  # no dimensions sub-element: the name follows the flags
_MI_OF_DTYPE = {np.dtype(code): mi for mi, code in MI_DTYPES.items()}
_MX_OF_DTYPE = {np.dtype(code): mx for mx, code in MX_NUMERIC.items()}
FLAG_COMPLEX = 0x08
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,62}")  # MATLAB's namelengthmax is 63


@dataclass(frozen=True)
class _Matrix:
    """One ``miMATRIX`` element, parsed up to its name; ``data`` holds the rest."""

    name: str
    mclass: int
    flags: int
    dims: tuple[int, ...]
    data: bytes


# ---- reading ----

def read_mat(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """The real numeric variables of a level-5 MAT-file: ``{name: array}`` (at least 2-D)."""
    data = Path(path).read_bytes()
    order = _byte_order(data)
    out = {}
    for m in _matrices(data, order):
        array = _numeric(m, order)
        if array is not None:
            out[m.name] = array
    return out


def variable_names(path: str | os.PathLike) -> list[str]:
    """Names of all variables in the file, in file order, those ``read_mat`` skips included."""
    data = Path(path).read_bytes()
    return [m.name for m in _matrices(data, _byte_order(data))]


def _byte_order(data: bytes) -> str:
    """``'<'`` or ``'>'`` from a level-5 header; ValueError for anything else."""
    if len(data) < HEADER_BYTES:
        raise ValueError(f"truncated: {len(data)} bytes, shorter than a MAT-file header")
    order = _ENDIAN.get(data[126:128])
    if order is None:
        raise ValueError("not a level-5 MAT-file (no endian indicator)")
    (version,) = struct.unpack_from(order + "H", data, 124)
    if version == 0x0200:
        raise ValueError("MATLAB 7.3 (HDF5) MAT-files are not supported")
    if version != VERSION:
        raise ValueError(f"unknown MAT-file version 0x{version:04x}")
    return order


def _tag(data: bytes, pos: int, order: str) -> tuple[int, int, int, int]:
    """The element at ``pos``: (type, byte count, data start, padded end)."""
    if len(data) - pos < 8:
        raise ValueError(f"truncated at byte {pos}: an element tag needs 8 bytes")
    first, count = struct.unpack_from(order + "II", data, pos)
    if first >> 16:  # small element: the data sits in the tag's second half
        if first >> 16 > 4:
            raise ValueError(f"bad small element at byte {pos}: {first >> 16} bytes")
        return first & 0xFFFF, first >> 16, pos + 4, pos + 8
    start = pos + 8
    if count > len(data) - start:
        raise ValueError(f"truncated at byte {pos}: an element of {count} bytes, "
                         f"{len(data) - start} left")
    return first, count, start, start + count + (-count % 8)


def _matrices(data: bytes, order: str) -> Iterator[_Matrix]:
    """The ``miMATRIX`` elements of a whole file, compressed ones inflated."""
    subsystem = data[TEXT_BYTES:TEXT_BYTES + 8]
    skip = (None if subsystem in (bytes(8), b" " * 8)
            else struct.unpack(order + "Q", subsystem)[0])
    pos = HEADER_BYTES
    while pos < len(data):
        mdtype, count, start, _ = _tag(data, pos, order)
        body = data[start:start + count]
        if pos != skip and count:
            if mdtype == MI_COMPRESSED:
                yield from _inner_matrices(_inflate(body, pos), order)
            elif mdtype == MI_MATRIX:
                yield _matrix(body, order)
        # top-level elements are not padded (compressed ones never are); a small one is 8 bytes
        pos = max(start + count, pos + 8)


def _inflate(body: bytes, pos: int) -> bytes:
    stream = zlib.decompressobj()
    try:
        out = stream.decompress(body)
    except zlib.error as e:
        raise ValueError(f"bad compressed element at byte {pos}: {e}") from None
    if not stream.eof:
        raise ValueError(f"truncated compressed element at byte {pos}")
    return out


def _inner_matrices(data: bytes, order: str) -> Iterator[_Matrix]:
    pos = 0
    while pos < len(data):
        mdtype, count, start, end = _tag(data, pos, order)
        if mdtype == MI_MATRIX and count:
            yield _matrix(data[start:start + count], order)
        pos = end


def _matrix(body: bytes, order: str) -> _Matrix:
    """Parse a ``miMATRIX`` body up to and including its name."""
    mdtype, count, start, pos = _tag(body, 0, order)
    if mdtype != MI_UINT32 or count != 8:
        raise ValueError("bad variable: no array flags")
    flags_class, _ = struct.unpack_from(order + "II", body, start)
    mclass, flags = flags_class & 0xFF, (flags_class >> 8) & 0xFF
    dims: tuple[int, ...] = ()
    if mclass != MX_OPAQUE:
        mdtype, count, start, pos = _tag(body, pos, order)
        if mdtype != MI_INT32 or count % 4:
            raise ValueError("bad variable: no dimensions")
        dims = struct.unpack_from(f"{order}{count // 4}i", body, start)
        if any(d < 0 for d in dims):
            raise ValueError(f"bad variable: dimensions {dims}")
    mdtype, count, start, pos = _tag(body, pos, order)
    if mdtype != MI_INT8:
        raise ValueError("bad variable: no name")
    name = body[start:start + count].decode("latin-1")
    return _Matrix(name, mclass, flags, dims, body[pos:])


def _numeric(m: _Matrix, order: str) -> np.ndarray | None:
    """The array of a real numeric variable, in native byte order; None for other classes."""
    if m.mclass not in MX_NUMERIC or m.flags & FLAG_COMPLEX:
        return None
    mdtype, count, start, _ = _tag(m.data, 0, order)
    if mdtype not in MI_DTYPES:
        raise ValueError(f"variable {m.name!r}: unknown element type {mdtype}")
    stored = np.dtype(MI_DTYPES[mdtype]).newbyteorder(order)
    size = math.prod(m.dims)
    if count != size * stored.itemsize:
        raise ValueError(f"variable {m.name!r}: {count} data bytes for "
                         f"{'x'.join(map(str, m.dims))} values of {stored.name}")
    flat = np.frombuffer(m.data, stored, size, offset=start) if size else np.empty(0, stored)
    return flat.reshape(m.dims, order="F").astype(stored.newbyteorder("="))


# ---- writing ----

def write_mat(path: str | os.PathLike, variables: Mapping[str, np.ndarray], *,
              compress: bool = False, header: bytes | str = DEFAULT_HEADER,
              byteorder: str = "<") -> None:
    """Write ``{name: array}`` as a level-5 MAT-file (atomically: no half-written file)."""
    outputs.write_bytes(path, mat_bytes(variables, compress=compress, header=header,
                                        byteorder=byteorder))


def mat_bytes(variables: Mapping[str, np.ndarray], *, compress: bool = False,
              header: bytes | str = DEFAULT_HEADER, byteorder: str = "<") -> bytes:
    """The bytes of a level-5 MAT-file holding ``variables``.

    Arrays must be real double, single or integer; 0-D ones become 1x1 and 1-D ones rows
    ``(1, n)``, as ``scipy.io.savemat`` writes them. ``header`` is the descriptive text (at
    most 116 bytes, padded with spaces); ``byteorder`` is ``'<'`` or ``'>'``. Same input, same
    bytes (no date in the header).
    """
    if byteorder not in ("<", ">"):
        raise ValueError(f"byteorder must be '<' or '>', not {byteorder!r}")
    text = header.encode("ascii") if isinstance(header, str) else bytes(header)
    if len(text) > TEXT_BYTES:
        raise ValueError(f"header text of {len(text)} bytes; at most {TEXT_BYTES}")
    # the indicator is "MI" as a uint16: the bytes read "IM" in a little-endian file
    parts = [text.ljust(TEXT_BYTES), bytes(8), struct.pack(byteorder + "HH", VERSION, 0x4D49)]
    for name, value in variables.items():
        element = _matrix_element(name, np.asarray(value), byteorder)
        if compress:
            packed = zlib.compress(element)
            element = struct.pack(byteorder + "II", MI_COMPRESSED, len(packed)) + packed
        parts.append(element)
    return b"".join(parts)


def _element(mdtype: int, payload: bytes, order: str) -> bytes:
    """One data element: the small format for up to 4 bytes, else tag, data and padding."""
    if len(payload) <= 4 and payload:
        return struct.pack(order + "I", len(payload) << 16 | mdtype) + payload.ljust(4, b"\0")
    return struct.pack(order + "II", mdtype, len(payload)) + payload + bytes(-len(payload) % 8)


def _matrix_element(name: str, array: np.ndarray, order: str) -> bytes:
    if not _NAME.fullmatch(name):
        raise ValueError(f"{name!r} is not a MATLAB variable name")
    native = array.dtype.newbyteorder("=")
    if native not in _MX_OF_DTYPE:
        raise ValueError(f"variable {name!r}: cannot write {array.dtype} (real double, single "
                         "or integer only)")
    if array.ndim < 2:
        array = array.reshape(1, -1) if array.ndim else array.reshape(1, 1)
    flags = struct.pack(order + "II", _MX_OF_DTYPE[native], 0)
    dims = struct.pack(f"{order}{array.ndim}i", *array.shape)
    values = array.astype(native.newbyteorder(order)).tobytes(order="F")
    body = b"".join([_element(MI_UINT32, flags, order), _element(MI_INT32, dims, order),
                     _element(MI_INT8, name.encode("ascii"), order),
                     _element(_MI_OF_DTYPE[native], values, order)])
    return struct.pack(order + "II", MI_MATRIX, len(body)) + body
