"""XGBoost direction model: purged walk-forward training, native JSON save, explanations.

The training names are imported on first use: loading a bundle for scoring needs none of them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from vlm_engine.xgb.errors import XgbDataError, XgbError, XgbModelError
from vlm_engine.xgb.folds import Fold, holdout_split, walk_forward_folds
from vlm_engine.xgb.model import XgbMeta, XgbModel
from vlm_engine.xgb.pca import PcaParams, fit_pca

if TYPE_CHECKING:
    from vlm_engine.xgb.train import TrainResult, XgbTrainConfig, class_weights, train_xgb

_TRAIN_NAMES = frozenset({"TrainResult", "XgbTrainConfig", "class_weights", "train_xgb"})


def __getattr__(name: str) -> Any:
    if name in _TRAIN_NAMES:
        return getattr(importlib.import_module("vlm_engine.xgb.train"), name)
    msg = f"module {__name__!r} has no attribute {name!r}"
    raise AttributeError(msg)


__all__ = [
    "Fold",
    "PcaParams",
    "TrainResult",
    "XgbDataError",
    "XgbError",
    "XgbMeta",
    "XgbModel",
    "XgbModelError",
    "XgbTrainConfig",
    "class_weights",
    "fit_pca",
    "holdout_split",
    "train_xgb",
    "walk_forward_folds",
]
