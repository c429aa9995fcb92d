"""MUST Studio's engine: adapt a CLIP zero-shot classifier to unlabelled images with
Masked Unsupervised Self-Training. Plain Python + torch; no GUI imports.

The public API is re-exported lazily from here so ``import must_engine`` stays fast.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from must_engine.version import __version__

_EXPORTS = {
    "MustSettings": "must_engine.settings",
    "PRESETS": "must_engine.settings",
    "resolve_settings": "must_engine.settings",
    "ModelSpec": "must_engine.models.source",
    "ModelError": "must_engine.models.source",
    "TrainJob": "must_engine.runs",
    "open_run": "must_engine.runs",
    "RunError": "must_engine.runs",
    "TrainControl": "must_engine.training.control",
    "Trainer": "must_engine.training.trainer",
    "prepare_run": "must_engine.training.trainer",
    "train": "must_engine.training.trainer",
    "scan_folder": "must_engine.images",
    "list_devices": "must_engine.devices",
    "predict_run": "must_engine.predict",
    "Predictions": "must_engine.predict",
    "load_classifier": "must_engine.classifier",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'must_engine' has no attribute {name!r}")
