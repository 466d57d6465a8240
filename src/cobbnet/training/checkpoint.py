"""Checkpoints: weights as safetensors beside a JSON of the full config.

``NAME.safetensors`` holds the network's tensors (nothing executable: user files are never
unpickled); ``NAME.json`` holds ``{"format", "version", "config", "metrics"}``. A model is
rebuilt from those two files alone with :func:`load`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from cobbnet.errors import InputError
from cobbnet.io.outputs import atomic_path, write_json
from cobbnet.nn.model import CobbNet, build_model
from cobbnet.training.config import Config, from_dict

FORMAT = "cobbnet-checkpoint"
VERSION = 1


def paths(checkpoint: str | os.PathLike) -> tuple[Path, Path]:
    """(weights, config) paths of a checkpoint given either file or the shared stem."""
    p = Path(checkpoint)
    stem = p.with_suffix("") if p.suffix in (".safetensors", ".json") else p
    return stem.with_suffix(".safetensors"), stem.with_suffix(".json")


def save(checkpoint: str | os.PathLike, model: torch.nn.Module, cfg: Config,
         metrics: dict[str, Any] | None = None, dtype: torch.dtype | None = None) -> Path:
    """Write weights (optionally cast, e.g. to fp16 for shipping) and config; returns the weights path."""
    weights, meta = paths(checkpoint)
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    if dtype is not None:
        state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
    with atomic_path(weights) as tmp:
        save_file(state, str(tmp), metadata={"format": FORMAT})
    write_json(meta, {"format": FORMAT, "version": VERSION, "config": cfg.to_dict(),
                      "metrics": metrics or {}})
    return weights


def read_meta(checkpoint: str | os.PathLike) -> dict[str, Any]:
    weights, meta = paths(checkpoint)
    if not meta.is_file():
        raise InputError(f"{meta}: checkpoint config not found (expected beside {weights.name})")
    try:
        data = json.loads(meta.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise InputError(f"{meta}: not a valid checkpoint config ({err})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise InputError(f"{meta}: not a cobbnet checkpoint config (format field missing or wrong)")
    if data.get("version", 0) > VERSION:
        raise InputError(f"{meta}: checkpoint version {data['version']} is newer than this cobbnet "
                         f"understands ({VERSION}); upgrade cobbnet")
    return data


def load(checkpoint: str | os.PathLike, map_location: str = "cpu") -> tuple[CobbNet, Config]:
    """Rebuild the model from ``NAME.safetensors`` + ``NAME.json``; weights in float32."""
    weights, meta = paths(checkpoint)
    data = read_meta(checkpoint)
    cfg = from_dict(data["config"], str(meta))
    cfg.model.pretrained = False  # the weights come from the checkpoint, never from a hub
    if not weights.is_file():
        raise InputError(f"{weights}: checkpoint weights not found")
    try:
        model = build_model(cfg.model)
    except (RuntimeError, ValueError) as err:
        raise InputError(f"{meta}: config does not fit this code ({err})") from None
    load_weights(weights, model, map_location)
    return model.eval(), cfg


def load_weights(weights: str | os.PathLike, model: torch.nn.Module, map_location: str = "cpu") -> None:
    """Read a safetensors file into ``model`` (float32), or raise InputError naming the file and
    the tensor: unreadable, a float parameter stored as integers, NaN or infinite values, or
    names and shapes that do not fit the model."""
    weights = Path(weights)
    try:
        state = load_file(str(weights), device=map_location)
    except (SafetensorError, OSError) as err:
        raise InputError(f"{weights}: not a readable safetensors file ({err})") from None
    expected = model.state_dict()
    for name, tensor in state.items():
        want = expected.get(name)
        if want is not None and want.is_floating_point() and not tensor.is_floating_point():
            raise InputError(f"{weights}: tensor {name!r} is {str(tensor.dtype).removeprefix('torch.')}, "
                             "expected floating point")
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise InputError(f"{weights}: tensor {name!r} holds NaN or infinite values")
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        problems = [line.strip() for line in str(err).splitlines()[1:] if line.strip()]
        raise InputError(f"{weights}: weights do not fit the model its config describes "
                         f"({len(problems)} problem(s); first: {problems[0] if problems else err})") from None
