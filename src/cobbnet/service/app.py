"""The REST service and the correction page: ``create_app()`` builds it, ``serve()`` runs it.

    POST /v1/predict   multipart upload (JPEG, PNG, TIFF, DICOM) -> the result JSON
    POST /v1/preview   the same upload -> the radiograph as PNG (for browsers that cannot show TIFF/DICOM)
    POST /v1/angles    {"landmarks": (17, 4, 2), "height": H} -> {"curves", "challenge"}
    POST /v1/report    a result JSON -> its PDF report
    GET  /v1/health, /v1/model, /openapi.json, /docs, and the page at /

Each worker process loads the model once (at start-up, or on first use when a test builds the
app without running its lifespan). Errors are JSON ``{"error": code, "detail": one line}``.
Uploads live only in a temporary folder that is removed when the request ends.

    python -m cobbnet.service.app --write-openapi    # refresh the committed openapi.json
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import math
import os
import sys
import threading
from importlib import resources
from pathlib import Path, PurePath
from typing import Any

import numpy as np
from fastapi import Depends, FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

import cobbnet
from cobbnet.errors import InputError
from cobbnet.service.schemas import (
    ANGLES_BODY,
    ANGLES_OK,
    REPORT_BODY,
    RESULT_REF,
    UPLOAD_BODY,
    AnglesRequest,
    Health,
    ModelInfo,
    add_result_schema,
    error_responses,
)
from cobbnet.service.uploads import RESULT_FIELD, Upload, UploadError, receive_upload, too_large

DEFAULT_MAX_UPLOAD_BYTES = 64 * 2**20
MAX_UPLOAD_ENV = "COBBNET_MAX_UPLOAD_BYTES"  # how serve() passes its settings to worker processes
THREADS_ENV = "COBBNET_SERVE_THREADS"
PREVIEW_MAX_SIDE = 4096  # the preview PNG is shrunk to at most this many pixels a side
STATIC = "static"
OPENAPI_FILE = "openapi.json"
JSON_TYPES = ("application/json",)
ERROR_CODES = {400: "bad_request", 404: "not_found", 405: "method_not_allowed", 413: "too_large",
               415: "unsupported_media_type", 422: "invalid_request", 500: "internal_error",
               501: "not_implemented"}
log = logging.getLogger("cobbnet.service")


class Service:
    """One worker's state: the predictor (loaded once), the upload limit, locks."""

    def __init__(self, predictor: Any = None, max_upload_bytes: int | None = None):
        self.predictor = predictor
        self.max_upload_bytes = max_upload_bytes or int(os.environ.get(MAX_UPLOAD_ENV, DEFAULT_MAX_UPLOAD_BYTES))
        self._load_lock = threading.Lock()
        # one prediction at a time per worker: the network already uses every core, and the
        # predictor makes no promise about concurrent calls; workers add parallelism
        self._predict_lock = threading.Lock()
        self._report_lock = threading.Lock()  # matplotlib's state is global
        self._info: dict[str, Any] | None = None

    def get_predictor(self) -> Any:
        with self._load_lock:
            if self.predictor is None:
                from cobbnet.infer.predict import Predictor

                threads = os.environ.get(THREADS_ENV)
                self.predictor = Predictor(threads=int(threads) if threads else None)
            return self.predictor

    def predict(self, upload: Upload) -> dict[str, Any]:
        """The result JSON of one uploaded file, as ``cobbnet predict`` writes it (the same
        reading, input gate and record); UploadError 415/400 when it cannot be read."""
        from cobbnet.infer import batch
        from cobbnet.io.images import image_kind

        predictor = self.get_predictor()
        try:
            image_kind(upload.path)
        except InputError as err:
            raise UploadError(415, "unsupported_media_type", _shown(err, upload)) from None
        with self._predict_lock:
            # the CLI's own path for one file: read, gate, predict, assess, record
            ((_, record, _, _, problem),) = batch._predict([batch.Item(upload.path, PurePath(upload.name))], predictor)
        if record is None:
            raise UploadError(400, "unreadable_image", _one_line(Exception(problem)).replace(str(upload.path), upload.name))
        return _renamed(record, str(upload.path), upload.name)

    def preview(self, upload: Upload) -> bytes:
        """The uploaded radiograph as an 8-bit grayscale PNG, at most PREVIEW_MAX_SIDE a side."""
        from PIL import Image

        image = Image.fromarray(self._image(upload))
        image.thumbnail((PREVIEW_MAX_SIDE, PREVIEW_MAX_SIDE))
        buf = io.BytesIO()
        image.save(buf, format="PNG")
        return buf.getvalue()

    def model_info(self) -> dict[str, Any]:
        if self._info is None:
            self._info = _model_info(self.get_predictor())
        return self._info

    def report(self, result: dict[str, Any], upload: Upload | None) -> bytes:
        """The PDF of a result JSON, drawn over its radiograph when ``upload`` has it."""
        try:
            from cobbnet.report.pdf import report_pdf
            from cobbnet.report.result import validate_result
        except ImportError as err:
            raise UploadError(501, "not_implemented", f"PDF reports are not available in this installation ({err})") from None
        try:
            validate_result(result)
        except ImportError as err:
            raise UploadError(501, "not_implemented", _one_line(err)) from None
        except (InputError, ValueError, TypeError, KeyError) as err:
            raise UploadError(422, "invalid_request", _one_line(err)) from None
        image = None if upload is None else self._image(upload)
        if image is not None:
            size, given = (image.shape[1], image.shape[0]), (result["input"]["width"], result["input"]["height"])
            if size != given:
                raise UploadError(422, "invalid_request", f"{upload.name}: the image is {size[0]}x{size[1]} pixels "
                                                          f"but the result is for {given[0]}x{given[1]}")
        with self._report_lock:
            return report_pdf(result, image)

    def _image(self, upload: Upload) -> np.ndarray:
        """The upload as ``(H, W)`` uint8; UploadError 415/400 when it cannot be read."""
        from cobbnet.io.images import image_kind, read_image

        try:
            image_kind(upload.path)
        except InputError as err:
            raise UploadError(415, "unsupported_media_type", _shown(err, upload)) from None
        try:
            return read_image(upload.path)
        except InputError as err:
            raise UploadError(400, "unreadable_image", _shown(err, upload)) from None


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


