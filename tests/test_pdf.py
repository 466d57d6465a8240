"""The one-page PDF report: rendered to PNG, its text and its overlay checked."""

from __future__ import annotations

import datetime as dt
from types import SimpleNamespace

import numpy as np
import pytest

pdfium = pytest.importorskip("pypdfium2")

from cobbnet import __version__  # noqa: E402
from cobbnet.io.synthetic import make_radiograph  # noqa: E402
from cobbnet.report.overlay import REGION_COLOURS  # noqa: E402
from cobbnet.report.pdf import DISCLAIMER, report_pdf, write_report  # noqa: E402
from cobbnet.report.result import result_record  # noqa: E402
from cobbnet.spine.cobb import cobb_angles  # noqa: E402

DATE = dt.date(2026, 12, 2)
MODEL = {"name": "cobbnet-hrnet-test", "sha256": "ab" * 32, "engine": "onnxruntime"}
A4_PT = (595, 842)


@pytest.fixture(scope="module")
def case():
    """A synthetic radiograph ``(H, W)`` and its result record, three vertebrae doubtful."""
    image, lm = make_radiograph(np.random.default_rng(5))
    scores = np.full(17, 0.9)
    scores[:3] = 0.1
    pred = SimpleNamespace(
        name="scans/case 5.jpg", landmarks=lm, scores=scores, cobb=cobb_angles(lm, image.shape[0]),
        image_size=(image.shape[1], image.shape[0]), status="uncertain", reason=None,
        flags=[["low_confidence"] if s < 0.3 else [] for s in scores], model=MODEL,
        warnings=["T1, T2, T3 below confidence 0.3: check the upper thoracic levels"])
    return image, result_record(pred)


def _render(data: bytes):
    """(text, RGB array) of the only page of a PDF."""
    doc = pdfium.PdfDocument(data)
    assert len(doc) == 1
    page = doc[0]
    assert tuple(round(v) for v in page.get_size()) == A4_PT
    text = page.get_textpage().get_text_range()
    rgb = np.asarray(page.render(scale=1.5).to_pil().convert("RGB"))
    return " ".join(text.split()), rgb


def _near(rgb: np.ndarray, colour: tuple[int, int, int], tol: int = 30) -> int:
    return int((np.abs(rgb.astype(int) - np.array(colour)) <= tol).all(axis=-1).sum())


def test_report_page_has_the_overlay_table_model_date_and_disclaimer(case):
    image, record = case
    data = report_pdf(record, image, date=DATE)
    assert data[:5] == b"%PDF-"
    text, rgb = _render(data)
    assert "scans/case 5.jpg" in text
    assert "2026-12-02" in text
    assert MODEL["name"] in text and "abababababab" in text and "onnxruntime" in text
    assert f"cobbnet {__version__}" in text and "schema 1.0" in text
    assert " ".join(DISCLAIMER.split()) in text
    assert "status: uncertain" in text
    for curve in record["curves"]:  # the curves table
        row = (f"{curve['region'].capitalize()} {curve['cobb_angle']:.1f}° "
               f"{curve['upper_end_vertebra']}–{curve['lower_end_vertebra']} {curve['apex']} "
               f"patient {curve['convexity']['patient']}")
        assert row in text, row
    for k in (1, 2, 3):
        assert f"angle {k}: {record['challenge'][f'angle_{k}']['degrees']:.1f}°" in text
    assert "low confidence: T1, T2, T3" in text
    assert record["warnings"][0].split(":")[0] in text
    assert not {"PT", "MT", "TL"} & set(text.replace(",", " ").split())
    # the overlay is drawn: each curve's colour appears on the page (tags, brackets, swatches)
    for curve in record["curves"]:
        assert _near(rgb, REGION_COLOURS[curve["region"]]) > 50, curve["region"]


def test_report_without_an_image_or_for_a_rejected_radiograph():
    pred = SimpleNamespace(name="blank.png", image_size=(300, 600), status="rejected",
                           reason="no spine found", landmarks=None, scores=None, cobb=None,
                           warnings=[], model=MODEL)
    text, rgb = _render(report_pdf(result_record(pred), None, date=DATE))
    assert "No overlay: no spine found" in text and "No curve measured." in text
    assert "status: rejected (no spine found)" in text
    assert " ".join(DISCLAIMER.split()) in text
    assert all(_near(rgb, c) == 0 for c in REGION_COLOURS.values())


def test_write_report_is_atomic(case, tmp_path):
    image, record = case
    path = write_report(record, image, tmp_path / "out" / "case.pdf")
    assert path.read_bytes()[:5] == b"%PDF-"
    assert [p.name for p in path.parent.iterdir()] == ["case.pdf"]
    broken = {**record, "input": None}  # the page cannot be laid out: nothing is written
    with pytest.raises(TypeError):
        write_report(broken, image, tmp_path / "out" / "broken.pdf")
    assert [p.name for p in path.parent.iterdir()] == ["case.pdf"]
