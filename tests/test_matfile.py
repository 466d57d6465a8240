"""cobbnet.io.matfile against scipy.io (the dev extra): both read what the other writes."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest

from cobbnet.io.matfile import mat_bytes, read_mat, variable_names, write_mat

scipy_io = pytest.importorskip("scipy.io")

DTYPES = ["f8", "f4", "i1", "u1", "i2", "u2", "i4", "u4", "i8", "u8"]
# (68, 2) the AASCE p2; (1, 1) and (1, 2) int8 fit a small element; (0, 0) empty; 3-D
SHAPES = [(68, 2), (1, 1), (1, 2), (0, 0), (3, 1, 2)]


def values(dtype: str, shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    """Values spanning the dtype's range (negative ones for signed types)."""
    rng = np.random.default_rng(seed)
    if dtype.startswith("f"):
        return (rng.standard_normal(shape) * 1e3).astype(dtype)
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max, size=shape, dtype=dtype, endpoint=True)


def scipy_bytes(variables: dict, compress: bool) -> bytes:
    buf = io.BytesIO()
    scipy_io.savemat(buf, variables, do_compression=compress)
    return buf.getvalue()


def scipy_reads(data: bytes) -> dict:
    return {k: v for k, v in scipy_io.loadmat(io.BytesIO(data)).items() if not k.startswith("__")}


def assert_same(got: np.ndarray, want: np.ndarray) -> None:
    """Same values, shape and dtype; byte order aside (scipy keeps a big-endian file's)."""
    assert got.dtype.newbyteorder("=") == want.dtype.newbyteorder("=") and got.shape == want.shape
    np.testing.assert_array_equal(got, want)


@pytest.fixture
def mat(tmp_path):
    """Write bytes to a .mat file; return its path."""
    def write(data: bytes):
        path = tmp_path / "x.mat"
        path.write_bytes(data)
        return path
    return write


@pytest.mark.parametrize("compress", [False, True])
@pytest.mark.parametrize("dtype", DTYPES)
def test_reads_what_scipy_writes(mat, dtype, compress):
    arrays = {f"v{i}": values(dtype, shape, i) for i, shape in enumerate(SHAPES)}
    path = mat(scipy_bytes(arrays, compress))
    got = read_mat(path)
    assert list(got) == list(arrays) == variable_names(path)
    for name, array in arrays.items():
        assert_same(got[name], array)


@pytest.mark.parametrize("byteorder", ["<", ">"])
@pytest.mark.parametrize("compress", [False, True])
@pytest.mark.parametrize("dtype", DTYPES)
def test_scipy_reads_what_write_mat_writes(tmp_path, dtype, compress, byteorder):
    arrays = {f"v{i}": values(dtype, shape, i) for i, shape in enumerate(SHAPES)}
    path = tmp_path / "x.mat"
    write_mat(path, arrays, compress=compress, byteorder=byteorder)
    back = scipy_reads(path.read_bytes())
    assert list(back) == list(arrays)
    for name, array in arrays.items():
        assert_same(back[name], array)
        mine = read_mat(path)[name]  # and the big-endian file reads back, in native order
        assert_same(mine, array)
        assert mine.dtype.isnative


@pytest.mark.parametrize("compress", [False, True])
def test_write_mat_writes_the_bytes_scipy_writes(compress):
    arrays = {"p2": values("f8", (68, 2)), "points": values("u2", (68, 2))}
    # byte 116 on: the header text holds scipy's date
    assert mat_bytes(arrays, compress=compress)[116:] == scipy_bytes(arrays, compress)[116:]


def test_1d_and_0d_become_rows_as_in_scipy(mat):
    path = mat(mat_bytes({"row": np.arange(5.0), "one": np.float64(3)}))
    got, want = read_mat(path), scipy_reads(path.read_bytes())
    assert got["row"].shape == (1, 5) and got["one"].shape == (1, 1)
    for name in want:
        assert_same(got[name], want[name])


def test_other_classes_are_skipped_but_named(mat):
    path = mat(scipy_bytes({"text": "hello", "z": np.array([[1 + 2j]]), "s": {"a": 1.0},
                            "cell": np.array([1.0, "x"], dtype=object), "flag": np.array([[True]]),
                            "p2": values("f8", (68, 2))}, compress=True))
    got = read_mat(path)
    assert variable_names(path) == ["text", "z", "s", "cell", "flag", "p2"]
    assert set(got) == {"flag", "p2"}  # a logical matrix is numeric: uint8, as scipy reads it
    assert_same(got["flag"], scipy_reads(path.read_bytes())["flag"])