def _renamed(record: dict[str, Any], path: str, name: str) -> dict[str, Any]:
    """``record`` naming the upload as the client called it, not by its temporary path."""
    record["input"]["path"] = name
    if isinstance(record.get("reason"), str):
        record["reason"] = record["reason"].replace(path, name)
    record["warnings"] = [w.replace(path, name) for w in record.get("warnings", [])]
    return record


def _shown(error: InputError, upload: Upload) -> str:
    """The CLI's message, naming the file as the client called it rather than its temporary path."""
    return _one_line(error).replace(str(upload.path), upload.name)


def _model_info(predictor: Any) -> dict[str, Any]:
    """Name, version, sha256, engine and card of the predictor's model (``predictor.model``:
    name, sha256, engine, as in the result JSON); the card is the bundled model's."""
    model = dict(getattr(predictor, "model", None) or {})
    card = None
    try:
        from cobbnet.infer.bundle import CARD, read_bundle

        bundle = read_bundle()
        if bundle.describe(str(model.get("engine", "")))["sha256"] == model.get("sha256"):
            card = (bundle.folder / CARD).read_text(encoding="utf-8")
    except (InputError, OSError):
        pass  # a model from elsewhere: no card to show
    return {"name": str(model.get("name") or "unknown"), "version": cobbnet.__version__,
            "sha256": str(model.get("sha256") or ""), "engine": str(model.get("engine") or ""), "card": card}


def angles_record(landmarks: np.ndarray, height: float) -> dict[str, Any]:
    """``{"curves", "challenge"}`` of landmarks ``(17, 4, 2)`` by the challenge's rules.

    An angle whose vertebrae have zero-length directions is undefined (null); when all three
    are, the landmarks describe no spine: UploadError(422).
    """
    from cobbnet.report.result import challenge_record, curves_record
    from cobbnet.spine.cobb import cobb_angles

    result = cobb_angles(landmarks, height)
    if not np.any(np.isfinite(result.angles)):
        raise UploadError(422, "invalid_request", "landmarks: the vertebrae have no direction (zero-length endplates); no Cobb angle is defined")
    return {"curves": curves_record(result), "challenge": challenge_record(result)}


def json_safe(obj: Any) -> Any:
    """``obj`` with NaN and infinities as null and numpy scalars as Python numbers."""
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return json_safe(obj.tolist())
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def _error(status: int, code: str, detail: str) -> JSONResponse:
    return JSONResponse({"error": code, "detail": detail}, status_code=status)


