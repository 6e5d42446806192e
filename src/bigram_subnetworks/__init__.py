"""Bigram subnetworks: the minimal weights of a transformer that map current to next token.

Reproduces Chang & Bergen (NeurIPS 2025) as a library and a Snakemake pipeline. Importing the
package is cheap: the names below load their modules (and torch, transformers) on first use.

    from bigram_subnetworks import find_bigram_subnetwork, evaluate_subnetwork, apply_mask
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# Public name → the module that defines it.
_EXPORTS = {
    "find_bigram_subnetwork": "api",
    "find_optimal_subnetwork": "api",
    "evaluate_subnetwork": "api",
    "Subnetwork": "api",
    "sweep_lambdas": "api",
    "kept_by_block": "evaluation",
    "Mask": "masking",
    "apply_mask": "masking",
    "masked_copy": "interop",
    "export_released": "interop",
    "load_released_mask": "released",
    "MaskTrainingConfig": "training",
    "REGISTRY": "architectures",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
