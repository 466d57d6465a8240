"""What the service's requests and responses look like, for validation and the OpenAPI document.

The result JSON's own schema (``cobbnet/report/result.schema.json``) is the single source of
its shape: :func:`add_result_schema` copies it into the OpenAPI components (its ``$defs``
become ``Result_<name>`` components), so /v1/predict's response and /v1/report's request
body are documented, and checked by schemathesis, against the file ``validate_result`` reads.
"""

from __future__ import annotations

import copy
from typing import Annotated, Any

from pydantic import BaseModel, Field

from cobbnet.service.uploads import FILE_FIELD, RESULT_FIELD

MAX_COORDINATE = 1e5  # pixels; far beyond any radiograph, small enough for exact float geometry
RESULT = "Result"
RESULT_REF = {"$ref": f"#/components/schemas/{RESULT}"}
ANGLES_REQUEST, ANGLES_RESPONSE = "AnglesRequest", "AnglesResponse"

Coordinate = Annotated[float, Field(ge=-MAX_COORDINATE, le=MAX_COORDINATE, allow_inf_nan=False)]
Point = Annotated[list[Coordinate], Field(min_length=2, max_length=2, description="[x, y] pixels")]
Quad = Annotated[list[Point], Field(min_length=4, max_length=4, description="top-left, top-right, bottom-left, bottom-right")]


class ErrorBody(BaseModel):
    error: str = Field(description="a short code: bad_request, unreadable_image, too_large, unsupported_media_type, invalid_request, ...")
    detail: str = Field(description="one line naming the input and the problem")


class AnglesRequest(BaseModel):
    landmarks: Annotated[list[Quad], Field(min_length=17, max_length=17)] = Field(
        description="(17, 4, 2): vertebrae T1..L5, each with its four corners in pixels")
    height: float = Field(gt=0, le=MAX_COORDINATE, allow_inf_nan=False, description="the image height in pixels")


class Health(BaseModel):
    status: str = Field(description="ok while the service answers")
    version: str = Field(description="the cobbnet version")
    model_loaded: bool = Field(description="whether this worker has loaded its model")


class ModelInfo(BaseModel):
    name: str
    version: str = Field(description="the cobbnet version serving the model")
    sha256: str = Field(description="of the weights file")
    engine: str = Field(description="how the network runs")
    card: str | None = Field(description="the model card (Markdown), when the weights have one")


def error_responses(*codes: int) -> dict[int, dict]:
    return {code: {"model": ErrorBody, "description": DESCRIPTIONS[code]} for code in codes}


DESCRIPTIONS = {
    400: "an unreadable image (the CLI's message) or a malformed body",
    413: "the body is over the size limit",
    415: "a body of another content type, or a file type cobbnet does not read",
    422: "a body that does not fit the schema",
    501: "this installation lacks what the endpoint needs",
}

UPLOAD_BODY = {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
    "type": "object", "required": [FILE_FIELD],
    "properties": {FILE_FIELD: {"type": "string", "format": "binary",
                                "description": "the radiograph: JPEG, PNG, TIFF or DICOM"}}}}}}}
ANGLES_BODY = {"requestBody": {"required": True, "content": {"application/json": {
    "schema": {"$ref": f"#/components/schemas/{ANGLES_REQUEST}"}}}}}
ANGLES_OK = {"description": "the curves and the challenge's angles, as in the result JSON",
             "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{ANGLES_RESPONSE}"}}}}
REPORT_BODY = {"requestBody": {
    "required": True, "description": "a result JSON (e.g. as corrected on the page); as multipart, with its radiograph",
    "content": {"application/json": {"schema": RESULT_REF},
                "multipart/form-data": {"schema": {
                    "type": "object", "required": [RESULT_FIELD],
                    "properties": {RESULT_FIELD: {"type": "string", "description": "the result JSON, as text"},
                                   FILE_FIELD: {"type": "string", "format": "binary",
                                                "description": "the radiograph the result is of (optional)"}}}}}}}


def _rewrite_refs(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: (f"#/components/schemas/{RESULT}_{v.removeprefix('#/$defs/')}"
                    if k == "$ref" and isinstance(v, str) and v.startswith("#/$defs/") else _rewrite_refs(v))
                for k, v in node.items()}
    if isinstance(node, list):
        return [_rewrite_refs(v) for v in node]
    return node


def result_components() -> dict[str, dict]:
    """The result schema as OpenAPI components: ``Result`` and its ``Result_<def>`` parts, and
    the /v1/angles bodies (its answer is two of the result's properties)."""
    from cobbnet.report.result import schema

    doc = copy.deepcopy(schema())
    defs = doc.pop("$defs", {})
    for key in ("$schema", "$id"):
        doc.pop(key, None)
    out = {RESULT: _rewrite_refs(doc)}
    out.update({f"{RESULT}_{name}": _rewrite_refs(d) for name, d in defs.items()})
    out[ANGLES_REQUEST] = AnglesRequest.model_json_schema()
    out[ANGLES_RESPONSE] = {"type": "object", "required": ["curves", "challenge"], "additionalProperties": False,
                            "properties": {k: out[RESULT]["properties"][k] for k in ("curves", "challenge")}}
    return out


def add_result_schema(openapi: dict) -> dict:
    """``openapi`` with the result schema and the /v1/angles bodies among its components."""
    openapi.setdefault("components", {}).setdefault("schemas", {}).update(result_components())
    return openapi
