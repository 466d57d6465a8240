"""The level network and its training (torch): shapes, the ladder's patches, resume, checkpoints."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cobbnet.errors import InputError
from cobbnet.io.synthetic import synth_sample
from cobbnet.nn.levels import LevelConfig, LevelNet
from cobbnet.spine import patches
from cobbnet.spine.landmarks import LEVELS
from cobbnet.spine.levels import CLASSES
from cobbnet.training import engines, levels


def test_level_net_gives_logits_for_each_class_and_learns() -> None:
    torch.manual_seed(0)
    net = LevelNet(LevelConfig(width=8))
    out = net(torch.rand(3, 1, 64, 64))
    assert out.shape == (3, len(CLASSES))
    out.sum().backward()
    assert all(p.grad is not None for p in net.parameters())


def test_rungs_leave_out_what_lies_outside_the_radiograph() -> None:
    _, image, lm = synth_sample(0, 0)
    lm = lm.copy()
    lm[..., 1] -= lm[0, :, 1].min() - 5.0  # T1 at the very top: C6 and C7 lie above the image
    idx, corners, classes = levels.rungs([image], lm[None])
    assert (idx == 0).all() and [CLASSES[k] for k in classes] == [*LEVELS, "S1", "S2"]
    assert (corners.mean(axis=1)[:, 1] >= 0).all()


def test_patch_batch_is_repeatable_and_augments() -> None:
    _, image, lm = synth_sample(1, 0)
    idx, corners, _ = levels.rungs([image], lm[None])
    t = levels.LevelTrain()
    a = levels.patch_batch([patches.pyramid(image)], idx, corners, np.random.default_rng(0), t, False)
    b = levels.patch_batch([patches.pyramid(image)], idx, corners, np.random.default_rng(0), t, False)
    c = levels.patch_batch([patches.pyramid(image)], idx, corners, np.random.default_rng(0), t, True)
    assert a.shape == (len(idx), 1, 64, 64) and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


def test_class_weights_count_each_class_alike() -> None:
    k = np.array([0, 1, 2, 2, 2, 2, 3, 4, 20])
    w = levels.class_weights(k).numpy()
    counts = np.bincount(k, minlength=len(CLASSES))
    seen = counts > 0
    np.testing.assert_allclose((w * counts)[seen], (w * counts)[0])
    assert (w[~seen] == 0).all()
    np.testing.assert_allclose((w[k]).mean(), 1.0)


def test_a_checkpoint_loads_in_torch_and_onnx_alike(tmp_path) -> None:
    torch.manual_seed(0)
    run = levels.LevelRun(LevelConfig(width=8))
    levels.save(tmp_path / "last", LevelNet(run.model).eval(), run, {})
    x = np.random.default_rng(0).random((4, 1, 64, 64)).astype(np.float32)
    t = engines.level_net(tmp_path / "last.safetensors", "torch")(x)
    o = engines.level_net(tmp_path / "last.safetensors", "onnx")(x)
    np.testing.assert_allclose(t, o, atol=1e-5)
    np.testing.assert_allclose(t.sum(axis=1), 1.0, atol=1e-6)


def test_a_file_of_another_kind_is_refused(tmp_path) -> None:
    (tmp_path / "x.json").write_text('{"format": "cobbnet-refine"}')
    (tmp_path / "x.safetensors").write_bytes(b"")
    with pytest.raises(InputError, match="not a cobbnet level-network checkpoint"):
        levels.load(tmp_path / "x.safetensors")


def test_a_bad_config_key_is_one_line_error(tmp_path) -> None:
    with pytest.raises(InputError, match="unknown section or key"):
        levels.load_run_config(None, ["train.nope=1"])