def _validation_detail(errors: list[dict[str, Any]]) -> str:
    """Pydantic's errors on one line: ``landmarks.3: List should have at least 4 items; ...``."""
    parts = []
    for e in errors[:3]:
        where = ".".join(str(p) for p in e.get("loc", ()) if p != "body") or "body"
        parts.append(f"{where}: {e.get('msg', 'invalid')}")
    more = len(errors) - len(parts)
    return "; ".join(parts) + (f" (and {more} more)" if more > 0 else "")


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(UploadError)
    async def upload_error(request: Request, exc: UploadError) -> JSONResponse:
        return _error(exc.status, exc.code, str(exc))

    @app.exception_handler(ClientDisconnect)
    async def gone(request: Request, exc: ClientDisconnect) -> JSONResponse:
        return _error(400, "bad_request", "client disconnected")  # nobody reads it; the upload is gone

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        return _error(422, "invalid_request", _validation_detail(exc.errors()))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail = {404: "no such endpoint", 405: "method not allowed here"}.get(exc.status_code, str(exc.detail))
        return _error(exc.status_code, ERROR_CODES.get(exc.status_code, "error"),
                      f"{request.method} {request.url.path}: {_one_line(Exception(detail))}")

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return _error(500, "internal_error", "unexpected error in the service; the server log has the details")


def require_json(request: Request) -> None:
    """415 for a body that is not declared as JSON (before the body is read)."""
    kind = _media_type(request)
    if kind not in JSON_TYPES and not kind.endswith("+json"):
        raise UploadError(415, "unsupported_media_type",
                          f"request body: expected application/json, got {kind or 'none'}")


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _strict_json(data: bytes | None, where: str) -> Any:
    """``data`` as strict JSON (no NaN or Infinity), or UploadError(422)."""
    if data is None:
        raise UploadError(422, "invalid_request", f"{where}: missing")
    try:
        return json.loads(data, parse_constant=_no_constant)
    except (ValueError, UnicodeDecodeError) as err:
        raise UploadError(422, "invalid_request", f"{where}: not valid JSON ({_one_line(err)})") from None


