"""Outputs are written whole or not at all, as ordinary readable files."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import numpy as np
import pytest

from cobbnet.io.outputs import atomic_path, write_json, write_text


def test_written_file_is_whole_and_readable_by_others(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        write_text(tmp_path / "sub" / "a.txt", "hello")
    finally:
        os.umask(old)
    path = tmp_path / "sub" / "a.txt"
    assert path.read_text() == "hello"
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert [p.name for p in path.parent.iterdir()] == ["a.txt"]  # no temporary left behind


def test_failure_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "r.json"
    write_json(path, {"v": 1})
    with pytest.raises(RuntimeError), atomic_path(path) as tmp:
        tmp.write_text("half")
        raise RuntimeError("writer failed")
    assert json.loads(path.read_text()) == {"v": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json"]


def test_temporary_keeps_the_suffix(tmp_path: Path) -> None:
    with atomic_path(tmp_path / "plot.png") as tmp:
        assert tmp.suffix == ".png" and tmp.parent == tmp_path
        tmp.write_bytes(b"x")


def test_json_takes_numpy_values(tmp_path: Path) -> None:
    write_json(tmp_path / "n.json", {"a": np.arange(3), "b": np.float32(1.5)})
    assert json.loads((tmp_path / "n.json").read_text()) == {"a": [0, 1, 2], "b": 1.5}
