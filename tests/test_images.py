from __future__ import annotations

import time

import numpy as np
import pytest
from dicom_codecs import SYNTAXES, write_compressed
from PIL import Image

from cobbnet.errors import InputError
from cobbnet.io.images import (
    IMAGE_SUFFIXES,
    find_images,
    image_size,
    read_image,
    read_image_with_warnings,
    to_gray_uint8,
)

H, W = 48, 32  # taller than wide, as radiographs are, so a transposed result cannot pass


def quadrant_image(dtype=np.uint8, low=10, high=240) -> np.ndarray:
    """``(H, W)``: bright top-left quadrant, dark elsewhere; tells orientation apart."""
    img = np.full((H, W), low, dtype=dtype)
    img[: H // 2, : W // 2] = high
    return img


def gradient(dtype=np.uint8, top=255) -> np.ndarray:
    return np.linspace(0, top, H * W).reshape(H, W).round().astype(dtype)


@pytest.mark.parametrize("suffix", [".png", ".tif", ".bmp"])
def test_lossless_8bit_formats_read_exactly(tmp_path, suffix):
    img = gradient()
    path = tmp_path / f"x{suffix}"
    Image.fromarray(img).save(path)
    out = read_image(path)
    assert out.dtype == np.uint8 and out.shape == (H, W)
    np.testing.assert_array_equal(out, img)


def test_jpeg_reads_close_to_original(tmp_path):
    img = quadrant_image()
    path = tmp_path / "x.jpg"
    Image.fromarray(img).save(path, quality=95)
    out = read_image(path)
    assert out.shape == (H, W) and out.dtype == np.uint8
    assert np.abs(out.astype(int) - img).mean() < 3
    assert out[2, 2] > 200 and out[-2, -2] < 50  # bright top-left kept in place


def test_rgb_is_converted_to_gray_by_luma(tmp_path):
    rgb = np.zeros((H, W, 3), dtype=np.uint8)
    rgb[..., 0] = 255  # pure red
    path = tmp_path / "red.png"
    Image.fromarray(rgb).save(path)
    out = read_image(path)
    assert out.shape == (H, W)
    assert np.all(out == 76)  # 0.299 * 255


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_16bit_is_windowed_to_full_8bit_range(tmp_path, suffix):
    img = (1000 + gradient(np.uint16, 255).astype(np.uint16) * 16).astype(np.uint16)  # 1000..5080
    path = tmp_path / f"wide{suffix}"
    Image.fromarray(img).save(path)
    out = read_image(path)
    assert out.dtype == np.uint8 and out.shape == (H, W)
    assert out.min() == 0 and out.max() == 255
    # the mapping is monotonic: brighter input never becomes darker output
    order = np.argsort(img.ravel(), kind="stable")
    assert np.all(np.diff(out.ravel()[order].astype(int)) >= 0)


def test_truncated_jpeg_raises_input_error_naming_the_file(tmp_path):
    path = tmp_path / "cut.jpg"
    Image.fromarray(gradient()).save(path, quality=90)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(InputError) as err:
        read_image(path)
    msg = str(err.value)
    assert msg.startswith(str(path)) and "truncated" in msg and "\n" not in msg


def test_jpeg_missing_only_its_end_marker_is_truncated(tmp_path):
    path = tmp_path / "noeoi.jpg"
    Image.fromarray(gradient()).save(path, quality=90)
    path.write_bytes(path.read_bytes()[:-2])
    with pytest.raises(InputError, match="truncated"):
        read_image(path)


def test_image_size_reads_header_only_even_when_pixels_are_truncated(tmp_path):
    path = tmp_path / "cut.jpg"
    Image.fromarray(gradient()).save(path, quality=90)
    path.write_bytes(path.read_bytes()[:-100])  # the header stays whole, the scan is cut
    assert image_size(path) == (W, H)
    with pytest.raises(InputError):
        read_image(path)


@pytest.mark.parametrize("suffix", [".jpg", ".png", ".dcm"])
def test_garbage_bytes_raise_input_error(tmp_path, suffix):
    path = tmp_path / f"garbage{suffix}"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 3000, dtype=np.uint8).tobytes())
    with pytest.raises(InputError) as err:
        read_image(path)
    assert str(err.value).startswith(str(path))
    with pytest.raises(InputError) as err:
        image_size(path)
    assert str(err.value).startswith(str(path))


def test_missing_folder_and_unsupported_files(tmp_path):
    with pytest.raises(InputError, match="no such file") as err:
        read_image(tmp_path / "absent.png")
    assert str(err.value).startswith(str(tmp_path / "absent.png"))
    with pytest.raises(InputError, match="folder"):
        read_image(tmp_path)
    gif = tmp_path / "x.gif"
    Image.fromarray(gradient()).save(gif)
    with pytest.raises(InputError, match="unsupported image type '.gif'"):
        read_image(gif)


