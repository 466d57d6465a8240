"""The REST service: every endpoint, every error, uploads never kept, the committed OpenAPI."""

from __future__ import annotations

import asyncio
import io
import json
import re
import tempfile
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="the serve extra is not installed: pip install 'cobbnet[serve]'")
pytest.importorskip("python_multipart", reason="the serve extra is not installed: pip install 'cobbnet[serve]'")
from fastapi.testclient import TestClient  # noqa: E402
from PIL import Image  # noqa: E402

from cobbnet.io.images import read_image  # noqa: E402
from cobbnet.service import app as service_app  # noqa: E402
from cobbnet.service.app import create_app, openapi_path, openapi_text  # noqa: E402
from cobbnet.spine.cobb import cobb_angles  # noqa: E402

EXAMPLE = Path(service_app.__file__).parents[1] / "examples" / "synthetic-spine.jpg"
STATIC = Path(service_app.__file__).with_name("static")
LIMIT = 1 << 20  # the upload limit of the small app


@pytest.fixture(scope="module")
def predictor():
    """The bundled model, loaded once for the whole module."""
    from cobbnet.infer.predict import Predictor

    return Predictor()


@pytest.fixture(scope="module")
def client(predictor):
    with TestClient(create_app(predictor)) as c:
        yield c


@pytest.fixture(scope="module")
def small(predictor):
    """An app with a 1 MB upload limit."""
    with TestClient(create_app(predictor, max_upload_bytes=LIMIT)) as c:
        yield c


@pytest.fixture
def uploads_dir(tmp_path, monkeypatch):
    """Temporary files go to a folder of the test's own, which must be empty afterwards."""
    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    yield folder
    assert list(folder.iterdir()) == [], "an upload was left on disk"


@pytest.fixture(scope="module")
def example_result(client) -> dict:
    return post_file(client, EXAMPLE.name, EXAMPLE.read_bytes(), "image/jpeg").json()


def post_file(client, name: str, data: bytes, content_type: str = "application/octet-stream", path="/v1/predict"):
    return client.post(path, files={"file": (name, data, content_type)})


