"""cobbnet: vertebra corners and Cobb angles from AP spine radiographs.

The public API is imported lazily, so ``import cobbnet`` costs nothing and imports neither
torch nor onnxruntime: each name loads its module on first use. ``load_config`` needs the
training extra (``pip install 'cobbnet[train]'``); everything else runs on the light install.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.2.0"  # the one place the version is set; pyproject.toml reads it

_API = {
    "Predictor": "cobbnet.infer.predict",
    "Prediction": "cobbnet.infer.predict",
    "cobb_angles": "cobbnet.spine.cobb",
    "cobb_angles_batch": "cobbnet.spine.cobb",
    "read_split": "cobbnet.io.aasce",
    "read_image": "cobbnet.io.images",
    "summarize": "cobbnet.spine.metrics",
    "draw_overlay": "cobbnet.report.overlay",
    "result_record": "cobbnet.report.result",
    "validate_result": "cobbnet.report.result",
    "write_report": "cobbnet.report.pdf",
    "load_config": "cobbnet.training.config",
}
__all__ = ["__version__", *_API]


def __getattr__(name: str) -> Any:
    if name in _API:
        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'cobbnet' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_API))
