"""Decoding head outputs: peaks, ordering, degenerate heatmaps, and the encode/decode round trip."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from cobbnet.io.synthetic import KINDS
from cobbnet.io.synthetic import random_spine as random_spine_synthetic
from cobbnet.nn.decode import decode, peaks, to_input, to_original, top_peaks
from cobbnet.nn.heads import HEADS, STRIDE, gather, patches
from cobbnet.nn.targets import encode_batch, map_size
from cobbnet.spine.landmarks import N_VERTEBRAE, centers

AASCE = Path(__file__).resolve().parents[2] / "shared" / "boostnet_labeldata"
SMALL = (256, 128)  # input (H, W) for fast tests: maps of 64 x 32
EXACT = 1e-2  # float32 round-off of a round trip, in input pixels; the contract is 0.5


@pytest.fixture
def perfect_outputs():
    """Build the head outputs a perfect network would give for batched ``encode`` targets."""

    def build(targets: dict[str, np.ndarray], input_size: tuple[int, int]) -> dict:
        h, w = map_size(input_size)
        B = targets["hm"].shape[0]
        b, j = np.nonzero(targets["valid"])
        cells = targets["ind"][b, j]
        out = {"hm": torch.from_numpy(targets["hm"]), "mask": torch.from_numpy(targets["mask"])}
        for key in ("reg", "cnr"):
            flat = np.zeros((B, HEADS[key], h * w), dtype=np.float32)
            flat[b, :, cells] = targets[key][b, j]  # the target written at its centre cell
            out[key] = torch.from_numpy(flat.reshape(B, HEADS[key], h, w))
        return out

    return build


def random_spine(rng: np.random.Generator, input_size=SMALL) -> np.ndarray:
    """A plausible spine in input pixels: tilted quadrilaterals along a random S curve."""
    H, W = input_size
    y = np.linspace(0.08, 0.88, 17) * H + rng.uniform(-0.004, 0.004, 17) * H
    phase, amp = rng.uniform(0, 2 * np.pi), rng.uniform(0.0, 0.12) * W
    x = 0.5 * W + amp * np.sin(2 * np.pi * y / H + phase)
    tilt = np.arctan(np.gradient(x, y)) + rng.uniform(-0.1, 0.1, 17)
    half_w = rng.uniform(0.08, 0.12) * W * np.ones(17)
    half_h = 0.35 * (y[1] - y[0]) * np.ones(17)
    local = np.array([[-1, -1], [1, -1], [-1, 1], [1, 1]], dtype=np.float64)  # TL, TR, BL, BR
    corners = local[None] * np.stack([half_w, half_h], axis=1)[:, None, :]  # (17, 4, 2)
    cos, sin = np.cos(tilt)[:, None], np.sin(tilt)[:, None]
    rotated = np.stack(
        [
            cos * corners[..., 0] - sin * corners[..., 1],
            sin * corners[..., 0] + cos * corners[..., 1],
        ],
        axis=-1,
    )
    return rotated + np.stack([x, y], axis=1)[:, None, :] + rng.uniform(-1, 1, (17, 4, 2))


def round_trip(spines: list[np.ndarray], input_size, build) -> tuple[np.ndarray, np.ndarray]:
    outputs = build(encode_batch(spines, input_size), input_size)
    landmarks, scores = decode(outputs)
    return landmarks.numpy(), scores.numpy()


def by_centre_y(lm: np.ndarray) -> np.ndarray:
    """Vertebrae sorted top to bottom, ``(..., 17, 4, 2)``."""
    order = np.argsort(centers(lm)[..., 1], axis=-1, kind="stable")
    return np.take_along_axis(lm, order[..., None, None], axis=-3)


# ---------------------------------------------------------------- round trip


def hand_built() -> list[np.ndarray]:
    H, W = SMALL
    straight = np.array(
        [
            [[40, 10 + 13 * i], [88, 10 + 13 * i], [40, 19 + 13 * i], [88, 19 + 13 * i]]
            for i in range(17)
        ],
        dtype=np.float64,
    )
    on_cell_edges = straight.copy()  # centres exactly on multiples of the stride
    on_cell_edges += (
        np.array([64.0, 16.0])
        - centers(straight)[:, None, :]
        + [[0, 12.0]] * np.arange(17)[:, None, None]
    )
    tilted = straight.copy()
    tilted[:, [0, 2], 1] += 3.0  # left side lower: every vertebra tilts
    tilted[:, :, 0] += 12 * np.sin(np.arange(17) / 3.0)[:, None]
    near_border = straight.copy()
    near_border[:, :, 0] -= 39.5  # left corners at x = 0.5
    near_border[-1, 2:, 1] = H - 0.5  # L5's lower corners in the last pixel row
    return [straight, on_cell_edges, tilted, near_border]


@pytest.mark.parametrize("index", range(4))
def test_round_trip_on_hand_built_spines(perfect_outputs, index):
    spine = hand_built()[index]
    landmarks, scores = round_trip([spine], SMALL, perfect_outputs)
    assert landmarks.shape == (1, 17, 4, 2)
    np.testing.assert_allclose(landmarks[0], by_centre_y(spine), atol=EXACT)
    np.testing.assert_array_equal(scores, 1.0)


@pytest.mark.parametrize("input_size", [SMALL, (1024, 512)])
def test_round_trip_on_random_spines(perfect_outputs, input_size):
    rng = np.random.default_rng(11)
    spines = [random_spine(rng, input_size) for _ in range(8)]
    landmarks, scores = round_trip(spines, input_size, perfect_outputs)
    np.testing.assert_allclose(landmarks, by_centre_y(np.stack(spines)), atol=EXACT)
    assert np.all(scores == 1.0)


@pytest.mark.parametrize("input_size", [SMALL, (1024, 512)])
def test_round_trip_on_synthetic_spines(perfect_outputs, input_size):
    rng = np.random.default_rng(7)
    H, W = input_size
    spines = [random_spine_synthetic(rng, W, H, kind) for kind in KINDS for _ in range(3)]
    landmarks, scores = round_trip(spines, input_size, perfect_outputs)
    np.testing.assert_allclose(landmarks, by_centre_y(np.stack(spines)), atol=EXACT)
    assert np.all(scores == 1.0)


def test_round_trip_puts_swapped_vertebrae_back_in_top_to_bottom_order(perfect_outputs):
    spine = random_spine(np.random.default_rng(5))
    swapped = spine[[0, 1, 2, 4, 3] + list(range(5, 17))]
    landmarks, _ = round_trip([swapped], SMALL, perfect_outputs)
    np.testing.assert_allclose(landmarks[0], spine, atol=EXACT)


# ---------------------------------------------------------------- peaks, order, degenerate maps


def test_nms_keeps_only_3x3_local_maxima():
    hm = torch.zeros(1, 1, 10, 10)
    hm[0, 0, 4, 4], hm[0, 0, 4, 5] = 0.9, 0.8  # neighbours: only the higher survives
    hm[0, 0, 6, 6] = 0.7  # diagonal neighbour of nothing higher... two cells away: kept
    hm[0, 0, 5, 5] = 0.6  # diagonal neighbour of both 0.9 and 0.7: suppressed
    kept = peaks(hm)[0, 0]
    assert kept[4, 4] == pytest.approx(0.9) and kept[6, 6] == pytest.approx(0.7)
    assert kept[4, 5] == 0 and kept[5, 5] == 0
    assert torch.count_nonzero(kept) == 2


def decode_peaks(values: list[tuple[int, int, float]], shape=(64, 32), k=17):
    """Decode a heatmap with peaks ``(ix, iy, score)`` and zero offsets."""
    h, w = shape
    hm = torch.zeros(1, 1, h, w)
    for ix, iy, s in values:
        hm[0, 0, iy, ix] = s
    outputs = {"hm": hm, "reg": torch.zeros(1, 2, h, w), "cnr": torch.zeros(1, 8, h, w)}
    return decode(outputs, k)


def test_vertebrae_come_out_top_to_bottom_whatever_their_scores():
    rng = np.random.default_rng(2)
    rows = rng.permutation(np.arange(2, 62, 3))[:17]  # distinct rows, 3 apart
    values = [
        (10 + int(r) % 7, int(r), float(s))
        for r, s in zip(rows, rng.uniform(0.3, 1.0, 17), strict=True)
    ]
    landmarks, scores = decode_peaks(values)
    y = landmarks[0, :, 0, 1].numpy()
    np.testing.assert_array_equal(y, np.sort(rows) * STRIDE)
    expected = [s for _, _, s in sorted(values, key=lambda v: v[1])]
    np.testing.assert_allclose(scores[0].numpy(), expected, rtol=1e-6)


def test_fewer_peaks_than_vertebrae_give_zero_scores_for_the_rest():
    landmarks, scores = decode_peaks([(5, 10, 0.9), (6, 30, 0.8), (7, 50, 0.7)])
    assert landmarks.shape == (1, 17, 4, 2) and scores.shape == (1, 17)
    assert torch.isfinite(landmarks).all()
    assert sorted(scores[0].tolist())[-3:] == pytest.approx([0.7, 0.8, 0.9])
    assert torch.count_nonzero(scores) == 3


@pytest.mark.parametrize("level", [0.0, 0.1])
def test_a_flat_heatmap_gives_17_low_score_vertebrae(level):
    h, w = map_size(SMALL)
    outputs = {
        "hm": torch.full((2, 1, h, w), level),
        "reg": torch.rand(2, 2, h, w),
        "cnr": torch.randn(2, 8, h, w),
    }
    landmarks, scores = decode(outputs)
    assert landmarks.shape == (2, 17, 4, 2) and scores.shape == (2, 17)
    assert torch.isfinite(landmarks).all()
    assert torch.all(scores <= level + 1e-6)
    centre_y = landmarks.mean(dim=2)[..., 1]  # mean of the corners, as landmarks.centers
    assert torch.all(centre_y[:, 1:] >= centre_y[:, :-1])


def test_a_map_with_fewer_cells_than_vertebrae_still_gives_17():
    landmarks, scores = decode_peaks([(1, 1, 0.9)], shape=(4, 3))
    assert landmarks.shape == (1, 17, 4, 2)
    assert torch.count_nonzero(scores) == 1 and scores.max() == pytest.approx(0.9)


def test_decode_reads_offsets_at_the_peak_cell():
    h, w = 16, 8
    hm = torch.zeros(1, 1, h, w)
    hm[0, 0, 9, 3] = 1.0
    reg = torch.zeros(1, 2, h, w)
    cnr = torch.zeros(1, 8, h, w)
    reg[0, :, 9, 3] = torch.tensor([0.25, 0.75])
    cnr[0, :, 9, 3] = torch.tensor([-2.0, -1.0, 2.0, -1.0, -2.0, 1.0, 2.0, 1.0])
    reg[0, :, 9, 4] = 5.0  # a neighbouring cell must not be read
    landmarks, scores = decode({"hm": hm, "reg": reg, "cnr": cnr}, k=17)
    top = int(scores[0].argmax())
    centre = torch.tensor([3.25, 9.75]) * STRIDE
    expected = centre + torch.tensor([[-2.0, -1.0], [2.0, -1.0], [-2.0, 1.0], [2.0, 1.0]]) * STRIDE
    np.testing.assert_allclose(landmarks[0, top].numpy(), expected.numpy(), rtol=1e-6)


# ---------------------------------------------------------------- input <-> original


def test_to_original_scales_each_axis_and_to_input_inverts_it():
    pts = np.array([[0.0, 0.0], [512.0, 1024.0], [100.0, 300.0]])
    orig = to_original(pts, (1024, 512), (2400, 1000))
    np.testing.assert_allclose(orig[1], [1000.0, 2400.0])
    np.testing.assert_allclose(orig[2], [100.0 * 1000 / 512, 300.0 * 2400 / 1024])
    np.testing.assert_allclose(to_input(orig, (2400, 1000), (1024, 512)), pts)


def test_to_original_keeps_torch_dtype_and_device():
    pts = torch.rand(2, 17, 4, 2, dtype=torch.float64) * 500
    orig = to_original(pts, (1024, 512), (2000, 900))
    assert isinstance(orig, torch.Tensor) and orig.dtype == torch.float64
    np.testing.assert_allclose(to_input(orig, (2000, 900), (1024, 512)).numpy(), pts.numpy())
    np.testing.assert_allclose(orig.numpy(), to_original(pts.numpy(), (1024, 512), (2000, 900)))


# ---------------------------------------------------------------- AASCE labels


@pytest.mark.skipif(not AASCE.exists(), reason="AASCE boostnet_labeldata not available")
def test_round_trip_on_every_aasce_label(perfect_outputs):
    from PIL import Image
    from scipy.io import loadmat

    input_size = (1024, 512)
    h, w = map_size(input_size)
    labels = sorted((AASCE / "labels" / "training").glob("*.mat"))
    assert len(labels) == 481
    originals, sizes = [], []
    for path in labels:
        originals.append(loadmat(path)["p2"].astype(np.float64).reshape(17, 4, 2))
        W0, H0 = Image.open(AASCE / "data" / "training" / path.stem).size
        sizes.append((H0, W0))
    scale = np.array([[[input_size[1] / W0, input_size[0] / H0]] for H0, W0 in sizes])
    spines = np.stack(originals) * scale[:, None]  # (N, 17, 4, 2) input pixels
    np.testing.assert_allclose(spines[0], to_input(originals[0], sizes[0], input_size))

    # two centres in one cell would make one of them undecodable; none do at this input size
    cells = np.floor(centers(spines) / STRIDE)
    flat = cells[..., 1] * w + cells[..., 0]
    shared = sum(len(np.unique(f)) < 17 for f in flat)
    assert shared == 0

    decoded = []
    for start in range(0, len(spines), 32):
        chunk = list(spines[start : start + 32])
        landmarks, scores = round_trip(chunk, input_size, perfect_outputs)
        assert np.all(scores == 1.0)
        decoded.append(landmarks)
    decoded = np.concatenate(decoded)
    y = centers(decoded)[..., 1]
    assert np.all(np.diff(y, axis=1) >= 0)  # top to bottom
    # some labels list vertebrae out of order, and one repeats a vertebra at the same height,
    # so pair vertebrae by nearest centre instead of comparing sorted lists
    decoded = np.stack([matched(d, s) for d, s in zip(decoded, spines, strict=True)])
    err = np.abs(decoded - spines)
    assert err.max() < EXACT, f"worst round-trip error {err.max():.4f} input pixels"

    back = np.stack([to_original(d, input_size, s) for d, s in zip(decoded, sizes, strict=True)])
    err_orig = np.abs(back - np.stack(originals)) * scale[:, None]
    assert err_orig.max() < 0.5  # within half an input pixel once mapped back


def matched(decoded: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """``decoded (17, 4, 2)`` re-ordered so that vertebra i is the one nearest reference i."""
    dist = np.linalg.norm(centers(reference)[:, None] - centers(decoded)[None], axis=-1)
    nearest = dist.argmin(axis=1)
    assert len(set(nearest.tolist())) == 17, "two reference vertebrae share a decoded one"
    return decoded[nearest]


def test_patches_are_what_a_padded_3x3_conv_reads_at_every_cell_and_border():
    torch.manual_seed(0)
    feat = torch.randn(2, 5, 7, 6)
    conv = torch.nn.Conv2d(5, 4, 3, padding=1)
    ind = torch.tensor([[0, 5, 41, 36, 20], [6, 11, 30, 35, 17]])  # corners, edges, inside
    with torch.no_grad():
        got = torch.nn.functional.linear(patches(feat, ind), conv.weight.flatten(1), conv.bias)
        want = gather(conv(feat), ind)
    assert patches(feat, ind).shape == (2, 5, 5 * 9)
    torch.testing.assert_close(got, want)


def test_top_peaks_is_the_peak_choice_of_decode():
    hm = torch.zeros(1, 1, 40, 20)
    cells = [(3, 4), (10, 10), (30, 2)]
    for i, (y, x) in enumerate(cells):
        hm[0, 0, y, x] = 0.9 - 0.1 * i
    scores, ind = top_peaks(hm)
    assert scores.shape == ind.shape == (1, N_VERTEBRAE)
    assert ind[0, :3].tolist() == [y * 20 + x for y, x in cells]
    assert torch.allclose(scores[0, :3], torch.tensor([0.9, 0.8, 0.7])) and (scores[0, 3:] == 0).all()
