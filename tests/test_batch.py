"""The batch run of ``cobbnet predict`` (cobbnet.infer.batch): names that never collide, no
input ever replaced, --out checked first, results.csv that survives an interruption, --resume.

A stand-in predictor (the spine each synthetic radiograph was drawn with, score 0.6 each)
keeps these tests about files, not the network; tests/test_cli.py runs the real model.
"""

from __future__ import annotations

import csv
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from cobbnet.errors import InputError
from cobbnet.infer import batch
from cobbnet.infer.batch import Options
from cobbnet.io.synthetic import make_radiograph
from cobbnet.report.overlay import BATCH_CSV_COLUMNS
from cobbnet.report.result import result_record
from cobbnet.spine.cobb import cobb_angles

SIZE = (576, 272)  # (H, W): passes the gate, small enough to be quick


@dataclass
class FakePrediction:
    name: str | None
    landmarks: np.ndarray
    scores: np.ndarray
    cobb: Any
    image_size: tuple[int, int]
    flags: list = field(default_factory=lambda: [[] for _ in range(17)])
    status: str = "ok"
    reason: str | None = None
    warnings: list = field(default_factory=list)
    model: dict = field(default_factory=lambda: {"name": "fake", "sha256": "0" * 64, "engine": "none"})

    def as_dict(self) -> dict:
        return result_record(self)


class FakePredictor:
    """Predicts a fixed well-formed spine scaled to each image; can stop the run on purpose."""

    mode = "fake"
    model = {"name": "fake", "sha256": "0" * 64, "engine": "none"}

    def __init__(self, interrupt_after: int | None = None):
        self.calls: list[list[str]] = []
        self.interrupt_after = interrupt_after
        _, self.lm = make_radiograph(np.random.default_rng(0), size=SIZE)

    def predict_arrays(self, images, names):
        if self.interrupt_after is not None and sum(map(len, self.calls)) >= self.interrupt_after:
            raise KeyboardInterrupt
        self.calls.append(list(names))
        out = []
        for image, name in zip(images, names, strict=True):
            H, W = image.shape
            lm = self.lm * np.array([W / SIZE[1], H / SIZE[0]])
            out.append(FakePrediction(name, lm, np.full(17, 0.6), cobb_angles(lm, H), (W, H)))
        return out


@pytest.fixture
def fake(monkeypatch):
    """Install a FakePredictor as the batch's model; returns it (``.calls`` lists each batch)."""
    holder = {"predictor": FakePredictor(), "loads": 0}

    def load(options):
        holder["loads"] += 1
        return holder["predictor"]

    monkeypatch.setattr(batch, "_load_predictor", load)
    return holder