def test_image_size_of_raster_files(tmp_path):
    for suffix in (".jpg", ".png", ".tif", ".bmp"):
        path = tmp_path / f"x{suffix}"
        Image.fromarray(gradient()).save(path)
        assert image_size(path) == (W, H)


# ---- DICOM ----


def test_dicom_monochrome2_min_max_and_orientation(tmp_path, dicom_writer):
    path = dicom_writer(tmp_path / "a.dcm", quadrant_image(np.uint16, 100, 3000), bits_stored=12)
    out = read_image(path)
    assert out.shape == (H, W) and out.dtype == np.uint8
    assert out[0, 0] == 255 and out[-1, -1] == 0
    assert image_size(path) == (W, H)


def test_dicom_monochrome1_is_inverted(tmp_path, dicom_writer):
    pixels = quadrant_image(np.uint16, 100, 3000)
    m1 = read_image(dicom_writer(tmp_path / "m1.dcm", pixels, photometric="MONOCHROME1"))
    m2 = read_image(dicom_writer(tmp_path / "m2.dcm", pixels, photometric="MONOCHROME2"))
    np.testing.assert_array_equal(m1, 255 - m2)
    assert m1[0, 0] == 0  # the high stored value shows dark in MONOCHROME1


def test_dicom_rescale_and_window_are_applied(tmp_path, dicom_writer):
    # raw -> value = 2 * raw - 1000; window centre 0, width 400 shows values -200..200
    raw = np.array([0, 500, 550, 600, 2000], dtype=np.uint16)
    pixels = np.tile(raw, (H, 1))
    path = dicom_writer(tmp_path / "w.dcm", pixels, rescale=(2.0, -1000.0), window=(0.0, 400.0))
    row = read_image(path)[0].astype(int)
    # values -1000, 0, 100, 200, 3000: below the window black, above white, centre mid-grey
    assert row[0] == 0 and row[4] == 255 and row[3] == 255
    assert abs(row[1] - 128) <= 1
    assert abs(row[2] - 191) <= 1  # 100 is three quarters up the window
    # a min-max scaling of the same values would put 0 at 64: the window is really used
    assert row[1] > 100


def test_dicom_voi_lut_is_applied(tmp_path, dicom_writer):
    # a LUT that shows stored values 0..99 bright-to-dark, over its own output range 500..2500
    lut = np.linspace(2500, 500, 100).round()
    pixels = np.tile(np.array([0, 50, 99, 400], dtype=np.uint16), (H, 1))
    row = read_image(dicom_writer(tmp_path / "lut.dcm", pixels, voi_lut=lut))[0].astype(int)
    assert row[0] == 255 and row[2] == 0 and row[3] == 0  # beyond the LUT: its last entry
    assert abs(row[1] - 126) <= 1


def test_dicom_unusable_window_falls_back_to_data_range(tmp_path, dicom_writer):
    pixels = quadrant_image(np.uint16, 100, 3000)
    out = read_image(dicom_writer(tmp_path / "w0.dcm", pixels, window=(1000.0, 0.0)))
    assert out[0, 0] == 255 and out[-1, -1] == 0


def test_dicom_without_preamble_or_suffix_is_recognised(tmp_path, dicom_writer):
    pixels = quadrant_image(np.uint16, 100, 3000)
    bare = dicom_writer(tmp_path / "bare.dcm", pixels, preamble=False)
    assert read_image(bare)[0, 0] == 255
    no_suffix = dicom_writer(tmp_path / "IM000001", pixels)
    assert read_image(no_suffix)[0, 0] == 255
    assert image_size(no_suffix) == (W, H)


def test_dicom_without_pixel_data_raises(tmp_path, dicom_writer):
    path = dicom_writer(tmp_path / "empty.dcm", quadrant_image(np.uint16))
    import pydicom

    ds = pydicom.dcmread(path)
    del ds.PixelData
    ds.save_as(path)
    with pytest.raises(InputError, match="no pixel data") as err:
        read_image(path)
    assert str(err.value).startswith(str(path))


def test_truncated_dicom_raises(tmp_path, dicom_writer):
    path = dicom_writer(tmp_path / "cut.dcm", quadrant_image(np.uint16))
    path.write_bytes(path.read_bytes()[:-500])
    with pytest.raises(InputError) as err:
        read_image(path)
    assert str(err.value).startswith(str(path))


