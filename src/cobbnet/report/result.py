"""The result JSON, version 1: what ``cobbnet predict`` writes for each radiograph.

``result_record(prediction)`` builds it; ``result.schema.json`` beside this module is its
contract (JSON Schema, draft 2020-12) and ``validate_result`` checks a record against it.
Curves are named by region (proximal thoracic, main thoracic, thoracolumbar/lumbar); the
AASCE 2019 challenge's three values, which are not regions, sit apart in ``challenge``.

Numbers are rounded once, here: angles to 0.1 degree, coordinates to 0.1 px, scores to 0.001.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from cobbnet.spine.cobb import CobbResult
from cobbnet.spine.landmarks import LEVELS

SCHEMA_VERSION = "1.0"
SCHEMA_PATH = Path(__file__).with_name("result.schema.json")
UNITS = {"angle": "degree", "length": "pixel",
         "coordinates": "[x, y] from the top-left corner of the image"}
CHALLENGE_DESCRIPTION = ("AASCE 2019 challenge angles: angle_1 is the largest Cobb angle; "
                         "angle_2 and angle_3 follow the challenge's rules")
CHALLENGE_KEYS = ("angle_1", "angle_2", "angle_3")
# An AP radiograph is displayed as if facing the patient: the image's right is the patient's left.
PATIENT_SIDE = {"right": "left", "left": "right"}
STATUSES = ("ok", "uncertain", "rejected")


def _angle(value: float) -> float | None:
    """Degrees rounded to 0.1; None for an undefined (NaN) angle."""
    return None if not np.isfinite(value) else round(float(value), 1)


def _image_side(curve: Any) -> str:
    """``"right"`` or ``"left"``: the side of the image a curve is convex to."""
    side = getattr(curve, "side", None) or curve.convex_to  # "image right" / "image left"
    return side.removeprefix("image ").strip()


def curves_record(cobb: CobbResult) -> list[dict]:
    """The curves of a spine by region, top to bottom; the largest is the major one.

    Each: region, cobb_angle (0.1 degree), end vertebrae, apex, convexity on the image and
    on the patient, and ``major`` (true for exactly one curve when there is any).
    """
    curves = cobb.curves
    major = int(np.argmax([c.angle for c in curves])) if curves else -1  # first of equals
    out = []
    for k, c in enumerate(curves):
        side = _image_side(c)
        out.append({
            "region": c.region,
            "cobb_angle": _angle(c.angle),
            "upper_end_vertebra": LEVELS[c.upper],
            "lower_end_vertebra": LEVELS[c.lower],
            "apex": LEVELS[c.apex],
            "convexity": {"image": side, "patient": PATIENT_SIDE[side]},
            "major": k == major,
        })
    return out


def challenge_record(cobb: CobbResult) -> dict:
    """The challenge's three angles ``cobb.angles (3,)`` with their vertebrae ``cobb.pairs (3, 2)``."""
    record: dict[str, Any] = {"description": CHALLENGE_DESCRIPTION}
    for key, angle, (a, b) in zip(CHALLENGE_KEYS, cobb.angles, cobb.pairs, strict=True):
        record[key] = {"degrees": _angle(angle), "upper_end_vertebra": LEVELS[int(a)],
                       "lower_end_vertebra": LEVELS[int(b)]}
    return record


def _vertebrae(landmarks: np.ndarray, scores: np.ndarray | None, flags: Any) -> list[dict]:
    """17 entries T1..L5: corners ``(4, 2)`` TL, TR, BL, BR at 0.1 px, score, flags."""
    lm = np.asarray(landmarks, dtype=np.float64).reshape(len(LEVELS), 4, 2)
    sc = None if scores is None else np.asarray(scores, dtype=np.float64).reshape(len(LEVELS))
    flags = flags if flags is not None else [[] for _ in LEVELS]
    return [{"level": level,
             "corners": [[round(float(x), 1), round(float(y), 1)] for x, y in quad],
             "score": None if sc is None else round(float(sc[i]), 3),
             "flags": [str(f) for f in flags[i]]}
            for i, (level, quad) in enumerate(zip(LEVELS, lm, strict=True))]


def result_record(prediction: Any) -> dict:
    """The result JSON of one radiograph (version 1), keys in the schema's order.

    ``prediction`` is a :class:`cobbnet.infer.predict.Prediction`: ``name``, ``landmarks
    (17, 4, 2)``, ``scores (17,)``, ``cobb`` (CobbResult), ``image_size (width, height)`` and,
    where it has them, ``flags`` (17 lists), ``status``, ``reason``, ``warnings`` and ``model``
    ({"name", "sha256", "engine"}); missing ones read as no flags, "ok", no warnings and null.
    """
    from cobbnet import __version__

    status = getattr(prediction, "status", None) or "ok"
    if status not in STATUSES:
        raise ValueError(f"status {status!r}: expected one of {', '.join(STATUSES)}")
    rejected = status == "rejected"
    width, height = (int(v) for v in prediction.image_size)
    model = getattr(prediction, "model", None)
    cobb = getattr(prediction, "cobb", None)
    landmarks = getattr(prediction, "landmarks", None)
    measured = not rejected and cobb is not None and landmarks is not None
    return {
        "schema_version": SCHEMA_VERSION,
        "cobbnet_version": __version__,
        "model": None if model is None else {k: model.get(k) for k in ("name", "sha256", "engine")},
        "input": {"path": None if prediction.name is None else str(prediction.name),
                  "width": width, "height": height},
        "units": dict(UNITS),
        "status": status,
        "reason": getattr(prediction, "reason", None),
        "curves": curves_record(cobb) if measured else [],
        "vertebrae": _vertebrae(landmarks, getattr(prediction, "scores", None),
                                getattr(prediction, "flags", None)) if measured else [],
        "challenge": challenge_record(cobb) if measured else None,
        "warnings": [str(w) for w in getattr(prediction, "warnings", None) or []],
    }


@lru_cache(maxsize=1)
def schema() -> dict:
    """The result JSON Schema shipped in the package."""
    return json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))


def _where(path: Any) -> str:
    """A JSON path like ``$.curves[0].cobb_angle`` from jsonschema's deque of keys."""
    return "$" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path)


def validate_result(d: dict) -> None:
    """Raise ValueError naming the path of the first violation if ``d`` breaks the schema.

    Needs the ``jsonschema`` package (in the dev extra).
    """
    try:
        import jsonschema
    except ImportError:
        raise ImportError("validate_result needs jsonschema: pip install 'cobbnet[dev]'") from None
    error = jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(schema()).iter_errors(d))
    if error is not None:
        raise ValueError(f"result JSON at {_where(error.absolute_path)}: {error.message}")
