from __future__ import annotations

import time

import numpy as np
import pytest
import scipy.io

from cobbnet.errors import InputError
from cobbnet.io.aasce import Sample, read_labels_mat, read_split
from cobbnet.io.images import read_image
from cobbnet.spine import landmarks
from cobbnet.spine.cobb import cobb_angles_batch

SIZES = [(64, 160), (80, 200)]  # (width, height)


@pytest.fixture
def spines(make_spine):
    return [make_spine(w, h, bend=8.0 * (i + 1)) for i, (w, h) in enumerate(SIZES)]


@pytest.fixture
def dataset(tmp_dataset, spines):
    return tmp_dataset(spines, SIZES, names=["Case 01 A AP.jpg", "case 02 b ap.JPG"],
                       angles=np.array([[10.0, 5.0, 5.0], [20.0, 12.5, 7.5]]))


def labels(root):
    return root / "labels" / "training"


def expect_error(root, *fragments, split="training"):
    """read_split fails with a one-line InputError containing each fragment."""
    with pytest.raises(InputError) as err:
        read_split(root, split)
    msg = str(err.value)
    assert "\n" not in msg
    for fragment in fragments:
        assert str(fragment) in msg, msg
    return msg


def test_reads_samples_in_filenames_order(dataset, spines):
    samples = read_split(dataset)
    assert [s.name for s in samples] == ["Case 01 A AP.jpg", "case 02 b ap.JPG"]
    for s, lm, (w, h) in zip(samples, spines, SIZES, strict=True):
        assert isinstance(s, Sample)
        assert s.image_path == dataset / "data" / "training" / s.name
        assert (s.width, s.height) == (w, h)
        assert s.landmarks.shape == (17, 4, 2) and s.landmarks.dtype == np.float64
        np.testing.assert_allclose(s.landmarks, lm)
    np.testing.assert_allclose(samples[1].angles, [20.0, 12.5, 7.5])


def test_row_order_is_the_files_not_sorted(tmp_dataset, spines):
    root = tmp_dataset(spines, SIZES, names=["z last.jpg", "a first.jpg"])
    samples = read_split(root)
    assert [s.name for s in samples] == ["z last.jpg", "a first.jpg"]
    np.testing.assert_allclose(samples[0].landmarks, spines[0])


def test_csv_labels_used_when_mat_files_are_absent(tmp_dataset, spines):
    root = tmp_dataset(spines, SIZES, mat=False)
    samples = read_split(root)
    for s, lm in zip(samples, spines, strict=True):
        np.testing.assert_allclose(s.landmarks, lm, atol=1e-6)
    assert all(s.angles is None for s in samples)  # no angles.csv written


def test_no_labels_at_all(tmp_dataset, spines):
    root = tmp_dataset(spines, SIZES, mat=False, csv=False)
    expect_error(root, labels(root) / "case 00 AP.jpg.mat", "no labels")


def test_missing_root_and_split(tmp_path, dataset):
    expect_error(tmp_path / "nowhere", tmp_path / "nowhere", "no such dataset folder")
    msg = expect_error(dataset, "no such split folder", split="test")
    assert msg.startswith(str(dataset / "data" / "test")) and "training" in msg


def test_missing_or_empty_filenames_csv(dataset):
    path = labels(dataset) / "filenames.csv"
    path.write_text("\r\n\n")
    expect_error(dataset, path, "empty split")
    path.unlink()
    expect_error(dataset, path, "missing")


def test_names_match_exactly(dataset):
    path = labels(dataset) / "filenames.csv"
    path.write_text("case 01 a ap.jpg\ncase 02 b ap.JPG\n")  # wrong case on the first name
    expect_error(dataset, dataset / "data" / "training" / "case 01 a ap.jpg", "missing")


def test_duplicate_names(dataset):
    (labels(dataset) / "filenames.csv").write_text("Case 01 A AP.jpg\nCase 01 A AP.jpg\n")
    expect_error(dataset, "line 2", "repeats line 1")


def test_missing_image(dataset):
    image = dataset / "data" / "training" / "case 02 b ap.JPG"
    image.unlink()
    expect_error(dataset, image, "missing")


def test_unreadable_image_header(dataset):
    image = dataset / "data" / "training" / "Case 01 A AP.jpg"
    image.write_bytes(b"this is not a jpeg at all" * 10)
    msg = expect_error(dataset, "cannot read image header")
    assert msg.startswith(str(image))


def test_truncated_mat(dataset):
    mat = labels(dataset) / "Case 01 A AP.jpg.mat"
    mat.write_bytes(mat.read_bytes()[:150])
    msg = expect_error(dataset, "cannot read MATLAB file")
    assert msg.startswith(str(mat))


