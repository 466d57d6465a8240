"""Experiment configuration: typed dataclasses, read from YAML with ``key=value`` overrides.

A config has four parts: ``model`` (:class:`cobbnet.nn.model.ModelConfig`), ``loss``
(:class:`cobbnet.nn.losses.LossConfig`), ``data`` and ``train``. The defaults here are the
paper's settings; ``configs/*.yaml`` hold the named experiments. Every run writes its
resolved config beside its outputs, and a checkpoint's JSON holds the same dictionary,
so a model is rebuilt from its files alone.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from cobbnet.errors import InputError
from cobbnet.nn.losses import LossConfig
from cobbnet.nn.model import ModelConfig
from cobbnet.training.data import Augment


@dataclass
class DataConfig:
    """Where training and validation radiographs come from."""

    source: str = "aasce"  # "aasce" (a boostnet_labeldata folder) or "synthetic"
    root: str = "../shared/boostnet_labeldata"
    split: str = "training"
    folds: int = 15  # k-fold cross-validation on the training split, as in the paper
    fold: int = 0
    fold_seed: int = 0  # seed of the k-fold or holdout split
    # above 0: instead of k-fold, one fixed validation split holding out this share of the
    # patients (``data.holdout_indices``); every split is grouped by patient
    holdout: float = 0.0
    # a frozen validation split (patient keys, one a line) by path or by its name in
    # configs/splits; it overrides folds and holdout
    holdout_file: str | None = None
    synthetic_train: int = 64  # synthetic source: radiographs generated for training
    synthetic_val: int = 16
    synthetic_seed: int = 0
    synthetic_size: list[int] | None = None  # (H, W) of generated radiographs; None: varied
    extra_synthetic: int = 0  # synthetic radiographs added to the training set of a real source
    augment: bool = True
    # the share of the spine's extent, per axis, that a random crop keeps in view
    # (``data.Augment.keep``): under 1 a crop can cut T1 or L5 off at the view's edge
    augment_keep: float = Augment.keep
    # Labels that the annotation audit flags (about 27 of 481: L5 drawn at the top of the
    # image, swapped corners) in the TRAINING set: "repair" puts their vertebrae and corners
    # in the canonical order (``landmarks.canonical_order``), "skip" leaves them out, "keep"
    # trains on them as they are. Validation always keeps every image as labelled.
    faulty_labels: str = "skip"
    num_workers: int = 0

    def __post_init__(self) -> None:
        if not 0.0 < self.augment_keep <= 1.0:
            raise ValueError(f"augment_keep {self.augment_keep}: must lie in (0, 1]")


@dataclass
class TrainConfig:
    """The optimisation schedule and what Lightning runs it on."""

    epochs: int = 50
    batch_size: int = 2
    lr: float = 1.25e-4  # Adam, as in the paper
    weight_decay: float = 0.0
    lr_schedule: str = "constant"  # "constant" (paper) or "cosine"
    # Linear warm-up over the first steps: from scratch, Adam at lr >= 5e-4 without it drives
    # every heatmap logit to the clamp on step one, where the focal loss has no gradient left.
    warmup_steps: int = 0
    seed: int = 0
    precision: str = "32"  # "32", "bf16-mixed", "16-mixed", or "auto" (bf16 where native)
    accelerator: str = "auto"
    devices: Any = "auto"
    strategy: str = "auto"
    num_nodes: int = 1
    channels_last: bool = False
    # decay of an exponential moving average of the weights (0: off); with it, validation
    # and the saved weights use the average
    ema: float = 0.0
    threads: int | None = None  # torch intra-op threads on CPU; None leaves torch's default
    # start from these weights (a .safetensors checkpoint of the same model), not from scratch;
    # a resumed run takes its weights from its saved state instead
    init: str | None = None
    limit_train_batches: float = 1.0
    limit_val_batches: float = 1.0
    val_every: int = 1
    # the validation metric that picks best.safetensors (lowest wins); SMAPE compares loss variants fairly
    monitor: str = "val/smape"
    out_dir: str = "runs"
    name: str = "paper"


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


_SECTIONS = {"model": ModelConfig, "loss": LossConfig, "data": DataConfig, "train": TrainConfig}


def from_dict(raw: dict[str, Any], source: str = "config") -> Config:
    """Build a Config from a nested dict; unknown sections or keys are errors naming ``source``."""
    raw = raw or {}
    if not isinstance(raw, dict):
        raise InputError(f"{source}: expected a mapping of sections, got {type(raw).__name__}")
    unknown = set(raw) - set(_SECTIONS)
    if unknown:
        raise InputError(f"{source}: unknown section(s) {sorted(unknown)}; expected {sorted(_SECTIONS)}")
    parts = {}
    for name, cls in _SECTIONS.items():
        values = raw.get(name) or {}
        known = {f.name for f in dataclasses.fields(cls)}
        bad = set(values) - known - ({"skip_faulty_labels"} if name == "data" else set())
        if bad:
            raise InputError(f"{source}: unknown key(s) {sorted(bad)} in section '{name}'; "
                             f"known: {', '.join(sorted(known))}")
        if name == "data" and "skip_faulty_labels" in values:  # the key before data.faulty_labels
            values = {k: v for k, v in values.items() if k != "skip_faulty_labels"}
            values.setdefault("faulty_labels", "skip" if raw["data"]["skip_faulty_labels"] else "keep")
        check_types(cls, values, name, source)
        for key in ("input_size", "synthetic_size"):
            if isinstance(values.get(key), list):
                values = {**values, key: tuple(values[key])}
        try:
            parts[name] = cls(**values)
        except ValueError as err:  # a dataclass's own check, e.g. an input size not a multiple of 32
            raise InputError(f"{source}: section '{name}': {err}") from None
    return Config(**parts)


def _fits(value: Any, hint: Any) -> bool:
    """Whether ``value`` (as read from YAML or JSON) is of the annotated type ``hint``."""
    if hint is Any:
        return True
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, a) for a in args)
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            return False
        if origin is tuple and args and args[-1] is not Ellipsis:
            return len(value) == len(args) and all(_fits(v, a) for v, a in zip(value, args, strict=True))
        return all(_fits(v, args[0]) for v in value) if args else True
    return isinstance(value, hint) if isinstance(hint, type) else True


_NOUNS = {bool: ("true or false", "booleans"), int: ("a whole number", "whole numbers"),
          float: ("a number", "numbers"), str: ("text", "strings")}


def _describe(hint: Any) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in args)
    if hint is type(None):
        return "null"
    if origin in (tuple, list):
        n = f"{len(args)} " if origin is tuple and args and args[-1] is not Ellipsis else ""
        item = _NOUNS.get(args[0], (None, "values"))[1] if args else "values"
        return f"a list of {n}{item}"
    return _NOUNS.get(hint, (str(hint), None))[0]


def check_types(cls: type, values: dict[str, Any], section: str, source: str) -> None:
    """Raise InputError naming ``source`` and ``section.key`` for the first value whose type
    does not fit the dataclass field, e.g. ``model.input_size: "big"``."""
    hints = typing.get_type_hints(cls)
    for key, value in values.items():
        if key in hints and not _fits(value, hints[key]):
            raise InputError(f"{source}: {section}.{key} is {value!r}; expected {_describe(hints[key])}")


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``section.key=value`` strings (values parsed as YAML) to a nested dict copy."""
    raw = {k: dict(v or {}) for k, v in (raw or {}).items()}
    for item in overrides:
        key, sep, value = item.partition("=")
        section, dot, name = key.strip().partition(".")
        if not sep or not dot or not name:
            raise InputError(f"override {item!r}: expected section.key=value, e.g. train.epochs=5")
        raw.setdefault(section, {})[name] = yaml.safe_load(value)
    return raw


def load_config(path: str | os.PathLike | None = None, overrides: list[str] | None = None) -> Config:
    """Read a YAML config (or the defaults when ``path`` is None) and apply overrides."""
    raw: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise InputError(f"{path}: config file not found")
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as err:
            raise InputError(f"{path}: not valid YAML ({str(err).splitlines()[0]})") from None
    source = str(path) if path is not None else "config"
    try:
        return from_dict(apply_overrides(raw, overrides or []), source)
    except TypeError as err:
        raise InputError(f"{source}: {err}") from None


def dump_yaml(cfg: Config) -> str:
    return yaml.safe_dump(_plain(cfg.to_dict()), sort_keys=False)


def _plain(obj: Any) -> Any:
    """Tuples to lists, recursively, so YAML and JSON stay plain."""
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj
