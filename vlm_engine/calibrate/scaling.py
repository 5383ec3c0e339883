"""Fitting calibration: temperature scaling by NLL, Platt scaling, and k-fold cross-validation of both."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import numpy.typing as npt
import structlog

from vlm_engine.calibrate.metrics import FloatArray, IntArray, nll, softmax
from vlm_engine.calibrate.params import FoldStats
from vlm_engine.metrics import fit_logistic

log = structlog.get_logger("vlm_engine.calibrate")

_GOLDEN = (math.sqrt(5.0) - 1.0) / 2.0
IDENTITY_PLATT = (1.0, 0.0)


def fit_temperature(
    logits: FloatArray, labels: IntArray, *, low: float = 0.02, high: float = 50.0
) -> float:
    """The T > 0 minimising NLL of softmax(logits / T), by golden-section search on log T."""
    if labels.size == 0:
        return 1.0

    def loss(log_t: float) -> float:
        return nll(softmax(logits / math.exp(log_t)), labels)

    a, b = math.log(low), math.log(high)
    c, d = b - _GOLDEN * (b - a), a + _GOLDEN * (b - a)
    fc, fd = loss(c), loss(d)
    for _ in range(60):
        if fc < fd:
            b, d, fd = d, c, fc
            c = b - _GOLDEN * (b - a)
            fc = loss(c)
        else:
            a, c, fc = c, d, fd
            d = a + _GOLDEN * (b - a)
            fd = loss(d)
    return math.exp((a + b) / 2.0)


def fit_platt_scores(
    scores: FloatArray, positive: npt.NDArray[np.bool_], *, l2: float = 1e-3
) -> tuple[float, float]:
    """(a, b) of p = sigmoid(a * score + b): vlm_engine.metrics.fit_logistic (Newton, L2 l2 on a)
    on Platt's smoothed targets.

    Monotone increasing only: a fit with a < 0 would reverse the score's ranking, so it is
    refused (logged as `calibration.refused`) and the identity (1, 0) is returned instead; so is
    a fit on one class only (the constant base rate it used to return erased the ranking: AUC 0.5),
    as vlm_engine.metrics.fit_platt does.
    """
    if positive.size == 0 or positive.all() or not positive.any():
        return IDENTITY_PLATT
    # Platt's smoothed targets keep the fit finite on separable data.
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    target = np.where(positive, (n_pos + 1) / (n_pos + 2), 1 / (n_neg + 2))
    # fit_logistic scales its penalty by the row count: l2 / n keeps this fit's absolute l2
    params = fit_logistic(scores, target, l2=l2 / positive.size)
    slope = params.coef[0]
    if slope < 0:
        log.warning(
            "calibration.refused",
            reason="negative_slope",
            slope=round(slope, 6),
            rows=int(positive.size),
        )
        return IDENTITY_PLATT
    return slope, params.intercept


def kfold_indexes(n: int, k: int, seed: int) -> list[tuple[IntArray, IntArray]]:
    """(train, held-out) index pairs of k deterministic folds."""
    order = np.random.default_rng(seed).permutation(n)
    folds = np.array_split(order, k)
    return [
        (np.concatenate([f for j, f in enumerate(folds) if j != i]), folds[i]) for i in range(k)
    ]


def fold_stats(values: list[float]) -> FoldStats:
    arr = np.asarray(values, dtype=np.float64)
    return FoldStats(
        mean=float(arr.mean()), std=float(arr.std()), folds=tuple(float(v) for v in arr)
    )


def cross_validate(
    n: int,
    k: int,
    seed: int,
    fit: Callable[[IntArray], float],
    score: Callable[[IntArray, float], float],
) -> tuple[FoldStats, FoldStats]:
    """Fit a one-parameter calibrator on k-1 folds and score it on the held-out one; (param stats, score stats)."""
    params: list[float] = []
    scores: list[float] = []
    for train, held in kfold_indexes(n, k, seed):
        value = fit(train)
        params.append(value)
        scores.append(score(held, value))
    return fold_stats(params), fold_stats(scores)