def test_multi_frame_dicom_reads_its_first_frame_with_a_warning(tmp_path, dicom_writer):
    import pydicom

    first = quadrant_image(np.uint16, 100, 3000)
    path = dicom_writer(tmp_path / "cine.dcm", first)
    ds = pydicom.dcmread(path)
    frames = np.stack([first, 3100 - first, np.full_like(first, 7)])  # (3, H, W)
    ds.NumberOfFrames = 3
    ds.PixelData = frames.astype("<u2").tobytes()
    ds.save_as(path)
    image, warned = read_image_with_warnings(path)
    assert image.shape == (H, W) and image[0, 0] == 255 and image[-1, -1] == 0
    assert len(warned) == 1 and warned[0].startswith(str(path)) and "3 frames" in warned[0]
    np.testing.assert_array_equal(read_image(path), image)
    assert image_size(path) == (W, H)


def test_single_frame_reads_without_warnings(tmp_path, dicom_writer):
    _, warned = read_image_with_warnings(dicom_writer(tmp_path / "one.dcm", quadrant_image(np.uint16)))
    assert warned == []


# ---- compressed DICOM: one file per transfer syntax, made by the test (tests/dicom_codecs.py) ----


def ramp_12bit() -> np.ndarray:
    """``(H, W)`` 12-bit: a bright top-left quadrant over a ramp, with pixel noise, so that a
    decoder that drops bits, swaps bytes or transposes cannot pass."""
    rng = np.random.default_rng(1)
    img = np.linspace(300, 2500, H)[:, None] + rng.integers(0, 40, (H, W))
    img[: H // 2, : W // 2] = 4000
    return img.astype(np.uint16)


@pytest.mark.parametrize("name", list(SYNTAXES))
def test_compressed_dicom_reads_like_its_uncompressed_pixels(tmp_path, dicom_writer, name):
    syntax, bits, lossless = SYNTAXES[name]
    if name.startswith("jpeg-ls"):
        pytest.importorskip("jpeg_ls", reason="pyjpegls (the dev extra) encodes the JPEG-LS test file")
    pixels = ramp_12bit() if bits > 8 else (ramp_12bit() >> 4).astype(np.uint8)
    path = write_compressed(tmp_path / f"{name}.dcm", pixels, name)
    import pydicom

    assert pydicom.dcmread(path).file_meta.TransferSyntaxUID == syntax
    plain = read_image(dicom_writer(tmp_path / "plain.dcm", pixels.astype(np.uint16), bits_stored=16))
    out = read_image(path)
    assert out.shape == (H, W) and out.dtype == np.uint8
    assert out[0, 0] > 240 and out[-1, -1] < 200  # orientation kept
    tolerance = 0 if lossless else 4
    assert np.abs(out.astype(int) - plain).max() <= tolerance
    assert image_size(path) == (W, H)


@pytest.mark.parametrize("name", list(SYNTAXES))
def test_every_listed_transfer_syntax_has_a_core_decoder(name):
    """The core install decodes each one: pydicom's own RLE, GDCM for the JPEG family."""
    from pydicom.pixels import get_decoder

    assert set(get_decoder(SYNTAXES[name][0]).available_plugins) & {"pydicom", "gdcm"}


def test_undecodable_transfer_syntax_names_it(tmp_path, dicom_writer):
    import pydicom
    from pydicom.uid import UID

    path = dicom_writer(tmp_path / "x.dcm", quadrant_image(np.uint16))
    ds = pydicom.dcmread(path)
    ds.file_meta.TransferSyntaxUID = UID("1.2.840.10008.1.2.4.100")  # MPEG-2 video
    from pydicom.encaps import encapsulate

    ds.PixelData = encapsulate([b"\0" * 16])
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    ds.save_as(path)
    with pytest.raises(InputError) as err:
        read_image(path)
    msg = str(err.value)
    assert msg.startswith(str(path)) and "\n" not in msg and "1.2.840.10008.1.2.4.100" in msg


# ---- EXIF orientation ----


@pytest.mark.parametrize("orientation, turn", [(1, 0), (3, 2), (6, -1), (8, 1)])
def test_exif_orientation_is_applied(tmp_path, orientation, turn):
    stored = quadrant_image()
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / f"o{orientation}.png"
    Image.fromarray(stored).save(path, exif=exif)
    shown = np.rot90(stored, turn)  # what a viewer displays
    out = read_image(path)
    np.testing.assert_array_equal(out, shown)
    assert image_size(path) == (shown.shape[1], shown.shape[0])


def test_exif_rotated_jpeg_reads_upright(tmp_path):
    stored = np.ascontiguousarray(np.rot90(quadrant_image(), 1))  # a radiograph stored sideways
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    path = tmp_path / "sideways.jpg"
    Image.fromarray(stored).save(path, exif=exif, quality=95)
    out = read_image(path)
    assert out.shape == (H, W) and image_size(path) == (W, H)
    assert out[2, 2] > 200 and out[-2, -2] < 50


# ---- one grayscale conversion for files and arrays ----


def test_gray_uint8_passes_through_unchanged():
    img = gradient()
    np.testing.assert_array_equal(to_gray_uint8(img), img)


@pytest.mark.parametrize("scale", [1.0, 255.0])
def test_float_arrays_in_unit_or_byte_range(scale):
    img = gradient()
    out = to_gray_uint8(img.astype(np.float32) / 255.0 * scale)
    assert out.dtype == np.uint8 and np.abs(out.astype(int) - img).max() <= 1


def test_float_arrays_of_another_range_are_windowed():
    out = to_gray_uint8(np.linspace(-1000, 3000, H * W).reshape(H, W))
    assert out.min() == 0 and out.max() == 255


def test_rgb_and_rgba_arrays_match_the_file_reader(tmp_path):
    rgb = np.zeros((H, W, 3), dtype=np.uint8)
    rgb[..., 0], rgb[: H // 2, :, 1] = 255, 200
    rgba = np.concatenate([rgb, np.full((H, W, 1), 17, np.uint8)], axis=2)
    Image.fromarray(rgba).save(tmp_path / "x.png")
    from_file = read_image(tmp_path / "x.png")
    np.testing.assert_array_equal(to_gray_uint8(rgb), from_file)
    np.testing.assert_array_equal(to_gray_uint8(rgba), from_file)


def test_16bit_arrays_match_the_file_reader(tmp_path):
    img = (1000 + gradient(np.uint16, 255).astype(np.uint16) * 16).astype(np.uint16)
    Image.fromarray(img).save(tmp_path / "wide.png")
    np.testing.assert_array_equal(to_gray_uint8(img), read_image(tmp_path / "wide.png"))


@pytest.mark.parametrize("array, needle", [
    (np.zeros((3, H, W), np.uint8), "channels-first"),
    (np.zeros((4, H, W), np.float32), "channels-first"),
    (np.zeros((0, W), np.uint8), "empty"),
    (np.zeros((H, W, 5), np.uint8), "shape"),
    (np.zeros((2, H, W, 3), np.uint8), "shape"),
    (np.full((H, W), np.nan), "NaN"),
    (np.array([["a"]]), "dtype"),
])
def test_unusable_arrays_raise_one_line_input_errors(array, needle):
    with pytest.raises(InputError) as err:
        to_gray_uint8(array, "my array")
    msg = str(err.value)
    assert msg.startswith("my array") and needle in msg and "\n" not in msg


# ---- finding images ----


def test_find_images_recurses_sorts_and_filters(tmp_path, dicom_writer):
    (tmp_path / "b" / "deep").mkdir(parents=True)
    for rel in ("b/deep/z.PNG", "b/a.jpg", "c.tiff", "b/._a.jpg"):
        Image.fromarray(gradient()).save(tmp_path / rel, format="PNG")
    (tmp_path / "notes.txt").write_text("not an image")
    dicom_writer(tmp_path / "b" / "IM0001", quadrant_image(np.uint16))
    dicom_writer(tmp_path / "b" / "1.2.840.5", quadrant_image(np.uint16))  # named by its UID
    (tmp_path / "README").write_text("no suffix, not DICOM")
    found = find_images([tmp_path])
    rel = [p.relative_to(tmp_path).as_posix() for p in found]
    assert rel == ["b/1.2.840.5", "b/IM0001", "b/a.jpg", "b/deep/z.PNG", "c.tiff"]


def test_find_images_keeps_explicit_files_in_order_without_duplicates(tmp_path):
    for name in ("x.png", "y.png"):
        Image.fromarray(gradient()).save(tmp_path / name)
    got = find_images([tmp_path / "y.png", tmp_path / "x.png", tmp_path])
    assert got == [tmp_path / "y.png", tmp_path / "x.png"]


def test_find_images_errors(tmp_path):
    with pytest.raises(InputError, match="no such file or folder") as err:
        find_images([tmp_path / "nowhere"])
    assert str(err.value).startswith(str(tmp_path / "nowhere"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no images found"):
        find_images([tmp_path / "empty"])


def test_suffixes_cover_the_documented_types():
    assert {".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".dcm", ".dicom"} <= set(IMAGE_SUFFIXES)


def test_whole_training_split_is_sized_quickly_and_matches_decoding(aasce_root):
    paths = find_images([aasce_root / "data" / "training"])
    assert len(paths) == 481
    start = time.perf_counter()
    sizes = [image_size(p) for p in paths]
    elapsed = time.perf_counter() - start
    assert elapsed < 2.0, f"sizing 481 headers took {elapsed:.2f} s"
    for p, (w, h) in list(zip(paths, sizes, strict=True))[::120]:
        assert read_image(p).shape == (h, w)
