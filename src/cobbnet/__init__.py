"""cobbnet: vertebra corners and Cobb angles from AP spine radiographs.

The public API is imported lazily, so ``import cobbnet`` stays cheap for the numpy-only parts.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_API = {
    "Predictor": "cobbnet.infer.predict",
    "Prediction": "cobbnet.infer.predict",
    "cobb_angles": "cobbnet.spine.cobb",
    "cobb_angles_batch": "cobbnet.spine.cobb",
    "read_split": "cobbnet.io.aasce",
    "read_image": "cobbnet.io.images",
    "summarize": "cobbnet.spine.metrics",
    "load_config": "cobbnet.training.config",
}
__all__ = ["__version__", *_API]


def __getattr__(name: str) -> Any:
    if name in _API:
        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'cobbnet' has no attribute {name!r}")
