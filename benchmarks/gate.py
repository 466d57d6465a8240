"""Calibration of the input gate (cobbnet.infer.gate) on real, synthetic and junk images.

Runs ``check_image`` on every image and, where it passes, the predictor (bundled model by
default) and ``assess``; writes ``benchmarks/results/gate.json`` and ``gate.md``: the share of
the AASCE radiographs rejected (target: none) and uncertain, the same for synthetic
radiographs, the share of junk rejected (target: all), and the measured ranges that the
gate's thresholds rest on.

    python benchmarks/gate.py                       # AASCE (when ../shared has it), synthetic, junk
    python benchmarks/gate.py --synthetic 40 --no-real

Predictor outputs are cached under ``--cache`` (keyed by the image's bytes and the
checkpoint), so a rerun after changing a threshold takes seconds. Junk is generated here
(``junk_images``); sideways radiographs are the real and synthetic ones turned a quarter turn
in memory. Nothing derived from the AASCE images is written except counts and ranges.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
from collections import Counter, defaultdict
from datetime import date
from pathlib import Path

import cv2
import numpy as np

HERE = Path(__file__).resolve().parent
AASCE = HERE.parents[1] / "shared" / "boostnet_labeldata"
SYNTHETIC_SEED = 7
PERCENTILES = (0, 1, 50, 99, 100)


def _noise(rng: np.random.Generator, h: int, w: int, blur: float = 0.0) -> np.ndarray:
    n = rng.normal(0.0, 1.0, (h, w))
    if blur:
        n = cv2.GaussianBlur(n, (0, 0), blur)
    return cv2.normalize(n, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)


def _pink(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Noise with a natural image's 1/f amplitude spectrum."""
    fy, fx = np.meshgrid(np.fft.fftfreq(h), np.fft.fftfreq(w), indexing="ij")
    f = np.hypot(fy, fx)
    f[0, 0] = 1.0
    spectrum = np.fft.fft2(rng.normal(size=(h, w))) / f
    return cv2.normalize(np.real(np.fft.ifft2(spectrum)), None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)


