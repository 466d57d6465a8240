"""The command line: each command on data the project makes, and every bad input the
foundation names: exit non-zero, one line naming the file, no traceback, no output file."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from typer.testing import CliRunner

from cobbnet.cli import app

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synth") / "data"
    result = invoke("synth", root, "--n", "6", "--seed", "3", "--size", "256x128")
    assert result.exit_code == 0, result.output
    return root


@pytest.fixture
def copy_root(synth_root, tmp_path) -> Path:
    dst = tmp_path / "copy"
    shutil.copytree(synth_root, dst)
    return dst


def labels(root: Path) -> Path:
    return root / "labels" / "training"


def assert_user_error(result, *needles: str) -> None:
    assert result.exit_code == 2, result.output
    text = result.output.strip()
    assert "Traceback" not in text
    assert len(text.splitlines()) == 1, text
    for needle in needles:
        assert needle in text, text


def test_synth_writes_the_aasce_layout(synth_root):
    names = (labels(synth_root) / "filenames.csv").read_text().split("\n")
    names = [n.strip() for n in names if n.strip()]
    assert len(names) == 6
    for name in names:
        assert (synth_root / "data" / "training" / name).is_file()
        assert (labels(synth_root) / f"{name}.mat").is_file()


def test_angles_csv_reproduces_angles_csv(synth_root, tmp_path):
    out = tmp_path / "angles.csv"
    result = invoke("angles", synth_root, "--out", out)
    assert result.exit_code == 0, result.output
    rows = list(csv.reader(out.open()))
    assert rows[0][:4] == ["filename", "pt", "mt", "tl"]
    ours = np.array([[float(v) for v in r[1:4]] for r in rows[1:]])
    truth = np.loadtxt(labels(synth_root) / "angles.csv", delimiter=",", ndmin=2)
    np.testing.assert_allclose(ours, truth, atol=0.01)


def test_angles_compare_prints_a_table(synth_root):
    result = invoke("angles", synth_root, "--compare")
    assert result.exit_code == 0, result.output
    assert "within 0.01 deg" in result.output
    assert "6/6" in result.output


def test_angles_single_mat_needs_height(synth_root):
    mat = next(labels(synth_root).glob("*.mat"))
    assert_user_error(invoke("angles", mat), str(mat.name), "--height")
    result = invoke("angles", mat, "--height", "256")
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[0].startswith("filename,pt,mt,tl")


def test_audit_reports_a_swapped_vertebra(copy_root):
    mat = sorted(labels(copy_root).glob("*.mat"))[0]
    p2 = scipy.io.loadmat(mat)["p2"]
    p2[[0, 1]] = p2[[1, 0]]  # T1's top-left and top-right swapped
    scipy.io.savemat(mat, {"p2": p2})
    result = invoke("audit", copy_root)
    assert result.exit_code == 1, result.output  # findings: exit status 1, as --help says
    assert "corners-swapped-lr" in result.output
    as_json = invoke("audit", copy_root, "--json")
    assert as_json.exit_code == 1
    assert any(f["check"] == "corners-swapped-lr" for f in json.loads(as_json.output))


def test_audit_of_clean_labels_exits_0(synth_root):
    result = invoke("audit", synth_root)
    assert result.exit_code == 0, result.output


def test_help_explains_every_command():
    result = invoke("--help")
    assert result.exit_code == 0
    for command in ("synth", "angles", "audit", "train", "evaluate", "predict", "demo", "export"):
        assert command in result.output
        sub = invoke(command, "--help")
        assert sub.exit_code == 0, sub.output


# ---- bad input: one line naming the file, exit 2, nothing half-written ----

def test_missing_folder(tmp_path):
    missing = tmp_path / "nowhere"
    assert_user_error(invoke("angles", missing, "--out", tmp_path / "a.csv"), "nowhere")
    assert not (tmp_path / "a.csv").exists()
    assert_user_error(invoke("audit", missing), "nowhere")


def test_empty_split(copy_root, tmp_path):
    (labels(copy_root) / "filenames.csv").write_text("")
    assert_user_error(invoke("angles", copy_root, "--out", tmp_path / "a.csv"), "filenames.csv")
    assert not (tmp_path / "a.csv").exists()


def test_corrupt_jpeg(copy_root, tmp_path):
    image = sorted((copy_root / "data" / "training").glob("*.jpg"))[0]
    image.write_bytes(b"not a jpeg at all")
    assert_user_error(invoke("angles", copy_root, "--out", tmp_path / "a.csv"), image.name)
    assert not (tmp_path / "a.csv").exists()


def test_truncated_mat(copy_root, tmp_path):
    mat = sorted(labels(copy_root).glob("*.mat"))[0]
    mat.write_bytes(mat.read_bytes()[:100])
    assert_user_error(invoke("angles", copy_root, "--out", tmp_path / "a.csv"), mat.name)
    assert_user_error(invoke("audit", copy_root), mat.name)
    assert not (tmp_path / "a.csv").exists()


def test_p2_of_another_shape(copy_root, tmp_path):
    mat = sorted(labels(copy_root).glob("*.mat"))[0]
    scipy.io.savemat(mat, {"p2": np.zeros((60, 2))})
    assert_user_error(invoke("angles", copy_root, "--out", tmp_path / "a.csv"), mat.name)


def test_nan_coordinates(copy_root, tmp_path):
    mat = sorted(labels(copy_root).glob("*.mat"))[0]
    p2 = scipy.io.loadmat(mat)["p2"].astype(float)
    p2[5, 1] = np.nan
    scipy.io.savemat(mat, {"p2": p2})
    assert_user_error(invoke("angles", copy_root, "--out", tmp_path / "a.csv"), mat.name, "NaN")


def test_csv_with_wrong_column_count(copy_root, tmp_path):
    for mat in labels(copy_root).glob("*.mat"):
        mat.unlink()  # the reader falls back to landmarks.csv
    path = labels(copy_root) / "landmarks.csv"
    rows = path.read_text().splitlines()
    rows[1] = ",".join(rows[1].split(",")[:-3])
    path.write_text("\n".join(rows) + "\n")
    assert_user_error(invoke("angles", copy_root, "--out", tmp_path / "a.csv"), "landmarks.csv")
    assert not (tmp_path / "a.csv").exists()


def test_synth_refuses_a_non_empty_folder(synth_root):
    assert_user_error(invoke("synth", synth_root, "--n", "2", "--size", "256x128"), str(synth_root.name))


def test_bad_size_flag(tmp_path):
    assert_user_error(invoke("synth", tmp_path / "x", "--size", "big"), "--size")


@pytest.mark.parametrize("full", [False, True])
def test_export_writes_the_inference_graph_or_every_head(tmp_path, full):
    import onnx

    from cobbnet.nn.model import PEAK_OUTPUTS
    from cobbnet.training.export import FULL_OUTPUTS

    out = tmp_path / "model.onnx"
    result = invoke("export", "--onnx", out, *(["--full"] if full else []))
    assert result.exit_code == 0, result.output
    names = [o.name for o in onnx.load(str(out)).graph.output]
    assert names == list(FULL_OUTPUTS if full else PEAK_OUTPUTS)


# ---- predict: the gate, the output folder, the batch ----


def _folder_of_radiographs_and_junk(folder: Path) -> dict[str, str]:
    """Synthetic radiographs, one stored sideways with an EXIF tag, and junk; name -> expected status."""
    from PIL import Image

    from cobbnet.io.synthetic import synth_sample

    folder.mkdir(parents=True)
    expected = {}
    for i in range(2):
        _, image, _ = synth_sample(i, 11, size=(768, 320))
        Image.fromarray(image).save(folder / f"spine{i}.jpg", quality=92)
        expected[f"spine{i}.jpg"] = "measured"
    exif = Image.Exif()
    exif[0x0112] = 6  # stored on its side; every viewer shows it upright
    Image.fromarray(np.ascontiguousarray(np.rot90(image, 1))).save(folder / "exif.jpg", exif=exif, quality=92)
    expected["exif.jpg"] = "measured"
    Image.fromarray(np.ascontiguousarray(np.rot90(image, 1))).save(folder / "sideways.jpg", quality=92)
    Image.fromarray(np.zeros((768, 320), np.uint8)).save(folder / "blank.png")
    Image.fromarray(np.full((1, 1), 9, np.uint8)).save(folder / "dot.png")
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (768, 320), dtype=np.uint8)).save(folder / "noise.png")
    (folder / "broken.jpg").write_bytes(b"not an image")
    expected.update({n: "rejected" for n in ("sideways.jpg", "blank.png", "dot.png", "noise.png", "broken.jpg")})
    return expected


def test_predict_rejects_junk_measures_radiographs_and_exits_1(tmp_path):
    folder = tmp_path / "mixed"
    expected = _folder_of_radiographs_and_junk(folder)
    out = tmp_path / "out"
    result = invoke("predict", folder, "--out", out)
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    rows = {r["input"]: r for r in csv.DictReader((out / "results.csv").open())}
    assert len(rows) == len(expected)
    for name, status in expected.items():
        row = rows[str(folder / name)]
        if status == "rejected":
            assert row["status"] == "rejected", (name, row)
            assert row["challenge_angle_1_deg"] == "", row
            assert name in result.output  # one console line each
        else:
            assert row["status"] in ("ok", "uncertain"), (name, row)
            assert row["challenge_angle_1_deg"] != ""
    exif = json.loads((out / "exif.json").read_text())
    assert (exif["input"]["width"], exif["input"]["height"]) == (320, 768)  # read upright
    blank = json.loads((out / "blank.json").read_text())
    assert blank["status"] == "rejected" and blank["reason"] and blank["curves"] == []


def test_predict_unwritable_out_is_one_line_exit_2(tmp_path):
    from PIL import Image

    Image.fromarray(np.zeros((300, 300), np.uint8)).save(tmp_path / "x.png")
    blocker = tmp_path / "blocker"
    blocker.write_text("a file")
    assert_user_error(invoke("predict", tmp_path / "x.png", "--out", blocker / "out"), "--out", "blocker")


def test_predict_batch_size_must_be_at_least_1(tmp_path):
    from PIL import Image

    Image.fromarray(np.zeros((300, 300), np.uint8)).save(tmp_path / "x.png")
    assert_user_error(invoke("predict", tmp_path / "x.png", "--out", tmp_path / "o", "--batch-size", "0"),
                      "--batch-size")
    assert_user_error(invoke("evaluate", "--data", tmp_path, "--out", tmp_path / "e", "--batch-size", "0"),
                      "--batch-size")


@pytest.mark.parametrize("views", ["0", "5"])
def test_views_must_be_1_to_4(tmp_path, views):
    from PIL import Image

    Image.fromarray(np.zeros((300, 300), np.uint8)).save(tmp_path / "x.png")
    assert_user_error(invoke("predict", tmp_path / "x.png", "--out", tmp_path / "o", "--views", views), "--views")
    assert not (tmp_path / "o").exists()
    assert_user_error(invoke("evaluate", "--data", tmp_path, "--out", tmp_path / "e", "--views", views), "--views")


N_IMAGES = 20


def _interruptible_and_niced() -> None:
    """In the child before exec: SIGINT as by default, lowest CPU priority."""
    import os
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)
    os.nice(19)


@pytest.mark.slow
def test_ctrl_c_in_a_20_image_run_keeps_finished_rows_and_resume_finishes(tmp_path):
    """Interrupted after its third row, a run keeps whole rows and ``--resume`` finishes it.

    The run gets SIGINT's default disposition back: a shell's background job inherits SIGINT
    ignored, and Python then never raises KeyboardInterrupt, so under such a runner the run
    went on to its last image. It is also niced, so that the polling test keeps up with it."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from PIL import Image

    from cobbnet.io.synthetic import synth_sample

    folder, out = tmp_path / "twenty", tmp_path / "out"
    folder.mkdir()
    for i in range(N_IMAGES):
        Image.fromarray(synth_sample(i, 5, size=(768, 320))[1]).save(folder / f"IM{i:04d}.jpg")
    cmd = [sys.executable, "-m", "cobbnet", "predict", str(folder), "--out", str(out), "--batch-size", "1"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            preexec_fn=_interruptible_and_niced)
    csv_path = out / "results.csv"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if csv_path.is_file() and csv_path.read_text().count("\n") >= 4:  # header + 3 rows
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, output
    text = csv_path.read_text()
    assert text.endswith("\n")
    done = list(csv.DictReader(text.splitlines()))
    assert 3 <= len(done) < N_IMAGES, output
    assert all(r["status"] and r["warnings"] is not None for r in done)
    assert "--resume" in output
    finished = subprocess.run([*cmd, "--resume"], capture_output=True, text=True, env=os.environ)
    assert finished.returncode == 0, finished.stdout + finished.stderr
    rows = list(csv.DictReader(csv_path.open()))
    assert [r["input"] for r in rows] == [str(folder / f"IM{i:04d}.jpg") for i in range(N_IMAGES)]
