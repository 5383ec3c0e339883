"""XGBoost direction model: purged walk-forward training, native JSON save, explanations."""

from __future__ import annotations

from vlm_engine.xgb.errors import XgbDataError, XgbError, XgbModelError
from vlm_engine.xgb.folds import Fold, holdout_split, walk_forward_folds
from vlm_engine.xgb.model import XgbMeta, XgbModel
from vlm_engine.xgb.pca import PcaParams, fit_pca
from vlm_engine.xgb.train import TrainResult, XgbTrainConfig, class_weights, train_xgb

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
