"""Uploads: a multipart body streamed into one temporary file, with a byte limit.

The body is parsed as it arrives (python-multipart's streaming parser), so a body over the
limit is refused as soon as the limit is passed, never read whole into memory or onto disk.
The file lands in a fresh temporary folder that :func:`receive_upload` removes when its
``with`` block ends, whatever happens inside it: success, an error, or a client that goes away.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from python_multipart.multipart import MultipartParseError, MultipartParser, parse_options_header

from cobbnet.io.images import DICOM_SUFFIXES, IMAGE_SUFFIXES

FILE_FIELD = "file"  # the multipart field that carries the image
RESULT_FIELD = "result"  # /v1/report's multipart field with the result JSON
# a part's declared type stands in for a missing suffix (e.g. a browser's "blob")
SUFFIX_BY_TYPE = {"image/jpeg": ".jpg", "image/png": ".png", "image/tiff": ".tif", "image/bmp": ".bmp",
                  "application/dicom": DICOM_SUFFIXES[0]}
MAX_NAME_CHARS = 255


class UploadError(Exception):
    """A request the service refuses: ``status`` (HTTP), ``code`` (short name), one-line message."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status, self.code = status, code


@dataclass
class Upload:
    """The received file: ``path`` on disk (temporary) and ``name`` as the client gave it."""

    path: Path
    name: str
    size: int


@dataclass
class Form:
    """A received multipart body: the ``file`` part (or None) and the text fields asked for."""

    file: Upload | None
    fields: dict[str, bytes]


def upload_suffix(name: str, content_type: str) -> str:
    """The suffix to store ``name`` under, or UploadError(415) for a type cobbnet cannot read.

    No suffix, or a numeric one (DICOM files named by their UID), is kept as it is: the reader
    then looks for the DICOM marker.
    """
    suffix = Path(name).suffix.lower()
    if suffix in IMAGE_SUFFIXES or (suffix[1:].isdigit() and suffix[1:].isascii()):
        return suffix
    if suffix == "":
        return SUFFIX_BY_TYPE.get(content_type.lower(), "")
    raise UploadError(415, "unsupported_media_type",
                      f"{name}: unsupported image type {suffix!r}; expected one of {', '.join(IMAGE_SUFFIXES)} or a DICOM file")


def multipart_boundary(content_type: str | None) -> bytes:
    """The boundary of a ``multipart/form-data`` content type, or UploadError(415/400)."""
    kind, params = parse_options_header(content_type or "")
    if kind != b"multipart/form-data":
        shown = kind.decode("latin-1") or "none"
        raise UploadError(415, "unsupported_media_type", f"request body: expected multipart/form-data, got {shown}")
    boundary = params.get(b"boundary", b"")
    if not boundary or len(boundary) > 70:  # RFC 2046: 1 to 70 characters
        raise UploadError(400, "bad_request", "request body: multipart/form-data without a valid boundary")
    return boundary