def radiograph(path: Path, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image, _ = make_radiograph(np.random.default_rng(seed), size=SIZE)
    Image.fromarray(image).save(path)
    return path


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def rows(out: Path) -> list[dict]:
    with open(out / "results.csv", newline="") as f:
        return list(csv.DictReader(f))


def run(paths, out, **kwargs) -> batch.Summary:
    return batch.run([str(p) for p in paths], Options(out=out, **kwargs))


def test_same_file_names_in_two_folders_get_their_own_outputs(tmp_path, fake):
    a, b = radiograph(tmp_path / "in" / "a" / "IM0001.jpg", 1), radiograph(tmp_path / "in" / "b" / "IM0001.jpg", 2)
    out = tmp_path / "out"
    summary = run([tmp_path / "in"], out)
    assert not summary.failed
    assert (out / "a" / "IM0001.json").is_file() and (out / "b" / "IM0001.json").is_file()
    assert (out / "a" / "IM0001.png").is_file() and (out / "b" / "IM0001.png").is_file()
    assert [r["input"] for r in rows(out)] == [str(a), str(b)]
    # the two folders named separately: still one output each
    out2 = tmp_path / "out2"
    run([tmp_path / "in" / "a", tmp_path / "in" / "b"], out2)
    jsons = sorted(p.relative_to(out2).as_posix() for p in out2.rglob("*.json"))
    assert len(jsons) == 2 and len(set(jsons)) == 2, jsons


def test_same_stem_different_suffix_do_not_collide(tmp_path, fake):
    radiograph(tmp_path / "in" / "x.jpg", 1)
    radiograph(tmp_path / "in" / "x.png", 2)
    out = tmp_path / "out"
    run([tmp_path / "in"], out)
    assert {p.name for p in out.glob("*.json")} == {"x.jpg.json", "x.png.json"}


def test_out_equal_to_the_input_folder_never_replaces_an_input(tmp_path, fake):
    folder = tmp_path / "scans"
    inputs = [radiograph(folder / "IM1.png", 1), radiograph(folder / "IM2.jpg", 2),
              radiograph(folder / "sub" / "IM3.png", 3)]
    before = {p: digest(p) for p in inputs}
    for _ in range(2):  # twice: the second run must not read the first run's overlays
        summary = run([folder], folder)
        assert summary.total == 3 and not summary.failed
        assert {p: digest(p) for p in inputs} == before
        assert [r["input"] for r in rows(folder)] == [str(p) for p in sorted(inputs)]
    overlays = [p for p in folder.rglob("*.png") if batch.is_overlay(p)]
    assert len(overlays) == 3


def test_out_inside_the_input_folder_run_twice(tmp_path, fake):
    folder = tmp_path / "scans"
    radiograph(folder / "IM1.jpg", 1)
    radiograph(folder / "IM2.jpg", 2)
    out = folder / "results"
    for _ in range(2):
        summary = run([folder], out)
        assert summary.total == 2
        assert len(rows(out)) == 2
    assert sorted(p.name for p in out.iterdir()) == ["IM1.json", "IM1.png", "IM2.json", "IM2.png", "results.csv"]


def test_a_file_cobbnet_did_not_write_is_never_replaced(tmp_path, fake):
    folder = tmp_path / "scans"
    radiograph(folder / "IM1.jpg")
    sidecar = folder / "IM1.json"
    sidecar.write_text('{"patient": "notes kept by the user"}')
    run([folder], folder)
    assert sidecar.read_text() == '{"patient": "notes kept by the user"}'
    assert (folder / "IM1.jpg.json").is_file()


def test_foreign_results_csv_is_refused_before_the_model_loads(tmp_path, fake):
    radiograph(tmp_path / "in" / "IM1.jpg")
    out = tmp_path / "out"
    out.mkdir()
    (out / "results.csv").write_text("my,own,table\n")
    with pytest.raises(InputError, match="results.csv"):
        run([tmp_path / "in"], out)
    assert fake["loads"] == 0 and (out / "results.csv").read_text() == "my,own,table\n"


@pytest.mark.parametrize("where", ["under a file", "a file"])
def test_unwritable_out_fails_in_one_line_before_the_model_loads(tmp_path, fake, where):
    radiograph(tmp_path / "in" / "IM1.jpg")
    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    out = blocker / "sub" if where == "under a file" else blocker
    with pytest.raises(InputError) as err:
        run([tmp_path / "in"], out)
    assert str(err.value).startswith(f"--out {out}") and "\n" not in str(err.value)
    assert fake["loads"] == 0


def test_batch_size_below_one_is_refused(tmp_path, fake):
    radiograph(tmp_path / "in" / "IM1.jpg")
    with pytest.raises(InputError, match="--batch-size 0"):
        run([tmp_path / "in"], tmp_path / "out", batch_size=0)


def test_interrupted_run_keeps_every_finished_row_and_resume_finishes(tmp_path, fake):
    folder = tmp_path / "in"
    inputs = [radiograph(folder / f"IM{i:02d}.jpg", i) for i in range(7)]
    out = tmp_path / "out"
    fake["predictor"].interrupt_after = 4  # stops in the third batch of two
    with pytest.raises(KeyboardInterrupt, match="4 of 7 images done"):
        run([folder], out, batch_size=2)
    text = (out / "results.csv").read_text()
    assert text.endswith("\n")
    done = rows(out)
    assert [r["input"] for r in done] == [str(p) for p in inputs[:4]]
    assert all(len(r) == len(BATCH_CSV_COLUMNS) and r["status"] == "ok" for r in done)
    assert sorted(p.name for p in out.glob("*.json")) == [f"IM{i:02d}.json" for i in range(4)]
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporaries left
    fake["predictor"].interrupt_after = None
    summary = run([folder], out, batch_size=2, resume=True)
    assert summary.resumed == 4 and len(summary.records) == 3
    assert [n for call in fake["predictor"].calls[-2:] for n in call] == [str(p) for p in inputs[4:]]
    assert [r["input"] for r in rows(out)] == [str(p) for p in inputs]


def test_resume_redoes_an_image_whose_files_are_gone(tmp_path, fake):
    folder = tmp_path / "in"
    radiograph(folder / "IM1.jpg", 1)
    radiograph(folder / "IM2.jpg", 2)
    out = tmp_path / "out"
    run([folder], out)
    (out / "IM2.png").unlink()
    summary = run([folder], out, resume=True)
    assert summary.resumed == 1 and [r["input"]["path"] for r in summary.records] == [str(folder / "IM2.jpg")]
    assert len(rows(out)) == 2


def test_json_and_overlay_are_written_together_or_not_at_all(tmp_path, fake, monkeypatch):
    radiograph(tmp_path / "in" / "IM1.jpg")
    out = tmp_path / "out"

    def broken(path, image, prediction):
        Path(path).write_bytes(b"half an overlay")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(batch, "_write_overlay", broken)
    with pytest.raises(InputError, match="No space left"):
        run([tmp_path / "in"], out)
    assert sorted(p.name for p in out.iterdir()) == ["results.csv"]
    assert rows(out) == []


def test_junk_is_rejected_without_the_network_and_fails_the_run(tmp_path, fake):
    folder = tmp_path / "in"
    radiograph(folder / "good.jpg")
    Image.fromarray(np.zeros((600, 300), np.uint8)).save(folder / "blank.png")
    Image.fromarray(np.full((1, 1), 80, np.uint8)).save(folder / "dot.png")
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (600, 300), dtype=np.uint8)).save(folder / "noise.png")
    Image.fromarray(np.ascontiguousarray(np.rot90(np.asarray(Image.open(folder / "good.jpg"))))).save(folder / "sideways.png")
    (folder / "broken.jpg").write_bytes(b"not a jpeg")
    out = tmp_path / "out"
    summary = run([folder], out)
    assert summary.failed
    assert fake["predictor"].calls == [[str(folder / "good.jpg")]]
    by_input = {r["input"]: r for r in rows(out)}
    assert by_input[str(folder / "good.jpg")]["status"] == "ok"
    for name in ("blank.png", "dot.png", "noise.png", "sideways.png", "broken.jpg"):
        r = by_input[str(folder / name)]
        assert r["status"] == "rejected"
        assert all(r[c] == "" for c in BATCH_CSV_COLUMNS if c.endswith(("_deg", "_levels", "major_region"))), r
    import json

    blank = json.loads((out / "blank.json").read_text())
    assert blank["status"] == "rejected" and "blank" in blank["reason"]
    assert blank["curves"] == [] and blank["vertebrae"] == [] and blank["input"]["path"] == str(folder / "blank.png")
    assert not (out / "blank.png").exists() and not (out / "broken.json").exists()
    assert {p.name for p, _ in summary.unreadable} == {"broken.jpg"}
    assert {p.name for p, _ in summary.rejected} == {"blank.png", "dot.png", "noise.png", "sideways.png"}


