"""The result JSON (version 1) and its JSON Schema: every record the project writes validates."""

from __future__ import annotations

import dataclasses
import json
from importlib import resources
from types import SimpleNamespace

import numpy as np
import pytest

pytest.importorskip("jsonschema")

from cobbnet import __version__  # noqa: E402
from cobbnet.io.synthetic import make_radiograph  # noqa: E402
from cobbnet.report.result import (  # noqa: E402
    CHALLENGE_DESCRIPTION,
    UNITS,
    challenge_record,
    curves_record,
    result_record,
    schema,
    validate_result,
)
from cobbnet.spine.cobb import REGIONS, cobb_angles  # noqa: E402
from cobbnet.spine.landmarks import LEVELS  # noqa: E402

KEYS = ["schema_version", "cobbnet_version", "model", "input", "units", "status", "reason",
        "curves", "vertebrae", "challenge", "warnings"]
MODEL = {"name": "cobbnet-test", "sha256": "0" * 64, "engine": "onnxruntime"}
CHALLENGE_ONLY = {"pt", "mt", "tl", "PT", "MT", "TL"}


def _spine(seed: int):
    image, lm = make_radiograph(np.random.default_rng(seed))
    return image, lm, cobb_angles(lm, image.shape[0])


@pytest.fixture(scope="module", params=[0, 1, 2, 3])
def old_prediction(request):
    """What the Prediction of cobbnet 0.1 has: name, landmarks, scores, cobb, image_size."""
    image, lm, cobb = _spine(request.param)
    return SimpleNamespace(name=f"case-{request.param}.jpg", landmarks=lm,
                           scores=np.linspace(0.05, 0.95, 17), cobb=cobb,
                           image_size=(image.shape[1], image.shape[0]))


def _full(old: SimpleNamespace, **extra) -> SimpleNamespace:
    """The Prediction of the schema: with flags, status, reason, warnings and model."""
    flags = [["low_confidence"] if s < 0.3 else [] for s in old.scores]
    flags[8] = ["interpolated"]
    base = dict(vars(old), flags=flags, status="uncertain", reason=None,
                warnings=["T1-T4 below confidence 0.3"], model=MODEL)
    return SimpleNamespace(**{**base, **extra})