class _FilePart:
    """Parser callbacks that write the ``file`` part into ``folder``, keep the text fields
    named in ``keep`` in memory (the body's limit bounds them), and ignore other parts."""

    def __init__(self, folder: Path, keep: tuple[str, ...] = ()):
        self.folder = folder
        self.keep = keep
        self.fields: dict[str, bytes] = {}
        self._keeping: str | None = None
        self.upload: Upload | None = None
        self.ended = False
        self._headers: dict[bytes, bytes] = {}
        self._field = self._value = b""
        self._out: BinaryIO | None = None
        self._writing = False

    def callbacks(self) -> dict:
        return {"on_part_begin": self._part_begin, "on_header_field": self._header_field,
                "on_header_value": self._header_value, "on_header_end": self._header_end,
                "on_headers_finished": self._headers_finished, "on_part_data": self._part_data,
                "on_part_end": self._part_end, "on_end": self._end}

    def _part_begin(self) -> None:
        self._headers, self._field, self._value = {}, b"", b""

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._field += data[start:end]

    def _header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def _header_end(self) -> None:
        self._headers[self._field.strip().lower()] = self._value.strip()
        self._field, self._value = b"", b""

    def _headers_finished(self) -> None:
        _, params = parse_options_header(self._headers.get(b"content-disposition", b""))
        field = params.get(b"name", b"").decode("utf-8", "replace")
        self._keeping = field if field in self.keep and field not in self.fields else None
        if self._keeping is not None:
            self.fields[field] = b""
        if field != FILE_FIELD or self.upload is not None:
            self._writing = False  # another field, or a second file: not written
            return
        name = Path(params.get(b"filename", b"").decode("utf-8", "replace")).name[:MAX_NAME_CHARS] or "upload"
        content_type = parse_options_header(self._headers.get(b"content-type", b""))[0].decode("latin-1")
        suffix = upload_suffix(name, content_type)
        out = tempfile.NamedTemporaryFile(dir=self.folder, prefix="upload-", suffix=suffix, delete=False)
        self._out, self._writing = out, True
        self.upload = Upload(Path(out.name), name, 0)

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self._keeping is not None:
            self.fields[self._keeping] += data[start:end]
        if self._writing:
            self._out.write(data[start:end])
            self.upload.size += end - start

    def _part_end(self) -> None:
        self._keeping = None
        if self._writing:
            self._out.close()
            self._writing = False

    def _end(self) -> None:
        self.ended = True

    def close(self) -> None:
        if self._out is not None:
            self._out.close()


@contextlib.asynccontextmanager
async def receive_upload(chunks: AsyncIterator[bytes], content_type: str | None,
                         content_length: str | None, max_bytes: int, fields: tuple[str, ...] = (),
                         file_required: bool = True) -> AsyncIterator[Form]:
    """Stream a multipart body, its ``file`` part into a temporary file; yield the Form; always
    delete the file.

    ``chunks`` is the raw body (``request.stream()``); ``fields`` the text fields to keep.
    Raises UploadError: 413 as soon as more than ``max_bytes`` arrive (or when Content-Length
    already says so), 415 for a body that is not multipart or a file type cobbnet cannot read,
    400 for a malformed body, 422 for a body without a ``file`` part when ``file_required``.
    A client that goes away raises whatever ``chunks`` raises.
    """
    boundary = multipart_boundary(content_type)
    with _refuse_large(content_length, max_bytes), tempfile.TemporaryDirectory(prefix="cobbnet-") as folder:
        part = _FilePart(Path(folder), fields)
        parser = MultipartParser(boundary, part.callbacks())
        received = 0
        try:
            async for chunk in chunks:
                received += len(chunk)
                if received > max_bytes:
                    raise too_large(max_bytes)
                parser.write(chunk)
            parser.finalize()
        except MultipartParseError as err:
            raise UploadError(400, "bad_request", f"request body: malformed multipart data ({err})") from None
        finally:
            part.close()
        if not part.ended:
            raise UploadError(400, "bad_request", "request body: multipart data ended before its closing boundary")
        if part.upload is None and file_required:
            raise UploadError(422, "invalid_request", f"request body: no '{FILE_FIELD}' part with the image")
        yield Form(part.upload, part.fields)


def too_large(max_bytes: int) -> UploadError:
    """413: the body is over the limit."""
    return UploadError(413, "too_large", f"request body: larger than the limit of {_megabytes(max_bytes)}")


def _megabytes(n: int) -> str:
    return f"{n / 2**20:g} MB" if n >= 2**20 else f"{n} bytes"


@contextlib.contextmanager
def _refuse_large(content_length: str | None, max_bytes: int) -> Iterator[None]:
    """Refuse at once a body whose declared length is over the limit (nothing is read)."""
    if content_length is not None and content_length.strip().isdigit() and int(content_length) > max_bytes:
        raise too_large(max_bytes)
    yield
