"""Inference speed of every backbone and mode on this machine (see docs/speed.md).

    python benchmarks/speed.py --quick                       # about two minutes
    python benchmarks/speed.py --out benchmarks/results/cpu-DATE.json
    python benchmarks/speed.py --checkpoint runs/paper/fold-0/best.safetensors   # + drift
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from typing import Any

from bench import FULL, GPU_MODES, MODES, run_benchmark


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="one model, three modes, two rounds")
    parser.add_argument("--models", nargs="+", metavar="NAME", help=f"default: {' '.join(FULL.models)}")
    parser.add_argument("--modes", nargs="+", metavar="MODE", choices=[*MODES, *GPU_MODES],
                        help=f"default: all of {' '.join(MODES)} (and the GPU modes on a GPU)")
    parser.add_argument("--out", help="JSON file to write the results to")
    parser.add_argument("--checkpoint", help="trained checkpoint: its weights, and drift on AASCE images")
    parser.add_argument("--repeats", type=int, help="timed rounds per figure (default: 2 quick, 3 full)")
    parser.add_argument("--threads", type=int, help="torch and ONNX Runtime threads (default: torch's)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    return run_benchmark(args.quick, args.models, args.modes, args.out, args.checkpoint, args.threads,
                         repeats=args.repeats)


if __name__ == "__main__":
    main()