def test_reading_warnings_reach_the_json(tmp_path, fake, dicom_writer):
    import json

    import pydicom

    image, _ = make_radiograph(np.random.default_rng(3), size=SIZE)
    (tmp_path / "in").mkdir()
    path = dicom_writer(tmp_path / "in" / "cine.dcm", image.astype(np.uint16) * 16, bits_stored=12)
    ds = pydicom.dcmread(path)
    ds.NumberOfFrames = 2
    ds.PixelData = np.stack([image, image]).astype("<u2").tobytes()
    ds.save_as(path)
    run([tmp_path / "in"], tmp_path / "out")
    record = json.loads((tmp_path / "out" / "cine.json").read_text())
    assert any("2 frames" in w for w in record["warnings"])


def test_earlier_overlays_are_never_taken_as_inputs_even_when_named(tmp_path, fake):
    radiograph(tmp_path / "in" / "IM1.jpg")
    out = tmp_path / "out"
    run([tmp_path / "in"], out)
    with pytest.raises(InputError, match="earlier cobbnet outputs skipped"):
        run([out / "IM1.png"], tmp_path / "out2")


def test_chain_check_rejects_or_doubts_what_the_network_found(tmp_path, fake):
    import json

    radiograph(tmp_path / "in" / "faint.jpg", 1)
    radiograph(tmp_path / "in" / "gappy.jpg", 2)
    predictor = fake["predictor"]
    real = predictor.predict_arrays

    def doubtful(images, names):
        out = real(images, names)
        for p in out:
            if p.name.endswith("faint.jpg"):
                p.scores = np.full(17, 0.1)  # nothing like a spine
            else:
                p.flags[5].append("interpolated")
        return out

    predictor.predict_arrays = doubtful
    out = tmp_path / "out"
    summary = run([tmp_path / "in"], out)
    faint = json.loads((out / "faint.json").read_text())
    gappy = json.loads((out / "gappy.json").read_text())
    assert faint["status"] == "rejected" and "no spine" in faint["reason"] and faint["curves"] == []
    assert not (out / "faint.png").exists()
    assert gappy["status"] == "uncertain" and any("T6 interpolated" in w for w in gappy["warnings"])
    assert gappy["curves"] and (out / "gappy.png").is_file()
    assert [p.name for p, _ in summary.rejected] == ["faint.jpg"]


def test_challenge_csv_has_the_aasce_layout(tmp_path, fake):
    folder = tmp_path / "in"
    for i in range(3):
        radiograph(folder / f"r{i}.jpg", seed=i)
    (folder / "junk.jpg").write_bytes(b"not an image")
    out = tmp_path / "out"
    run([folder], out, challenge_csv=True)
    lines = (out / "angles.csv").read_text().splitlines()
    names = (out / "filenames.csv").read_text().splitlines()
    assert len(lines) == len(names) == 4
    assert names == [r["input"] for r in rows(out)]
    for line, row in zip(lines, rows(out), strict=True):
        values = [float(v) for v in line.split(",")]  # no header: three numbers a line
        assert len(values) == 3
        if row["status"] == "ok":
            assert values == [float(row[f"challenge_angle_{i}_deg"]) for i in (1, 2, 3)]
        else:
            assert all(v != v for v in values)  # nan where no angles
