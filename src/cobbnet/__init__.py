"""cobbnet: vertebra corners and Cobb angles from AP spine radiographs.

The public API is imported lazily, so ``import cobbnet`` stays cheap for the numpy-only parts.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_API = {
    "Predictor": "cobbnet.predict",
    "Prediction": "cobbnet.predict",
    "cobb_angles": "cobbnet.cobb",
    "cobb_angles_batch": "cobbnet.cobb",
    "read_split": "cobbnet.aasce",
    "read_image": "cobbnet.images",
    "summarize": "cobbnet.metrics",
    "load_config": "cobbnet.config",
}
__all__ = ["__version__", *_API]


def __getattr__(name: str) -> Any:
    if name in _API:
        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'cobbnet' has no attribute {name!r}")
