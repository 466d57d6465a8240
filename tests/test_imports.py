"""The light install's core stays torch-free; commands that need the training extra say so."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
from typer.testing import CliRunner

from cobbnet.cli import TRAIN_MODULES, app

# what only the training extra brings; none may load when the core is imported
HEAVY = ("torch", "torchvision", "timm", "lightning", "albumentations", "scipy")

_PROBE = textwrap.dedent('''
    import importlib, pkgutil, sys
    target = sys.argv[1]
    module = importlib.import_module(target)
    names = [target]
    if hasattr(module, "__path__") and target != "cobbnet":  # the top level: the package alone
        names += [m.name for m in pkgutil.walk_packages(module.__path__, target + ".")]
    for name in names:
        importlib.import_module(name)
        loaded = [m for m in {heavy} if m in sys.modules]
        if loaded:
            print(f"{{name}} imports {{', '.join(loaded)}}")
            sys.exit(1)
    print(f"{{len(names)}} modules, torch-free")
''').format(heavy=HEAVY)


def _probe(target: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", _PROBE, target], capture_output=True, text=True,
                          timeout=120)


@pytest.mark.parametrize("target", [
    "cobbnet",
    "cobbnet.io",
    "cobbnet.spine",
    "cobbnet.report",
    "cobbnet.cli",
    "cobbnet.infer",
])
def test_core_imports_no_torch(target):
    result = _probe(target)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "torch-free" in result.stdout


@pytest.mark.parametrize("command", ["train", "demo", "export"])
def test_training_commands_name_the_extra_when_it_is_missing(command, monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "torch", None)  # find_spec says absent, import fails
    args = [command, "--onnx", str(tmp_path / "m.onnx")] if command == "export" else [command]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert lines == [f"cobbnet {command} needs the training extra: pip install 'cobbnet[train]'"]
    assert not list(tmp_path.iterdir())


def test_a_missing_training_module_inside_any_command_is_one_line(monkeypatch):
    import typer

    from cobbnet.cli import user_errors

    @user_errors
    def evaluate() -> None:
        import torch  # noqa: F401

    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(typer.Exit) as exit_info:
        evaluate()
    assert exit_info.value.exit_code == 2
    assert "torch" in TRAIN_MODULES


def test_one_version():
    """pyproject.toml reads the version from cobbnet.__version__, so the two agree."""
    from importlib.metadata import version

    import cobbnet

    assert version("cobbnet") == cobbnet.__version__ == "0.2.0"
