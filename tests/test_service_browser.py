"""The correction page in a real browser: Debian's Chromium driven by Playwright.

Needs /usr/bin/chromium (``.ci/run`` installs it with apt when it is missing) and the
``playwright`` package; never Playwright's own browser download. Skips, saying why, without them.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
LAPTOP = {"width": 1366, "height": 768}

if not CHROMIUM.is_file():
    pytest.skip(f"{CHROMIUM} not found (apt-get install -y chromium)", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
uvicorn = pytest.importorskip("uvicorn", reason="the serve extra is not installed: pip install 'cobbnet[serve]'")

from cobbnet.infer.bundle import example_path  # noqa: E402
from cobbnet.service.app import create_app  # noqa: E402


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def base_url():
    """The service on 127.0.0.1 in a thread, with the bundled model loaded once."""
    from cobbnet.infer.predict import Predictor

    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(Predictor()), host="127.0.0.1", port=port,
                                           log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the service did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture
def page(browser, base_url):
    """A fresh page at a laptop's size; fails the test on a script error or a foreign request."""
    context = browser.new_context(viewport=LAPTOP, accept_downloads=True)
    page = context.new_page()
    problems: list[str] = []
    page.on("pageerror", lambda err: problems.append(f"script error: {err}"))
    page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
    page.on("request", lambda r: problems.append(f"foreign request: {r.url}")
            if not r.url.startswith((base_url, "blob:", "data:")) else None)
    page.goto(base_url + "/")
    page.problems = problems  # a test that provokes an error takes its own entry out
    yield page
    context.close()
    assert not problems, problems


def _open_example(page) -> dict:
    with page.expect_response("**/v1/predict") as predicted:
        page.set_input_files("#file", str(example_path()))
    result = predicted.value.json()
    page.wait_for_function("document.querySelectorAll('#outlines polygon').length === 17")
    page.wait_for_function("document.body.dataset.pending === '0'")
    return result


def _table(page) -> dict:
    """What the curves and challenge tables show."""
    return page.evaluate("""() => ({
        curves: [...document.querySelectorAll('#curves tbody tr[data-region]')].map(r => ({
            region: r.dataset.region,
            cobb: r.querySelector('[data-key=cobb_angle]').textContent,
            ends: r.querySelector('[data-key=ends]').textContent,
            apex: r.querySelector('[data-key=apex]').textContent,
            convexity: r.querySelector('[data-key=convexity]').textContent})),
        challenge: [...document.querySelectorAll('#challenge tbody tr')].map(r =>
            r.querySelector('[data-key=degrees]').textContent + ' ' + r.querySelector('[data-key=ends]').textContent),
    })""")


def _expected_table(answer: dict) -> dict:
    """What the tables must show for a /v1/angles answer."""
    curves = [{"region": c["region"], "cobb": f"{c['cobb_angle']:.1f}°",
               "ends": f"{c['upper_end_vertebra']}–{c['lower_end_vertebra']}", "apex": c["apex"],
               "convexity": c["convexity"]["patient"]} for c in answer["curves"]]
    challenge = []
    for key in ("angle_1", "angle_2", "angle_3"):
        a = answer["challenge"][key]
        degrees = "undefined" if a["degrees"] is None else f"{a['degrees']:.1f}°"
        challenge.append(f"{degrees} {a['upper_end_vertebra']}–{a['lower_end_vertebra']}")
    return {"curves": curves, "challenge": challenge}


def _corners(page) -> list:
    return page.evaluate("window.cobbnet.state.corners")


