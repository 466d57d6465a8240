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
    assert result.exit_code == 0, result.output
    assert "corners-swapped-lr" in result.output
    as_json = json.loads(invoke("audit", copy_root, "--json").output)
    assert any(f["check"] == "corners-swapped-lr" for f in as_json)


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

    from cobbnet.training.export import FULL_OUTPUTS
    from cobbnet.nn.model import PEAK_OUTPUTS

    out = tmp_path / "model.onnx"
    result = invoke("export", "--onnx", out, *(["--full"] if full else []))
    assert result.exit_code == 0, result.output
    names = [o.name for o in onnx.load(str(out)).graph.output]
    assert names == list(FULL_OUTPUTS if full else PEAK_OUTPUTS)