async def _body(request: Request, max_bytes: int) -> bytes:
    """The whole body, refused (413) as soon as it grows past ``max_bytes``."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise too_large(max_bytes)
    data = bytearray()
    async for chunk in request.stream():
        data += chunk
        if len(data) > max_bytes:
            raise too_large(max_bytes)
    return bytes(data)


def _result_of(data: bytes | None) -> dict[str, Any]:
    result = _strict_json(data, RESULT_FIELD if data is None else "result")
    if not isinstance(result, dict):
        raise UploadError(422, "invalid_request", "result: expected a result JSON object")
    return result


def _media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


def _parsed(model: type[BaseModel], data: Any) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as err:
        raise UploadError(422, "invalid_request", _validation_detail(err.errors())) from None


def _static_dir() -> Path:
    return Path(str(resources.files("cobbnet.service") / STATIC))


def create_app(predictor: Any = None, max_upload_bytes: int | None = None) -> FastAPI:
    """The service. ``predictor``: a loaded Predictor (tests share one); None loads the bundled
    model once at start-up. ``max_upload_bytes``: default $COBBNET_MAX_UPLOAD_BYTES or 64 MB."""
    service = Service(predictor, max_upload_bytes)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        await run_in_threadpool(service.get_predictor)
        yield

    app = FastAPI(title="cobbnet", version=cobbnet.__version__, lifespan=lifespan, docs_url=None, redoc_url=None,
                  description="Vertebra corners and Cobb angles from AP spine radiographs. "
                              "A research tool and a decision aid, not a diagnostic device.")
    app.state.service = service
    _add_error_handlers(app)
    _add_routes(app, service)
    static = _static_dir()

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(static / "index.html")

    @app.get("/docs", include_in_schema=False)
    async def docs() -> FileResponse:
        return FileResponse(static / "docs.html")

    app.mount("/static", StaticFiles(directory=static), name="static")
    plain_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = add_result_schema(plain_openapi())
        return app.openapi_schema

    app.openapi = openapi
    return app


def _add_routes(app: FastAPI, service: Service) -> None:
    @app.post("/v1/predict", summary="Corners, Cobb angles and curves of one radiograph",
              responses={200: {"description": "the result JSON, as `cobbnet predict` writes it "
                                              "(an image the input gate turns away has status rejected and a reason)",
                               "content": {"application/json": {"schema": RESULT_REF}}},
                         **error_responses(400, 413, 415, 422)},
              openapi_extra=UPLOAD_BODY)
    async def predict(request: Request) -> Response:
        async with _upload(request, service) as form:
            record = await run_in_threadpool(service.predict, form.file)
        return JSONResponse(json_safe(record))

    @app.post("/v1/preview", summary="The uploaded radiograph as an 8-bit grayscale PNG (for TIFF and DICOM)",
              response_class=Response,
              responses={200: {"content": {"image/png": {}}, "description": "grayscale PNG"},
                         **error_responses(400, 413, 415, 422)},
              openapi_extra=UPLOAD_BODY)
    async def preview(request: Request) -> Response:
        async with _upload(request, service) as form:
            png = await run_in_threadpool(service.preview, form.file)
        return Response(png, media_type="image/png")

    @app.post("/v1/angles", summary="Cobb angles and curves of (edited) corners, by the challenge's rules",
              dependencies=[Depends(require_json)], openapi_extra=ANGLES_BODY,
              responses={200: ANGLES_OK, **error_responses(413, 415, 422)})
    async def angles(request: Request) -> JSONResponse:
        body = _parsed(AnglesRequest, _strict_json(await _body(request, service.max_upload_bytes), "request body"))
        return JSONResponse(json_safe(angles_record(np.asarray(body.landmarks, dtype=np.float64), body.height)))

    @app.post("/v1/report", summary="The PDF report of a result, with its radiograph when one is sent",
              response_class=Response,
              responses={200: {"content": {"application/pdf": {}}, "description": "the PDF report"},
                         **error_responses(400, 413, 415, 422, 501)},
              openapi_extra=REPORT_BODY)
    async def report(request: Request) -> Response:
        if _media_type(request) == "multipart/form-data":
            async with _upload(request, service, (RESULT_FIELD,), file_required=False) as form:
                result = _result_of(form.fields.get(RESULT_FIELD))
                pdf = await run_in_threadpool(service.report, result, form.file)
        else:
            require_json(request)
            result = _result_of(await _body(request, service.max_upload_bytes))
            pdf = await run_in_threadpool(service.report, result, None)
        path = (result.get("input") or {}).get("path")
        stem = Path(path).stem if isinstance(path, str) and path else "cobbnet"
        return Response(pdf, media_type="application/pdf",
                        headers={"Content-Disposition": f'attachment; filename="{_ascii(stem)}-report.pdf"'})

    @app.get("/v1/health", summary="Liveness, and whether the model is loaded", response_model=Health)
    async def health() -> dict[str, Any]:
        return {"status": "ok", "version": cobbnet.__version__, "model_loaded": service.predictor is not None}

    @app.get("/v1/model", summary="The model being served: card, version and sha256", response_model=ModelInfo)
    async def model() -> dict[str, Any]:
        return await run_in_threadpool(service.model_info)


def _ascii(text: str) -> str:
    return "".join(c if c.isascii() and (c.isalnum() or c in "-_.") else "_" for c in text)[:100]


def _upload(request: Request, service: Service, fields: tuple[str, ...] = (), file_required: bool = True):
    return receive_upload(request.stream(), request.headers.get("content-type"),
                          request.headers.get("content-length"), service.max_upload_bytes, fields, file_required)


def openapi_path() -> Path:
    """The committed OpenAPI document inside the package."""
    return Path(str(resources.files("cobbnet.service") / OPENAPI_FILE))


def openapi_text(app: FastAPI | None = None) -> str:
    """The OpenAPI document as committed: indented JSON with a final newline."""
    return json.dumps((app or create_app()).openapi(), indent=2, ensure_ascii=False) + "\n"


def serve(host: str = "127.0.0.1", port: int = 8000, workers: int = 1,
          max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES, threads: int | None = None) -> None:
    """Run the service with uvicorn; each of ``workers`` processes loads the model once.

    ``threads``: ONNX Runtime threads per worker; default the CPU count shared out among the
    workers, so that two workers on two cores do not each start two threads.
    """
    import uvicorn

    threads = threads or max(1, (os.cpu_count() or 1) // workers)
    # read by create_app in every worker process
    os.environ[MAX_UPLOAD_ENV] = str(max_upload_bytes)
    os.environ[THREADS_ENV] = str(threads)
    uvicorn.run("cobbnet.service.app:create_app", factory=True, host=host, port=port, workers=workers,
                log_level="info")


if __name__ == "__main__":
    if sys.argv[1:] != ["--write-openapi"]:
        sys.exit("usage: python -m cobbnet.service.app --write-openapi")
    openapi_path().write_text(openapi_text(), encoding="utf-8")
    print(f"wrote {openapi_path()}")