def assert_error(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error", "detail"} and body["error"] == code, body
    assert "\n" not in body["detail"] and "Traceback" not in body["detail"]
    return body


def cli_message(tmp_path: Path, name: str, data: bytes) -> str:
    """What the CLI prints for this file: read_image's message, naming the file."""
    path = tmp_path / name
    path.write_bytes(data)
    with pytest.raises(Exception) as err:
        read_image(path)
    return str(err.value).replace(str(path), name)


# -- health, model, page ---------------------------------------------------------------------


def test_health(client):
    body = client.get("/v1/health").json()
    assert body == {"status": "ok", "version": service_app.cobbnet.__version__, "model_loaded": True}


def test_model_has_card_version_and_sha256(client, predictor):
    from cobbnet.infer.bundle import CARD, weights_dir

    body = client.get("/v1/model").json()
    assert {k: body[k] for k in ("name", "sha256", "engine")} == predictor.model
    assert re.fullmatch("[0-9a-f]{64}", body["sha256"])
    assert body["version"] == service_app.cobbnet.__version__
    assert body["card"] == (weights_dir() / CARD).read_text(encoding="utf-8")


def test_page_and_its_files_need_no_network(client):
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    for ref in re.findall(r'(?:src|href)="(/static/[^"]+)"', page.text):
        assert client.get(ref).status_code == 200, ref
    for path in STATIC.iterdir():
        text = path.read_text(encoding="utf-8")
        urls = set(re.findall(r"https?://[^\s\"'<>)]+", text)) - {"http://www.w3.org/2000/svg"}
        assert not urls, f"{path.name} refers to the network: {urls}"


def test_docs_page_and_openapi(client):
    assert client.get("/docs").status_code == 200
    doc = client.get("/openapi.json").json()
    assert {"/v1/predict", "/v1/angles", "/v1/report", "/v1/health", "/v1/model"} <= set(doc["paths"])


def test_committed_openapi_matches_the_app():
    """Refresh with ``python -m cobbnet.service.app --write-openapi``."""
    assert openapi_path().read_text(encoding="utf-8") == openapi_text(create_app(object()))


# -- /v1/predict ---------------------------------------------------------------------------------


def _cli_json(tmp_path: Path, name: str, data: bytes) -> dict:
    """What ``cobbnet predict`` writes for this file, naming it as ``name``."""
    from typer.testing import CliRunner

    from cobbnet.cli import app

    path = tmp_path / "in" / name
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(data)
    out = tmp_path / "out"
    CliRunner().invoke(app, ["predict", str(path), "--out", str(out), "--no-overlay"])
    record = json.loads((out / (Path(name).stem + ".json")).read_text())
    record["input"]["path"] = name
    return record


def test_predict_returns_what_the_cli_writes(client, uploads_dir, tmp_path):
    response = post_file(client, EXAMPLE.name, EXAMPLE.read_bytes(), "image/jpeg")
    assert response.status_code == 200, response.text
    assert response.json() == _cli_json(tmp_path, EXAMPLE.name, EXAMPLE.read_bytes())
    from cobbnet.report.result import validate_result

    validate_result(response.json())


def test_images_the_gate_rejects_are_rejected_results_as_in_the_cli(client, uploads_dir, tmp_path):
    blank = io.BytesIO()
    Image.new("L", (300, 800), 128).save(blank, format="PNG")
    response = post_file(client, "blank.png", blank.getvalue())
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "rejected" and body["reason"] and body["curves"] == [] and body["input"]["path"] == "blank.png"
    assert body == _cli_json(tmp_path, "blank.png", blank.getvalue())


def _encoded(fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(read_image(EXAMPLE)).save(buf, format=fmt)
    return buf.getvalue()


@pytest.mark.parametrize("suffix,fmt", [(".png", "PNG"), (".tif", "TIFF")])
def test_predict_png_and_tiff(client, predictor, uploads_dir, suffix, fmt):
    data = _encoded(fmt)
    body = post_file(client, f"spine{suffix}", data).json()
    assert body["input"] == {"path": f"spine{suffix}", "width": 642, "height": 1980}
    expected = predictor.predict(read_image(EXAMPLE), name=f"spine{suffix}").as_dict()
    assert body["status"] == expected["status"] != "rejected"
    assert body["curves"] == expected["curves"] and body["warnings"] == expected["warnings"]


def test_predict_dicom_with_and_without_suffix(client, uploads_dir, tmp_path, dicom_writer):
    pixels = read_image(EXAMPLE)
    for name in ("spine.dcm", "1.2.840.10008"):
        data = dicom_writer(tmp_path / name, pixels).read_bytes()
        response = post_file(client, name, data, "application/dicom")
        assert response.status_code == 200, response.text
        assert response.json()["input"]["height"] == pixels.shape[0]


@pytest.mark.parametrize("name,data", [
    ("notes.jpg", b"this is a text file, not a radiograph\n"),
    ("empty.jpg", b""),
    ("half.jpg", EXAMPLE.read_bytes()[: EXAMPLE.stat().st_size // 2]),
    ("broken.dcm", b"\0" * 128 + b"DICM" + b"\x02\x00\x10\x00garbage"),
])
@pytest.mark.filterwarnings("ignore::UserWarning")  # pydicom warns about the broken file before failing
def test_unreadable_image_is_400_with_the_cli_message(client, uploads_dir, tmp_path, name, data):
    body = assert_error(post_file(client, name, data, "image/jpeg"), 400, "unreadable_image")
    assert body["detail"] == cli_message(tmp_path, name, data)
    assert body["detail"].startswith(f"{name}: ")


def test_unsupported_file_type_is_415(client, uploads_dir):
    body = assert_error(post_file(client, "scan.gif", b"GIF89a"), 415, "unsupported_media_type")
    assert body["detail"].startswith("scan.gif: unsupported image type '.gif'")
    # no suffix and no DICOM marker: nothing says what it is
    assert_error(post_file(client, "scan", b"plain bytes"), 415, "unsupported_media_type")


def test_body_that_is_not_multipart_is_415(client):
    assert_error(client.post("/v1/predict", content=EXAMPLE.read_bytes(), headers={"content-type": "image/jpeg"}),
                 415, "unsupported_media_type")
    assert_error(client.post("/v1/predict", json={"file": "x"}), 415, "unsupported_media_type")
    assert_error(client.post("/v1/predict"), 415, "unsupported_media_type")


def test_multipart_without_file_part_is_422(client, uploads_dir):
    body = assert_error(client.post("/v1/predict", data={"name": "x"}, files={"other": ("a.jpg", b"x")}),
                        422, "invalid_request")
    assert "'file'" in body["detail"]


def test_malformed_multipart_is_400(client, uploads_dir):
    headers = {"content-type": "multipart/form-data; boundary=xyz"}
    assert_error(client.post("/v1/predict", content=b"no boundary anywhere", headers=headers), 400, "bad_request")
    cut = b'--xyz\r\nContent-Disposition: form-data; name="file"; filename="a.jpg"\r\n\r\n' + b"\xff\xd8" * 10
    assert_error(client.post("/v1/predict", content=cut, headers=headers), 400, "bad_request")
    assert_error(client.post("/v1/predict", content=b"x", headers={"content-type": "multipart/form-data"}),
                 400, "bad_request")


def test_declared_length_over_the_limit_is_413(small, uploads_dir):
    body = assert_error(post_file(small, "big.jpg", b"\0" * (LIMIT + 1)), 413, "too_large")
    assert "1 MB" in body["detail"]
    assert post_file(small, EXAMPLE.name, EXAMPLE.read_bytes()).status_code == 200  # 0.4 MB fits


class _Body:
    """An ASGI ``receive``: the body in chunks (no Content-Length), then optionally a disconnect."""

    def __init__(self, chunks, disconnect=False):
        self.chunks, self.disconnect, self.sent = list(chunks), disconnect, 0

    async def __call__(self):
        if self.chunks:
            chunk = self.chunks.pop(0)
            self.sent += len(chunk)
            return {"type": "http.request", "body": chunk, "more_body": bool(self.chunks) or self.disconnect}
        if self.disconnect:
            return {"type": "http.disconnect"}
        await asyncio.sleep(3600)  # pragma: no cover - nothing more ever comes


def _call(app, receive) -> tuple[int, dict]:
    """Run one POST /v1/predict through the ASGI app; (status, JSON body)."""
    messages = []

    async def send(message):
        messages.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
             "scheme": "http", "path": "/v1/predict", "raw_path": b"/v1/predict", "query_string": b"",
             "root_path": "", "server": ("127.0.0.1", 8000), "client": ("127.0.0.1", 5000),
             "headers": [(b"content-type", b"multipart/form-data; boundary=xyz")]}
    asyncio.run(app(scope, receive, send))
    start = next(m for m in messages if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in messages if m["type"] == "http.response.body")
    return start["status"], json.loads(body)


HEAD = b'--xyz\r\nContent-Disposition: form-data; name="file"; filename="big.jpg"\r\n\r\n'


def test_limit_is_enforced_while_streaming(predictor, uploads_dir):
    chunk = 64 * 1024
    receive = _Body([HEAD] + [b"\0" * chunk] * (4 * LIMIT // chunk))  # 4 MB, no Content-Length
    status, body = _call(create_app(predictor, max_upload_bytes=LIMIT), receive)
    assert status == 413 and body["error"] == "too_large"
    assert receive.sent <= LIMIT + chunk, "the body was read past the limit"
    assert receive.chunks, "the whole body was read"


def test_client_that_goes_away_leaves_no_file(predictor, uploads_dir):
    receive = _Body([HEAD, b"\xff\xd8" * 1000], disconnect=True)
    status, _ = _call(create_app(predictor), receive)
    assert status == 400  # nobody reads it; what matters is the empty uploads_dir


def test_temporary_file_exists_only_during_the_request(client, uploads_dir, monkeypatch):
    seen = []
    real = service_app.Service.predict

    def spy(self, upload):
        seen.append((upload.path, upload.path.is_file(), upload.path.suffix))
        return real(self, upload)

    monkeypatch.setattr(service_app.Service, "predict", spy)
    assert post_file(client, "Spine Scan.JPG", EXAMPLE.read_bytes()).status_code == 200
    assert post_file(client, "bad.png", b"nope").status_code == 400
    assert [(exists, suffix) for _, exists, suffix in seen] == [(True, ".jpg"), (True, ".png")]
    assert all(not path.exists() for path, _, _ in seen)


def test_preview_is_a_png_of_the_upload(client, uploads_dir):
    response = post_file(client, "spine.tif", _encoded("TIFF"), path="/v1/preview")
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(response.content)).size == (642, 1980)
    assert_error(post_file(client, "x.tif", b"II*\0", path="/v1/preview"), 400, "unreadable_image")


# -- /v1/angles --------------------------------------------------------------------------------


def test_angles_follow_the_rules(client, example_result):
    from cobbnet.report.result import challenge_record, curves_record

    lm = np.array([v["corners"] for v in example_result["vertebrae"]], dtype=float)
    lm[4, 0] += (12.0, -7.0)  # an edited corner
    height = example_result["input"]["height"]
    response = client.post("/v1/angles", json={"landmarks": lm.tolist(), "height": height})
    assert response.status_code == 200, response.text
    r = cobb_angles(lm, height)
    assert response.json() == {"curves": curves_record(r), "challenge": challenge_record(r)}


def test_angles_of_the_unedited_corners_are_the_results(client, example_result):
    # the JSON's corners are rounded to 0.1 px: the angles move by at most about that much
    # (an end vertebra may change where two candidates tie within rounding)
    lm = [v["corners"] for v in example_result["vertebrae"]]
    body = client.post("/v1/angles", json={"landmarks": lm, "height": example_result["input"]["height"]}).json()
    for key in ("angle_1", "angle_2", "angle_3"):
        assert body["challenge"][key]["degrees"] == pytest.approx(example_result["challenge"][key]["degrees"], abs=0.25)


def _spine(value=10.0):
    return [[[value, value]] * 4] * 17


@pytest.mark.parametrize("payload", [
    {"landmarks": _spine()[:16], "height": 100},  # 16 vertebrae
    {"landmarks": [[[1, 2]] * 3] * 17, "height": 100},  # 3 corners
    {"landmarks": [[[1, 2, 3]] * 4] * 17, "height": 100},  # 3 coordinates
    {"landmarks": _spine(), "height": 0},
    {"landmarks": _spine(), "height": -5},
    {"landmarks": _spine(1e300), "height": 100},
    {"landmarks": _spine()},
    {"height": 100},
    {"landmarks": "T1", "height": 100},
    [],
    {"landmarks": _spine(), "height": 100},  # every endplate of zero length
])
def test_bad_angles_requests_are_422(client, payload):
    assert_error(client.post("/v1/angles", json=payload), 422, "invalid_request")


def test_angles_nan_and_bad_json_are_422_and_other_types_415(client):
    headers = {"content-type": "application/json"}
    text = json.dumps({"landmarks": _spine(), "height": 100}).replace("10.0", "NaN", 1)
    assert_error(client.post("/v1/angles", content=text, headers=headers), 422, "invalid_request")
    assert_error(client.post("/v1/angles", content=b"{not json", headers=headers), 422, "invalid_request")
    assert_error(client.post("/v1/angles", content=b"a=1", headers={"content-type": "text/plain"}),
                 415, "unsupported_media_type")


# -- /v1/report --------------------------------------------------------------------------------


def test_report_is_a_pdf(client, example_result):
    pytest.importorskip("cobbnet.report.pdf", reason="the PDF report module is not in this build")
    response = client.post("/v1/report", json=example_result)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/pdf" and response.content.startswith(b"%PDF")
    assert 'filename="synthetic-spine-report.pdf"' in response.headers["content-disposition"]


@pytest.mark.parametrize("payload", [{}, {"schema_version": "1.0"}, [1, 2], "result", None])
def test_report_of_something_that_is_not_a_result_is_422(client, payload):
    response = client.post("/v1/report", content=json.dumps(payload), headers={"content-type": "application/json"})
    assert_error(response, 422, "invalid_request")


def test_report_errors_name_where_the_result_is_wrong(client, example_result):
    broken = json.loads(json.dumps(example_result))
    broken["curves"][0]["cobb_angle"] = "large"
    body = assert_error(client.post("/v1/report", json=broken), 422, "invalid_request")
    assert "$.curves[0].cobb_angle" in body["detail"]
    assert_error(client.post("/v1/report", content=b"%PDF", headers={"content-type": "application/pdf"}),
                 415, "unsupported_media_type")


# -- the rest ------------------------------------------------------------------------------------


def test_unknown_paths_and_methods_are_json(client):
    assert_error(client.get("/v1/nothing"), 404, "not_found")
    assert_error(client.get("/v1/predict"), 405, "method_not_allowed")
    assert_error(client.delete("/v1/health"), 405, "method_not_allowed")


def test_unexpected_failure_is_a_json_500_without_traceback(predictor, monkeypatch):
    def boom(self, upload):
        raise RuntimeError("secret internals")

    monkeypatch.setattr(service_app.Service, "predict", boom)
    with TestClient(create_app(predictor), raise_server_exceptions=False) as c:
        body = assert_error(post_file(c, "a.jpg", EXAMPLE.read_bytes()), 500, "internal_error")
    assert "secret" not in body["detail"]


def test_serve_command_names_the_extra_when_it_is_missing(monkeypatch):
    import sys

    from typer.testing import CliRunner

    from cobbnet.cli import app

    monkeypatch.setitem(sys.modules, "uvicorn", None)  # import uvicorn now raises ImportError
    result = CliRunner().invoke(app, ["serve"])
    assert result.exit_code == 2
    assert "pip install 'cobbnet[serve]'" in " ".join(result.output.split())


def test_serve_passes_its_options_to_uvicorn(monkeypatch):
    import uvicorn
    from typer.testing import CliRunner

    from cobbnet.cli import app

    calls = []
    monkeypatch.setattr(uvicorn, "run", lambda *a, **k: calls.append((a, k)))
    monkeypatch.setenv(service_app.MAX_UPLOAD_ENV, "1")  # restored after the test
    monkeypatch.setenv(service_app.THREADS_ENV, "1")
    result = CliRunner().invoke(app, ["serve", "--port", "8123", "--workers", "2", "--max-upload-mb", "8",
                                      "--threads", "3"])
    assert result.exit_code == 0, result.output
    (args, kwargs), = calls
    assert args == ("cobbnet.service.app:create_app",)
    assert kwargs["factory"] and kwargs["port"] == 8123 and kwargs["workers"] == 2 and kwargs["host"] == "127.0.0.1"
    assert create_app(object()).state.service.max_upload_bytes == 8 * 2**20
    assert service_app.os.environ[service_app.THREADS_ENV] == "3"


# -- schemathesis: requests made from the OpenAPI document -------------------------------------

try:
    import schemathesis
    from hypothesis import HealthCheck, settings
except ImportError:  # pragma: no cover - the dev extra has them
    schemathesis = None


OPERATIONS = [("POST", "/v1/predict"), ("POST", "/v1/preview"), ("POST", "/v1/angles"), ("POST", "/v1/report"),
              ("GET", "/v1/health"), ("GET", "/v1/model")]


@pytest.fixture(scope="module")
def api_schema(predictor):
    return schemathesis.openapi.from_asgi("/openapi.json", create_app(predictor))


def test_the_fuzzed_operations_are_all_of_them(client):
    doc = client.get("/openapi.json").json()
    assert sorted((m.upper(), p) for p, item in doc["paths"].items() for m in item) == sorted(OPERATIONS)


FUZZ_CASES = [(method, path, mode) for method, path in OPERATIONS
              for mode in (("positive", "negative") if method == "POST" else ("positive",))]


@pytest.mark.skipif(schemathesis is None, reason="schemathesis is not installed (the dev extra has it)")
@pytest.mark.parametrize("method,path,mode", FUZZ_CASES)
@pytest.mark.filterwarnings("ignore:Glyph:UserWarning")  # generated names in characters no font has
def test_requests_from_the_openapi_document_never_get_a_500(api_schema, method, path, mode):
    """Valid and invalid requests, each response checked against the document: no 500,
    documented status codes and content types, bodies that fit their schemas."""
    from hypothesis import given

    operation = api_schema[path][method]

    @given(case=operation.as_strategy(generation_mode=schemathesis.GenerationMode(mode)))
    @settings(max_examples=20, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    def check(case):
        # bytes that fit the document are still not a radiograph, and numbers that fit it
        # not always a spine: those are refused (4xx), which this check would call a fault
        case.call_and_validate(excluded_checks=[schemathesis.checks.positive_data_acceptance])

    check()


@pytest.mark.slow  # starts `cobbnet serve` twice: about a minute
def test_two_workers_serve_concurrent_predictions_and_lose_none():
    from load import run_load  # benchmarks/load.py

    run = run_load(workers=2, requests=6, concurrency=6, image=EXAMPLE, timeout_s=240)
    assert run["statuses"] == {"200": 6} and run["served_identical"] == 6 and run["lost"] == 0, run


def test_report_with_its_radiograph(client, example_result, uploads_dir):
    pytest.importorskip("cobbnet.report.pdf", reason="the PDF report module is not in this build")
    form = {"result": json.dumps(example_result)}
    response = client.post("/v1/report", data=form, files={"file": (EXAMPLE.name, EXAMPLE.read_bytes(), "image/jpeg")})
    assert response.status_code == 200, response.text
    with_image = response.content
    assert with_image.startswith(b"%PDF")
    without = client.post("/v1/report", data=form, files={"other": ("x", b"")}).content
    assert without.startswith(b"%PDF") and len(with_image) > len(without)  # the radiograph is drawn in


def test_report_multipart_errors(client, example_result, uploads_dir):
    good = json.dumps(example_result)
    png = _encoded("PNG")
    small_png = io.BytesIO()
    Image.new("L", (64, 128)).save(small_png, format="PNG")
    cases = [
        ({"result": good}, {"file": ("notes.jpg", b"text", "image/jpeg")}, 400, "unreadable_image"),
        ({"result": good}, {"file": ("scan.gif", b"GIF89a", "image/gif")}, 415, "unsupported_media_type"),
        ({"result": good}, {"file": ("small.png", small_png.getvalue(), "image/png")}, 422, "invalid_request"),
        ({"result": "{not json"}, {"file": ("spine.png", png, "image/png")}, 422, "invalid_request"),
        ({"other": good}, {"file": ("spine.png", png, "image/png")}, 422, "invalid_request"),
    ]
    for data, files, status, code in cases:
        assert_error(client.post("/v1/report", data=data, files=files), status, code)
