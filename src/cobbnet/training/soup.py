"""Average the weights of stage-1 runs fine-tuned from one starting point into one network.

A uniform model soup (Wortsman et al. 2022): one network, read at the cost of one.

    python -m cobbnet.training.soup OUT.safetensors RUN_A.safetensors RUN_B.safetensors [...]

The runs must describe the same network (``model`` section of their configs: backbone, heads,
input size, input normalisation) and should share their starting weights (``train.init``):
weights of independent runs from scratch do not average into a working network. The output is
a checkpoint like any other (``OUT.safetensors`` + ``OUT.json``, float32), its config the first
run's, and its ``metrics.soup`` the runs it averages (name, seed, sha256 of their weights).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch

from cobbnet.errors import InputError
from cobbnet.infer.bundle import sha256
from cobbnet.nn.model import CobbNet
from cobbnet.training import checkpoint
from cobbnet.training.config import Config


def soup(runs: list[str | os.PathLike]) -> tuple[CobbNet, Config, list[dict]]:
    """The average of ``runs``' weights in a model built from the first run's config, that
    config, and one record per run. Integer buffers (BatchNorm's step counters) are the first
    run's. Raises InputError naming the run that does not fit."""
    if len(runs) < 2:
        raise InputError(f"{runs[0] if runs else 'soup'}: need at least two checkpoints to average")
    weights = [checkpoint.paths(r)[0] for r in runs]
    if len(set(w.resolve() for w in weights)) < len(weights):
        raise InputError(f"{weights[0]}: the same checkpoint is given twice")
    model, cfg = checkpoint.load(runs[0])
    total = {k: v.double() for k, v in model.state_dict().items() if v.is_floating_point()}
    records = [_record(weights[0], cfg)]
    for run, path in zip(runs[1:], weights[1:], strict=True):
        other, other_cfg = checkpoint.load(run)
        if other_cfg.model != cfg.model:
            raise InputError(f"{checkpoint.paths(run)[1]}: its model section differs from "
                             f"{checkpoint.paths(runs[0])[1].name}'s ({_difference(cfg.model, other_cfg.model)})")
        if other_cfg.train.init != cfg.train.init:
            raise InputError(f"{checkpoint.paths(run)[1]}: starts from {other_cfg.train.init or 'scratch'}, "
                             f"not {cfg.train.init or 'scratch'} like {weights[0].name}: only fine-tunes "
                             "of one starting point average into a working network")
        for k, v in other.state_dict().items():
            if k in total:
                total[k] += v.double()
        records.append(_record(path, other_cfg))
    state = model.state_dict()
    with torch.no_grad():
        for k, v in total.items():
            state[k].copy_((v / len(runs)).to(state[k].dtype))
    return model, cfg, records


def _record(weights: Path, cfg: Config) -> dict:
    return {"weights": str(weights), "name": cfg.train.name, "seed": cfg.train.seed, "sha256": sha256(weights)}


def _difference(a, b) -> str:
    keys = [k for k in vars(a) if getattr(a, k) != getattr(b, k)]
    return ", ".join(f"{k}: {getattr(a, k)!r} vs {getattr(b, k)!r}" for k in keys) or "differs"


def write(out: str | os.PathLike, runs: list[str | os.PathLike]) -> Path:
    """Average ``runs`` into the checkpoint ``out``; never over one of the runs. Returns the weights path."""
    target = checkpoint.paths(out)
    for run in runs:
        if any(t.resolve() == s.resolve() for t in target for s in checkpoint.paths(run)):
            raise InputError(f"{target[0]}: would overwrite one of the checkpoints it averages")
    model, cfg, records = soup(runs)
    return checkpoint.save(out, model, cfg, {"soup": records})


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m cobbnet.training.soup", description=__doc__.split("\n")[0])
    p.add_argument("out", type=Path, help="the averaged checkpoint (OUT.safetensors + OUT.json)")
    p.add_argument("runs", type=Path, nargs="+", help="checkpoints to average (.safetensors with .json beside)")
    a = p.parse_args(argv)
    try:
        path = write(a.out, a.runs)
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"averaged {len(a.runs)} runs into {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