def test_upload_drag_a_corner_and_the_table_follows(page, tmp_path):
    result = _open_example(page)
    assert page.locator("#outlines polygon").count() == 17
    assert page.locator("#handles circle").count() == 68
    assert page.locator("#endlines line").count() == 2 * len(result["curves"])
    assert _table(page) == _expected_table(result)

    # drag the top-left corner of the major curve's upper end vertebra 40 screen px down
    major = next(c for c in result["curves"] if c["major"])
    v = ["T1", "T2", "T3", "T4", "T5", "T6", "T7", "T8", "T9", "T10", "T11", "T12",
         "L1", "L2", "L3", "L4", "L5"].index(major["upper_end_vertebra"])
    handle = page.locator(f"#handles circle[data-v='{v}'][data-c='0']")
    box = handle.bounding_box()
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    answers = []
    page.on("response", lambda r: answers.append(r) if r.url.endswith("/v1/angles") else None)
    page.mouse.move(x, y)
    page.mouse.down()
    for k in range(1, 9):
        page.mouse.move(x, y + 5 * k)
    page.mouse.up()
    page.wait_for_function("document.body.dataset.pending === '0'")
    assert answers, "dragging sent no /v1/angles request"
    last = answers[-1].json()
    assert _table(page) == _expected_table(last)
    moved = _corners(page)[v][0]
    before = result["vertebrae"][v]["corners"][0]
    assert moved[1] > before[1] + 10 and abs(moved[0] - before[0]) < 2
    # what the page sent is what /v1/angles answered for
    sent = json.loads(answers[-1].request.post_data)
    assert sent["landmarks"] == _corners(page) and sent["height"] == result["input"]["height"]
    page.screenshot(path=str(tmp_path / "corrected.png"))
    assert (tmp_path / "corrected.png").stat().st_size > 10_000

    # undo puts the corner back, and the tables follow again
    page.keyboard.press("Control+z")
    page.wait_for_function("document.body.dataset.pending === '0'")
    assert _corners(page)[v][0] == before
    assert _table(page) == _expected_table(answers[-1].json())


def test_keyboard_moves_a_corner_and_downloads_carry_the_correction(page, tmp_path):
    from cobbnet.report.overlay import BATCH_CSV_COLUMNS, _csv_text, batch_csv_row
    from cobbnet.report.result import validate_result

    result = _open_example(page)
    handle = page.locator("#handles circle[data-v='10'][data-c='3']")  # T11 bottom-right
    handle.focus()
    before = result["vertebrae"][10]["corners"][3]
    page.keyboard.press("Shift+ArrowRight")
    page.keyboard.press("ArrowDown")
    page.wait_for_function("document.body.dataset.pending === '0'")
    assert _corners(page)[10][3] == pytest.approx([before[0] + 10, before[1] + 1])
    assert "T11" in page.locator("#vertebrae tr[data-level='T11']").inner_text()
    assert "corrected" in page.locator("#vertebrae tr[data-level='T11']").inner_text()

    with page.expect_download() as got:
        page.click("#download-json")
    corrected = json.loads(Path(got.value.path()).read_text())
    validate_result(corrected)
    assert corrected["vertebrae"][10]["corners"][3] == pytest.approx([before[0] + 10, before[1] + 1])
    assert corrected["warnings"][-1].startswith("corners corrected by hand: T11")
    assert got.value.suggested_filename == "synthetic-spine-corrected.json"

    with page.expect_download() as got:
        page.click("#download-csv")
    assert Path(got.value.path()).read_text() == _csv_text(BATCH_CSV_COLUMNS, [batch_csv_row(corrected)])

    with page.expect_download(timeout=60_000) as got:
        page.click("#download-pdf")
    assert Path(got.value.path()).read_bytes()[:5] == b"%PDF-"


def test_flagged_vertebrae_stand_out_and_errors_show(page, base_url):
    # a result with flagged vertebrae, served in place of the model's answer
    result = json.loads(page.request.post(base_url + "/v1/predict", multipart={"file": {
        "name": "synthetic-spine.jpg", "mimeType": "image/jpeg", "buffer": example_path().read_bytes()}}).text())
    for vertebra in result["vertebrae"]:  # exactly the two flags below, whatever the model flagged
        vertebra["flags"] = []
    result["vertebrae"][2]["flags"] = ["low_confidence"]
    result["vertebrae"][8]["flags"] = ["interpolated"]
    page.route("**/v1/predict", lambda route: route.fulfill(status=200, content_type="application/json",
                                                            body=json.dumps(result)))
    page.set_input_files("#file", str(example_path()))
    page.wait_for_function("document.querySelectorAll('#outlines polygon').length === 17")
    flagged = page.eval_on_selector_all("#outlines polygon.flagged", "ps => ps.map(p => p.dataset.level)")
    assert flagged == ["T3", "T9"]
    assert page.eval_on_selector_all("#vertebrae tr.flagged", "rs => rs.map(r => r.dataset.level)") == ["T3", "T9"]
    assert "interpolated" in page.locator("#vertebrae tr[data-level='T9']").inner_text()
    page.unroute("**/v1/predict")

    # a file that is not an image: the service's one-line message, shown as an alert
    page.set_input_files("#file", files=[{"name": "notes.jpg", "mimeType": "image/jpeg", "buffer": b"not an image"}])
    page.wait_for_selector("#alert:not([hidden])")
    assert page.locator("#alert").inner_text().startswith("notes.jpg: cannot decode image")
    page.problems.remove("console error: Failed to load resource: the server responded with a status of 400 (Bad Request)")


def test_zoom_and_pan_change_the_view_only(page):
    _open_example(page)
    corners = _corners(page)
    view = page.evaluate("window.cobbnet.state.view")
    page.keyboard.press("+")
    zoomed = page.evaluate("window.cobbnet.state.view")
    assert zoomed["w"] == pytest.approx(view["w"] / 1.25)
    box = page.locator("#viewer").bounding_box()
    page.mouse.move(box["x"] + 40, box["y"] + 40)  # a corner of the viewer, away from the spine
    page.mouse.down()
    page.mouse.move(box["x"] + 140, box["y"] + 90)
    page.mouse.up()
    panned = page.evaluate("window.cobbnet.state.view")
    assert panned["x"] < zoomed["x"] and panned["y"] < zoomed["y"]
    page.keyboard.press("0")
    assert page.evaluate("window.cobbnet.state.view") == pytest.approx(view)
    assert _corners(page) == corners


def test_a_dropped_file_is_read(page):
    data = list(example_path().read_bytes())
    transfer = page.evaluate_handle("""(bytes) => {
        const t = new DataTransfer();
        t.items.add(new File([new Uint8Array(bytes)], 'dropped.jpg', {type: 'image/jpeg'}));
        return t;
    }""", data)
    page.dispatch_event("#viewer", "dragenter", {"dataTransfer": transfer})
    assert page.locator("#drop").is_visible()
    page.dispatch_event("#viewer", "drop", {"dataTransfer": transfer})
    page.wait_for_function("document.querySelectorAll('#outlines polygon').length === 17")
    assert page.locator("#drop").is_hidden()
    assert page.evaluate("window.cobbnet.state.result.input.path") == "dropped.jpg"


def test_a_tiff_is_shown_through_the_preview(page, tmp_path):
    from PIL import Image

    from cobbnet.io.images import read_image

    tiff = tmp_path / "spine.tif"
    Image.fromarray(read_image(example_path())).save(tiff)
    with page.expect_response("**/v1/preview") as preview:
        page.set_input_files("#file", str(tiff))
    assert preview.value.status == 200 and preview.value.headers["content-type"] == "image/png"
    page.wait_for_function("document.querySelectorAll('#outlines polygon').length === 17")
    assert page.get_attribute("#radiograph", "href").startswith("blob:")
    assert page.get_attribute("#radiograph", "height") == "1980"


def test_a_rejected_image_says_why(page, tmp_path):
    from PIL import Image

    blank = tmp_path / "blank.png"
    Image.new("L", (300, 800), 128).save(blank)
    page.set_input_files("#file", str(blank))
    page.wait_for_selector("#alert:not([hidden])")
    assert page.locator("#alert").inner_text().startswith("blank or uniform image")
    assert "rejected" in page.locator("#status").inner_text()
    assert page.locator("#outlines polygon").count() == 0
    assert page.locator("#curves tbody").inner_text().strip() == "no curve measured"