def test_mat_without_p2(dataset):
    mat = labels(dataset) / "Case 01 A AP.jpg.mat"
    scipy.io.savemat(mat, {"points": np.zeros((68, 2))})
    msg = expect_error(dataset, "no variable 'p2'", "points")
    assert msg.startswith(str(mat))


def test_p2_of_another_shape(dataset):
    mat = labels(dataset) / "case 02 b ap.JPG.mat"
    scipy.io.savemat(mat, {"p2": np.zeros((60, 2))})
    msg = expect_error(dataset, "(60, 2)")
    assert msg.startswith(str(mat))


def test_nan_coordinates(dataset, spines):
    mat = labels(dataset) / "case 02 b ap.JPG.mat"
    p2 = landmarks.to_p2(spines[1]).copy()
    p2[5, 1] = np.nan
    scipy.io.savemat(mat, {"p2": p2})
    msg = expect_error(dataset, "NaN")
    assert msg.startswith(str(mat))


def test_landmarks_csv_row_count_and_columns(dataset):
    csv = labels(dataset) / "landmarks.csv"
    rows = csv.read_text().splitlines()
    csv.write_text(rows[0] + "\n")
    expect_error(dataset, csv, "1 rows", "2 images")
    csv.write_text(rows[0] + "\n" + rows[1] + ",0.5\n")
    expect_error(dataset, csv, "line 2", "expected 136 values, got 137")
    cells = rows[1].split(",")
    cells[3] = "abc"
    csv.write_text(rows[0] + "\n" + ",".join(cells) + "\n")
    expect_error(dataset, csv, "line 2", "not a number")


def test_angles_csv_row_count_and_columns(dataset):
    csv = labels(dataset) / "angles.csv"
    csv.write_text("10,5\n20,12.5,7.5\n")
    expect_error(dataset, csv, "line 1", "expected 3 values, got 2")
    csv.write_text("10,5,5\n20,12.5,7.5\n1,2,3\n")
    expect_error(dataset, csv, "3 rows")
    csv.write_text("10,5,5\nnan,12.5,7.5\n")
    expect_error(dataset, csv, "line 2", "NaN")


def test_read_labels_mat(dataset, spines, tmp_path):
    lm = read_labels_mat(labels(dataset) / "Case 01 A AP.jpg.mat")
    np.testing.assert_allclose(lm, spines[0])
    with pytest.raises(InputError, match="no such label file"):
        read_labels_mat(tmp_path / "absent.mat")


# ---- the real AASCE training split (skipped when ../shared is absent) ----


@pytest.fixture(scope="module")
def training(aasce_root):
    start = time.perf_counter()
    samples = read_split(aasce_root, "training")
    return samples, time.perf_counter() - start


def test_training_split_has_481_samples_named_as_filenames_csv(training, aasce_root):
    samples, elapsed = training
    names = (aasce_root / "labels" / "training" / "filenames.csv").read_text().splitlines()
    assert len(samples) == 481
    assert [s.name for s in samples] == [n for n in names if n]
    assert all(s.angles is not None and s.angles.shape == (3,) for s in samples)
    assert elapsed < 5.0, f"reading the split took {elapsed:.2f} s"


def test_header_sizes_match_full_decode(training):
    samples, _ = training
    for s in samples[::97]:
        assert read_image(s.image_path).shape == (s.height, s.width)


def test_mat_landmarks_agree_with_landmarks_csv(training, aasce_root):
    samples, _ = training
    rows = np.loadtxt(aasce_root / "labels" / "training" / "landmarks.csv", delimiter=",")
    assert rows.shape == (481, 136)
    for s, row in zip(samples, rows, strict=True):
        p2 = landmarks.to_p2(s.landmarks)
        # the CSV keeps 5 significant digits of x / width and y / height
        assert np.abs(row[:68] * s.width - p2[:, 0]).max() < 1.0, s.name
        assert np.abs(row[68:] * s.height - p2[:, 1]).max() < 1.0, s.name


def test_challenge_angles_reproduced_on_all_training_images(training):
    samples, _ = training
    lm = np.stack([s.landmarks for s in samples])
    heights = np.array([s.height for s in samples])
    reference = np.stack([s.angles for s in samples])
    angles, _, _ = cobb_angles_batch(lm, heights)
    diff = np.abs(angles - reference)
    worst = np.unravel_index(np.argmax(diff), diff.shape)
    assert diff.max() < 0.01, f"{samples[worst[0]].name}: column {worst[1]} differs by {diff.max():.4f}"
