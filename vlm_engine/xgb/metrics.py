"""Probability metrics of the XGBoost direction model: the project's one definition of each
(vlm_engine.metrics), under the names the xgb callers and model cards use."""

from __future__ import annotations

import numpy.typing as npt

from vlm_engine import metrics
from vlm_engine.metrics import auc, brier, calibration_curve, ece, log_loss

__all__ = ["auc", "brier", "calibration_curve", "ece", "log_loss", "summary"]


def summary(y: npt.ArrayLike, p: npt.ArrayLike) -> dict[str, float]:
    """vlm_engine.metrics.summary with the row count also under "count" (card keys *_count)."""
    out = metrics.summary(y, p)
    return {**out, "count": out["n"]}