def _shapes(rng: np.random.Generator, h: int, w: int, kind: str) -> np.ndarray:
    img = np.full((h, w), int(rng.integers(0, 80)), np.uint8)
    for _ in range(40):
        x, y = int(rng.integers(0, w)), int(rng.integers(0, h))
        value = int(rng.integers(40, 256))
        if kind == "circles":
            cv2.circle(img, (x, y), int(rng.integers(h // 100 + 2, h // 8)), value, -1)
        elif kind == "rectangles":
            cv2.rectangle(img, (x, y), (x + int(rng.integers(10, w // 2)), y + int(rng.integers(10, h // 4))), value, -1)
        else:
            cv2.line(img, (x, y), (int(rng.integers(0, w)), int(rng.integers(0, h))), value, max(1, w // 100))
    return img


def _text(h: int, w: int) -> np.ndarray:
    """A page of text, black on white."""
    img = np.full((h, w), 245, np.uint8)
    scale = w / 900
    for k, y in enumerate(range(int(60 * scale), h, max(8, int(45 * scale)))):
        cv2.putText(img, f"Line {k}: the quick brown fox jumps over the lazy dog", (int(30 * scale), y),
                    cv2.FONT_HERSHEY_SIMPLEX, scale, 20, max(1, int(2 * scale)), cv2.LINE_AA)
    return img


def junk_images(seed: int = 0, scale: float = 1.0) -> dict[str, np.ndarray]:
    """Generated pictures that are not AP spine radiographs: name -> ``(H, W)`` uint8.

    ``scale`` shrinks the portrait 2000 x 800 px ones (tests use 0.5); the tiny ones stay tiny.
    """
    rng = np.random.default_rng(seed)
    h, w = round(2000 * scale), round(800 * scale)
    jpeg = cv2.imdecode(cv2.imencode(".jpg", rng.integers(0, 256, (h, w), dtype=np.uint8))[1], 0)
    yy, xx = np.mgrid[:h, :w]
    return {
        "blank black": np.zeros((h, w), np.uint8),
        "blank white": np.full((h, w), 255, np.uint8),
        "uniform grey": np.full((h, w), 128, np.uint8),
        "uniform grey, faint noise": np.clip(rng.normal(128, 2, (h, w)), 0, 255).astype(np.uint8),
        "1x1": np.full((1, 1), 77, np.uint8),
        "tiny 64x32": rng.integers(0, 256, (64, 32), dtype=np.uint8),
        "small 200x100": _noise(rng, 200, 100, 3),
        "uniform noise": rng.integers(0, 256, (h, w), dtype=np.uint8),
        "uniform noise, JPEG": jpeg,
        "uniform noise, square": rng.integers(0, 256, (w, w), dtype=np.uint8),
        "uniform noise, landscape": rng.integers(0, 256, (w, h), dtype=np.uint8),
        "gaussian noise": np.clip(rng.normal(128, 40, (h, w)), 0, 255).astype(np.uint8),
        "salt and pepper": ((rng.random((h, w)) < 0.5) * 255).astype(np.uint8),
        "blurred noise (sigma 2)": _noise(rng, h, w, 2 * scale),
        "blurred noise (sigma 6)": _noise(rng, h, w, 6 * scale),
        "blurred noise (sigma 20)": _noise(rng, h, w, 20 * scale),
        "1/f noise": _pink(rng, h, w),
        "vertical gradient": np.tile(np.linspace(0, 255, h)[:, None], (1, w)).astype(np.uint8),
        "horizontal gradient": np.tile(np.linspace(0, 255, w)[None], (h, 1)).astype(np.uint8),
        "checkerboard": (((yy // 50 + xx // 50) % 2) * 255).astype(np.uint8),
        "vertical stripes": (((xx // 40) % 2) * 200 + 20).astype(np.uint8),
        "circles": _shapes(rng, h, w, "circles"),
        "rectangles": _shapes(rng, h, w, "rectangles"),
        "lines": _shapes(rng, h, w, "lines"),
        "page of text": _text(h, w),
        **{f"{kind} with film grain": _grain(rng, _shapes(rng, h, w, kind)) for kind in ("circles", "rectangles", "lines")},
    }


def _grain(rng: np.random.Generator, image: np.ndarray, sigma: float = 4.0) -> np.ndarray:
    return np.clip(image + rng.normal(0.0, sigma, image.shape), 0, 255).astype(np.uint8)


def sideways(image: np.ndarray, k: int = 1) -> np.ndarray:
    return np.ascontiguousarray(np.rot90(image, k))


def _reading_code() -> str:
    """A digest of the code that turns a model's outputs into a reading (the chain, its level
    doubt and threshold, stage 2's views): a cached reading is stale once that code changes."""
    from cobbnet.infer import predict
    from cobbnet.spine import chain, patches

    digest = hashlib.sha256()
    for module in (chain, patches, predict):
        digest.update(Path(module.__file__).read_bytes())
    return digest.hexdigest()[:12]


class CachedPredictor:
    """The predictor's raw chain (landmarks, scores, flags) per image, cached on disk."""

    def __init__(self, checkpoint: str | None, cache: Path):
        from cobbnet.infer.predict import Predictor

        # the gate judged here, not inside the predictor: its rejections would come back as NaN
        # and hide the chain scores that the thresholds are calibrated on
        self.predictor = Predictor(checkpoint, gate=False)
        model = getattr(self.predictor, "model", None)
        ident = json.dumps(model, sort_keys=True, default=str) if isinstance(model, dict) else str(checkpoint)
        ident += "|ungated|level-doubt|" + _reading_code()
        self.tag = hashlib.sha256(ident.encode()).hexdigest()[:12]
        self.model = model if isinstance(model, dict) else {"checkpoint": str(checkpoint)}
        self.cache = cache
        cache.mkdir(parents=True, exist_ok=True)

    def __call__(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray, list[list[str]], str | None]:
        """(landmarks, scores, flags, level doubt or None) of the raw chain."""
        key = hashlib.sha256(image.tobytes() + str(image.shape).encode()).hexdigest()[:24]
        path = self.cache / f"{self.tag}-{key}.json"
        if path.is_file():
            d = json.loads(path.read_text())
            return np.array(d["landmarks"]), np.array(d["scores"]), d["flags"], d["level_doubt"]
        r = self.predictor.predict_arrays([image], [None])[0]  # the raw chain
        flags = [list(f) for f in getattr(r, "flags", None) or [[] for _ in range(17)]]
        doubt = getattr(r, "level_doubt", None)
        path.write_text(json.dumps({"landmarks": np.asarray(r.landmarks).tolist(),
                                    "scores": np.asarray(r.scores).tolist(), "flags": flags,
                                    "level_doubt": doubt}))
        return np.asarray(r.landmarks), np.asarray(r.scores), flags, doubt


def gate_one(image: np.ndarray, predict: CachedPredictor) -> dict:
    """Everything the gate measures on one image, and its verdict."""
    from cobbnet.infer import gate
    from cobbnet.infer.gate import assess, check_image

    H, W = image.shape
    row: dict = {"size": [W, H]}
    if min(H, W) >= gate.MIN_SIDE:
        row.update(contrast=float(gate._probe(image).std()), edge_kurtosis=gate.edge_kurtosis(image),
                   equal_share=gate.equal_share(image), flat_share=gate.flat_share(image),
                   width_per_height=W / H)
    reason = check_image(image)
    if reason is not None:
        return {**row, "status": "rejected", "reason": reason, "stage": "image", "warnings": []}
    lm, scores, flags, doubt = predict(image)
    status, reason, warnings = assess(lm, scores, flags, (W, H), doubt)
    verdict = {"status": status, "reason": reason, "stage": "chain", "warnings": warnings}
    if not np.all(np.isfinite(lm)):
        return {**row, **verdict}
    ratio, angle = gate._steps(lm)
    found = np.array([gate.INTERPOLATED not in f for f in flags])
    if not found.any():
        return {**row, **verdict}
    row.update(chain_score=float(scores[found].sum()) / len(scores),
               mean_score=float(np.mean(scores[found])), min_score=float(np.min(scores[found])),
               sideways_steps=int((angle > gate.SIDEWAYS_STEP_DEG).sum()),
               max_step_ratio=float(ratio.max()), min_step_ratio=float(ratio.min()),
               interpolated=int((~found).sum()), landmarks=lm)
    return {**row, **verdict}


def _angle_errors(rows: list[dict], samples: list) -> dict:
    """Mean SMAPE and max angle error of the AASCE radiographs by status (truth is known)."""
    from cobbnet.spine.cobb import cobb_angles

    by: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for row, s in zip(rows, samples, strict=True):
        if "landmarks" not in row:
            continue
        a, t = cobb_angles(row["landmarks"], s.height).angles, np.asarray(s.angles)
        by[row["status"]].append((100 * np.abs(a - t).sum() / max((a + t).sum(), 1e-9), np.abs(a - t).max()))
    return {k: {"n": len(v), "smape": float(np.mean([x[0] for x in v])),
                "max_angle_error_deg": float(np.mean([x[1] for x in v]))} for k, v in by.items()}


def _ranges(rows: list[dict]) -> dict:
    keys = ("contrast", "edge_kurtosis", "equal_share", "flat_share", "width_per_height", "chain_score", "mean_score", "min_score",
            "sideways_steps", "max_step_ratio", "min_step_ratio", "interpolated")
    out = {}
    for k in keys:
        v = np.array([r[k] for r in rows if k in r], dtype=np.float64)
        if len(v):
            out[k] = dict(zip(("min", "p1", "median", "p99", "max"), np.percentile(v, PERCENTILES).round(3).tolist(), strict=True))
    return out


def _kind(warning: str) -> str:
    """A warning without its particulars: 'low mean detection score 0.41 (...)' -> 'low mean detection score',
    'T1, T2 interpolated between neighbours, ...' -> 'interpolated between neighbours, not detected'."""
    warning = re.sub(r"^(?:[CTLS]\d+,?\s*)+", "", warning)  # the levels a warning starts with
    return re.split(r"[\d(:]| at ", warning, maxsplit=1)[0].strip()


def summarise(group: str, rows: list[dict], names: list[str] | None = None) -> dict:
    counts = Counter(r["status"] for r in rows)
    n = len(rows)
    summary = {"n": n, **{f"share_{s}": counts.get(s, 0) / n if n else 0.0 for s in ("ok", "uncertain", "rejected")},
               "warnings": dict(Counter(_kind(w) for r in rows for w in r["warnings"]).most_common()),
               "ranges": _ranges(rows)}
    if names is not None:  # junk: every verdict by name
        summary["verdicts"] = {name: {"status": r["status"], "stage": r["stage"], "reason": r["reason"]}
                               for name, r in zip(names, rows, strict=True)}
    return summary


def markdown(result: dict) -> str:
    g = result["groups"]
    lines = [f"# Input gate calibration ({result['date']})", "", f"Command: `{result['command']}`", "",
             "| images | n | rejected | uncertain | ok |", "| --- | ---: | ---: | ---: | ---: |"]
    for name, s in g.items():
        lines.append(f"| {name} | {s['n']} | {100 * s['share_rejected']:.1f} % | "
                     f"{100 * s['share_uncertain']:.1f} % | {100 * s['share_ok']:.1f} % |")
    lines += ["", "Measured ranges (min / 1st percentile / median / 99th percentile / max):", ""]
    for name, s in g.items():
        for k, v in s["ranges"].items():
            lines.append(f"- {name}, {k}: " + " / ".join(f"{x:g}" for x in v.values()))
    if "angle_errors" in result:
        lines += ["", "AASCE radiographs by status (the bundled model has seen most of them in training):", ""]
        for k, v in result["angle_errors"].items():
            lines.append(f"- {k}: {v['n']} radiographs, mean SMAPE {v['smape']:.1f}, "
                         f"mean largest angle error {v['max_angle_error_deg']:.1f} deg")
    lines += ["", "Junk, one verdict each:", "", "| junk | status | by | reason |", "| --- | --- | --- | --- |"]
    for name, v in g["junk"]["verdicts"].items():
        lines.append(f"| {name} | {v['status']} | {v['stage']} | {v['reason'] or ''} |")
    for name, s in g.items():
        if s["warnings"]:
            lines += ["", f"Warnings on {name}: " + ", ".join(f"{k} ({n})" for k, n in s["warnings"].items())]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", default=None, help="weights; default: the bundled model")
    parser.add_argument("--synthetic", type=int, default=120, help="synthetic radiographs")
    parser.add_argument("--real", action=argparse.BooleanOptionalAction, default=True,
                        help="the AASCE training radiographs from ../shared, when present")
    parser.add_argument("--data", type=Path, default=AASCE, help="the AASCE boostnet_labeldata folder")
    parser.add_argument("--cache", type=Path, default=Path("/tmp/cobbnet-gate-cache"))
    parser.add_argument("--results", type=Path, default=HERE / "results" / "gate")
    args = parser.parse_args(argv)

    from cobbnet.io.synthetic import synth_sample

    predict = CachedPredictor(args.checkpoint, args.cache)
    groups: dict[str, dict] = {}
    side_rows, side_names = [], []
    result: dict = {"date": date.today().isoformat(), "command": "python benchmarks/gate.py " + " ".join(argv or sys.argv[1:]),
                    "model": predict.model}
    if args.real and (args.data / "data" / "training").is_dir():
        from cobbnet.io.aasce import read_split
        from cobbnet.io.images import read_image

        samples = read_split(args.data, "training")
        rows = []
        for i, s in enumerate(samples):
            image = read_image(args.data / "data" / "training" / s.name)
            rows.append(gate_one(image, predict))
            if i % 4 == 0:
                side_rows.append(gate_one(sideways(image, 1 if i % 8 else -1), predict))
                side_names.append(f"sideways AASCE radiograph {i}")
        groups["AASCE radiographs"] = summarise("real", rows)
        groups["AASCE radiographs"]["rejected_names"] = [s.name for r, s in zip(rows, samples, strict=True) if r["status"] == "rejected"]
        result["angle_errors"] = _angle_errors(rows, samples)
    rows = []
    for i in range(args.synthetic):
        _, image, _ = synth_sample(i, SYNTHETIC_SEED)
        rows.append(gate_one(image, predict))
        if i % 3 == 0:
            side_rows.append(gate_one(sideways(image), predict))
            side_names.append(f"sideways synthetic radiograph {i}")
    groups["synthetic radiographs"] = summarise("synthetic", rows)
    junk = {**junk_images(0), **{f"{k}, half size": v for k, v in junk_images(1, scale=0.5).items()}}
    junk_rows = [gate_one(image, predict) for image in junk.values()]
    groups["junk"] = summarise("junk", junk_rows + side_rows, list(junk) + side_names)
    result["groups"] = groups
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    args.results.with_suffix(".md").write_text(markdown(result))
    for name, s in groups.items():
        print(f"{name}: {s['n']} images, rejected {100 * s['share_rejected']:.1f} %, "
              f"uncertain {100 * s['share_uncertain']:.1f} %")
    return result


if __name__ == "__main__":
    main()