def matlab_style_bytes(p2: np.ndarray, order: str) -> bytes:
    """A file as MATLAB saves the AASCE labels: class double, values stored as miUINT16."""
    def element(mdtype, payload):
        if 0 < len(payload) <= 4:
            return struct.pack(order + "I", len(payload) << 16 | mdtype) + payload.ljust(4, b"\0")
        return struct.pack(order + "II", mdtype, len(payload)) + payload + bytes(-len(payload) % 8)
    body = b"".join([element(6, struct.pack(order + "II", 6, 0)),  # mxDOUBLE_CLASS
                     element(5, struct.pack(order + "2i", *p2.shape)), element(1, b"p2"),
                     element(4, p2.astype(order + "u2").tobytes(order="F"))])
    packed = zlib.compress(struct.pack(order + "II", 14, len(body)) + body)
    header = b"MATLAB 5.0 MAT-file, Platform: test".ljust(116) + b" " * 8  # spaces: no subsystem
    header += struct.pack(order + "HH", 0x0100, 0x4D49)
    return header + struct.pack(order + "II", 15, len(packed)) + packed


@pytest.mark.parametrize("order", ["<", ">"])
def test_double_class_stored_as_uint16_reads_as_scipy_reads_it(mat, order):
    p2 = values("u2", (68, 2))
    path = mat(matlab_style_bytes(p2, order))
    assert_same(read_mat(path)["p2"], scipy_reads(path.read_bytes())["p2"])
    assert_same(read_mat(path)["p2"], p2)


def test_every_aasce_label_file_reads_as_scipy_reads_it(aasce_root):
    files = sorted((aasce_root / "labels" / "training").glob("*.mat"))
    assert len(files) == 481
    for path in files:
        assert_same(read_mat(path)["p2"], scipy_io.loadmat(path)["p2"])


@pytest.mark.parametrize("compress", [False, True])
def test_every_truncation_raises_value_error(mat, compress):
    data = mat_bytes({"p2": values("f8", (3, 2))}, compress=compress)  # small: every cut
    for cut in range(len(data)):
        path = mat(data[:cut])
        if cut == 128:  # the header alone is a file without variables
            assert read_mat(path) == {} and variable_names(path) == []
            continue
        with pytest.raises(ValueError, match="truncated"):
            read_mat(path)
        with pytest.raises(ValueError, match="truncated"):
            variable_names(path)


def test_garbage_raises_value_error(mat):
    good = mat_bytes({"p2": values("f8", (68, 2))}, compress=True)
    v73 = good[:124] + struct.pack("<HH", 0x0200, 0x4D49) + good[128:]
    bad_zlib = good[:140] + bytes(b ^ 0xFF for b in good[140:150]) + good[150:]
    for data, reason in [(b"", "truncated"), (bytes(200), "not a level-5"),
                         (b"\x89PNG\r\n\x1a\n" + bytes(300), "not a level-5"),
                         (v73, "7.3"), (good[:124] + b"\x00\x07IM" + good[128:], "version"),
                         (bad_zlib, "compressed element")]:
        with pytest.raises(ValueError, match=reason):
            read_mat(mat(data))


def test_random_corruption_raises_only_value_error(mat):
    good = mat_bytes({"p2": values("f8", (68, 2)), "n": values("u2", (1, 1))})
    rng = np.random.default_rng(0)
    for _ in range(300):
        data = bytearray(good)
        for i in rng.integers(128, len(data), size=rng.integers(1, 4)):
            data[i] = rng.integers(256)
        try:
            read_mat(mat(bytes(data)))
        except ValueError:
            pass


def test_write_mat_refuses_what_it_cannot_write(tmp_path):
    for variables in [{"2bad": np.zeros(2)}, {"_x": np.zeros(2)}, {"z": np.zeros(2, complex)},
                      {"b": np.zeros(2, bool)}, {"s": np.array(["a"])}]:
        with pytest.raises(ValueError):
            write_mat(tmp_path / "x.mat", variables)
    with pytest.raises(ValueError, match="116"):
        mat_bytes({}, header=b"x" * 117)
    assert not (tmp_path / "x.mat").exists()


def test_label_reader_names_a_p2_it_cannot_use(tmp_path):
    from cobbnet.errors import InputError
    from cobbnet.io.aasce import read_labels_mat

    path = tmp_path / "x.mat"
    path.write_bytes(scipy_bytes({"p2": "not numbers"}, compress=False))
    with pytest.raises(InputError, match="p2 is not a numeric matrix"):
        read_labels_mat(path)