def _keys(obj, path: str = "$"):
    """Every (path, key) of a JSON value."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield path, k
            yield from _keys(v, f"{path}.{k}")
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _keys(v, f"{path}[{i}]")


def _check(record: dict) -> None:
    """Valid, JSON-serialisable as it is, keys in order, no challenge keys outside challenge."""
    validate_result(json.loads(json.dumps(record)))
    assert list(record) == KEYS
    stray = [(p, k) for p, k in _keys(record) if k in CHALLENGE_ONLY and not p.startswith("$.challenge")]
    assert not stray


def test_old_prediction_validates(old_prediction):
    rec = result_record(old_prediction)
    _check(rec)
    assert rec["status"] == "ok" and rec["reason"] is None and rec["warnings"] == []
    assert rec["model"] is None and rec["cobbnet_version"] == __version__
    assert rec["input"] == {"path": old_prediction.name, "width": old_prediction.image_size[0],
                            "height": old_prediction.image_size[1]}
    assert [v["level"] for v in rec["vertebrae"]] == list(LEVELS)
    assert all(v["flags"] == [] for v in rec["vertebrae"])


def test_full_prediction_validates_with_flags_and_model(old_prediction):
    pred = _full(old_prediction)
    rec = result_record(pred)
    _check(rec)
    assert rec["model"] == MODEL and rec["status"] == "uncertain"
    assert rec["vertebrae"][8]["flags"] == ["interpolated"]
    assert rec["vertebrae"][0]["flags"] == ["low_confidence"]
    assert rec["warnings"] == pred.warnings


def test_rounding(old_prediction):
    rec = result_record(old_prediction)
    lm, scores = old_prediction.landmarks, old_prediction.scores
    np.testing.assert_allclose(np.array([v["corners"] for v in rec["vertebrae"]]), lm, atol=0.05 + 1e-9)
    np.testing.assert_allclose([v["score"] for v in rec["vertebrae"]], scores, atol=5e-4 + 1e-9)
    for v in rec["vertebrae"]:
        for x, y in v["corners"]:
            assert round(x, 1) == x and round(y, 1) == y
    for k, a in enumerate(old_prediction.cobb.angles):
        assert rec["challenge"][f"angle_{k + 1}"]["degrees"] == round(float(a), 1)


def test_curves_by_region_one_major_and_patient_side(old_prediction):
    cobb = old_prediction.cobb
    curves = curves_record(cobb)
    assert len(curves) == len(cobb.curves) >= 1
    assert [c["major"] for c in curves].count(True) == 1
    major = next(c for c in curves if c["major"])
    assert major["cobb_angle"] == max(c["cobb_angle"] for c in curves)
    assert major["cobb_angle"] == round(float(np.nanmax(cobb.angles)), 1)  # angle 1 is the major
    for c, curve in zip(curves, cobb.curves, strict=True):
        assert c["region"] in REGIONS and c["region"] == curve.region
        assert (c["upper_end_vertebra"], c["lower_end_vertebra"], c["apex"]) == curve.levels
        assert c["convexity"]["image"] == curve.convex_to.removeprefix("image ")
        assert c["convexity"]["patient"] == {"left": "right", "right": "left"}[c["convexity"]["image"]]
    ups = [LEVELS.index(c["upper_end_vertebra"]) for c in curves]
    assert ups == sorted(ups)  # top to bottom


def test_challenge_record_keeps_the_challenge_order(old_prediction):
    cobb = old_prediction.cobb
    ch = challenge_record(cobb)
    assert ch["description"] == CHALLENGE_DESCRIPTION
    assert list(ch) == ["description", "angle_1", "angle_2", "angle_3"]
    for k, (a, b) in enumerate(cobb.pairs):
        assert (ch[f"angle_{k + 1}"]["upper_end_vertebra"], ch[f"angle_{k + 1}"]["lower_end_vertebra"]) == (
            LEVELS[a], LEVELS[b])


def test_rejected_record(old_prediction):
    pred = SimpleNamespace(name="blank.png", image_size=(300, 600), status="rejected",
                           reason="no spine found: 3 of 17 vertebrae detected", landmarks=None,
                           scores=None, cobb=None, warnings=[], model=MODEL)
    rec = result_record(pred)
    _check(rec)
    assert rec["curves"] == [] and rec["vertebrae"] == [] and rec["challenge"] is None
    # a rejected prediction that still has landmarks records none of them
    rec = result_record(_full(old_prediction, status="rejected", reason="not an AP spine radiograph"))
    _check(rec)
    assert rec["curves"] == [] and rec["vertebrae"] == []


def test_array_input_has_a_null_path(old_prediction):
    rec = result_record(_full(old_prediction, name=None))
    _check(rec)
    assert rec["input"]["path"] is None


@pytest.mark.parametrize(("mutate", "where"), [
    (lambda r: r["curves"][0].update(cobb_angle=-1.0), "$.curves[0].cobb_angle"),
    (lambda r: r["curves"][0].update(region="PT"), "$.curves[0].region"),
    (lambda r: r["vertebrae"][3].update(level="T9"), "$.vertebrae[3].level"),
    (lambda r: r["vertebrae"].pop(), "$.vertebrae"),
    (lambda r: r["vertebrae"][0]["corners"].pop(), "$.vertebrae[0].corners"),
    (lambda r: r.update(pt=12.0), "$"),
    (lambda r: r.update(status="maybe"), "$.status"),
    (lambda r: r.update(reason="why"), "$.reason"),
    (lambda r: r["model"].update(sha256="xyz"), "$.model"),
    (lambda r: [c.update(major=True) for c in r["curves"]], "$.curves"),
    (lambda r: r["challenge"]["angle_1"].update(degrees="big"), "$.challenge"),
    (lambda r: r["input"].update(width=0), "$.input.width"),
])
def test_violations_name_their_path(mutate, where):
    _, lm, cobb = _spine(1)
    assert len(cobb.curves) >= 2  # so that marking every curve major is a violation
    rec = result_record(_full(SimpleNamespace(name="a.jpg", landmarks=lm, scores=np.full(17, 0.9),
                                              cobb=cobb, image_size=(600, 1500)), status="ok"))
    validate_result(rec)
    mutate(rec)
    with pytest.raises(ValueError, match=r"result JSON at (\S+):") as err:
        validate_result(rec)
    assert str(err.value).startswith(f"result JSON at {where}"), str(err.value)


def test_schema_ships_in_the_package_and_matches_the_code():
    shipped = json.loads(resources.files("cobbnet.report").joinpath("result.schema.json").read_text())
    assert shipped == schema()
    assert shipped["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert shipped["properties"]["schema_version"]["const"] == "1.0"
    assert shipped["$defs"]["level"]["enum"] == list(LEVELS)
    assert shipped["$defs"]["curve"]["properties"]["region"]["enum"] == list(REGIONS)
    assert shipped["properties"]["units"]["const"] == UNITS
    assert list(shipped["required"]) == KEYS
    levels = [item["properties"]["level"]["const"] for item in shipped["properties"]["vertebrae"]["prefixItems"]]
    assert levels == list(LEVELS)


def test_the_predictor_prediction_class_validates(old_prediction):
    """``Prediction.as_dict()`` of the real class is a valid record."""
    from cobbnet.infer.predict import Prediction

    names = {f.name for f in dataclasses.fields(Prediction)}
    values = {**vars(_full(old_prediction, status="ok")), "image": None}
    pred = Prediction(**{k: v for k, v in values.items() if k in names})
    _check(pred.as_dict())


def test_cobbnet_predict_writes_valid_results_and_a_report(tmp_path):
    """The JSON that ``cobbnet predict`` writes with the bundled model validates."""
    from typer.testing import CliRunner

    from cobbnet.cli import app

    example = resources.files("cobbnet") / "examples" / "synthetic-spine.jpg"
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["predict", str(example), "--out", str(out), "--report"])
    assert result.exit_code == 0, result.output
    (json_file,) = sorted(out.glob("*.json"))
    record = json.loads(json_file.read_text())
    _check(record)
    assert record["model"] is not None and record["input"]["path"] == str(example)
    (pdf,) = sorted(out.glob("*.pdf"))
    assert pdf.read_bytes()[:5] == b"%PDF-"
