"""A small L2-regularised logistic regression (Newton steps) for Platt scaling and stacking."""

from __future__ import annotations

import math

import msgspec
import numpy as np
import numpy.typing as npt
import structlog

FloatArray = npt.NDArray[np.float64]

log = structlog.get_logger("vlm_engine.xgb.logistic")


class LogisticParams(msgspec.Struct, frozen=True, kw_only=True):
    """p = sigmoid(intercept + coef . x)."""

    coef: tuple[float, ...]
    intercept: float

    def predict(self, x: npt.ArrayLike) -> FloatArray:
        xa = np.asarray(x, dtype=np.float64)
        if xa.ndim == 1:
            xa = xa[:, None]
        z = self.intercept + xa @ np.asarray(self.coef, dtype=np.float64)
        return sigmoid(z)


def sigmoid(z: npt.ArrayLike) -> FloatArray:
    za = np.clip(np.asarray(z, dtype=np.float64), -40.0, 40.0)
    return 1.0 / (1.0 + np.exp(-za))


def logit(p: npt.ArrayLike, eps: float = 1e-6) -> FloatArray:
    pa = np.clip(np.asarray(p, dtype=np.float64), eps, 1 - eps)
    return np.log(pa / (1 - pa))


def sigmoid_scalar(z: float) -> float:
    """sigmoid() of one float in plain Python (a NumPy call on a scalar costs ~10 us; the live
    fusion makes a few per symbol per bar)."""
    return 1.0 / (1.0 + math.exp(-min(max(z, -40.0), 40.0)))


def logit_scalar(p: float, eps: float = 1e-6) -> float:
    """logit() of one float in plain Python (see sigmoid_scalar)."""
    q = min(max(p, eps), 1 - eps)
    return math.log(q / (1 - q))


def fit_logistic(
    x: npt.ArrayLike,
    y: npt.ArrayLike,
    *,
    l2: float = 1e-3,
    weights: npt.ArrayLike | None = None,
    iterations: int = 50,
) -> LogisticParams:
    """Fit by Newton-Raphson; l2 penalises the coefficients (not the intercept)."""
    xa = np.asarray(x, dtype=np.float64)
    if xa.ndim == 1:
        xa = xa[:, None]
    ya = np.asarray(y, dtype=np.float64).ravel()
    n, k = xa.shape
    if n == 0 or n != ya.shape[0]:
        msg = f"logistic fit needs matching non-empty x ({n}) and y ({ya.shape[0]})"
        raise ValueError(msg)
    w = np.ones(n) if weights is None else np.asarray(weights, dtype=np.float64).ravel()
    design = np.column_stack([np.ones(n), xa])
    beta = np.zeros(k + 1)
    penalty = np.full(k + 1, l2 * w.sum())
    penalty[0] = 1e-9
    for _ in range(iterations):
        p = sigmoid(design @ beta)
        grad = design.T @ (w * (p - ya)) + penalty * beta
        hess = (design * (w * p * (1 - p))[:, None]).T @ design + np.diag(penalty)
        step = np.linalg.solve(hess, grad)
        beta -= step
        if float(np.max(np.abs(step))) < 1e-8:
            break
    return LogisticParams(coef=tuple(float(b) for b in beta[1:]), intercept=float(beta[0]))


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
