"""Platt calibration of a model's P(up) (the logistic fit itself is vlm_engine.metrics.fit_logistic)."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import structlog

from vlm_engine.metrics import LogisticParams, fit_logistic, logit

log = structlog.get_logger("vlm_engine.xgb.logistic")


def fit_platt(p: npt.ArrayLike, y: npt.ArrayLike, *, what: str) -> LogisticParams | None:
    """Platt map p -> sigmoid(b + a * logit(p)) fitted on (p, y), or None (identity) when it
    cannot be fitted (one class) or would reverse the ranking (a < 0): calibration is monotone
    increasing, it may change Brier and ECE, never AUC. A refusal is logged with the slope."""
    pa = np.asarray(p, dtype=np.float64).ravel()
    ya = np.asarray(y, dtype=np.float64).ravel()
    if ya.size == 0 or ya.min() == ya.max():
        return None
    params = fit_logistic(logit(pa), ya)
    if params.coef[0] < 0:
        log.warning("calibration.refused", what=what, slope=round(params.coef[0], 6),
                    intercept=round(params.intercept, 6), rows=int(ya.size),
                    reason="negative slope would reverse the ranking; identity kept")  # fmt: skip
        return None
    return params
