"""Metrics of P(up) against a binary direction label, one definition each, and their uncertainty.

Every figure about predictive power in the project comes from here (see EVALUATION.md):
- `auc`: area under the ROC curve of P(up), ties ranked by average; NaN with a single class.
- `brier`, `log_loss`: of P(up).
- `ece`: expected calibration error of P(up) (not of the top label) over ECE_BINS equal-width bins.
- `base_rate`: share of up labels; `hit_rate`: share of rows where P(up) > 0.5 calls the label.
- `unmeasured`: why a metric has no value ("one class only", "no rows"); callers say it instead of NaN.
- `sigmoid`, `logit`, `fit_logistic` (L2-regularised Newton fit, `LogisticParams`): the one logistic
  map of the project, used by every Platt calibration, stacking and recalibration.
- `fit_platt`: the Platt map of a model's P(up) (on its logit), refused when it would reverse the
  ranking or cannot be fitted (one class).
- `block_bootstrap`: 95% intervals by moving-block bootstrap over time. Symbols are pooled by
  resampling blocks of distinct times across all of them together (cross-sectional correlation is
  kept); differences between models are paired (the same resampled blocks for both).
NaN labels or probabilities are dropped row-wise by every metric.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import msgspec
import numpy as np
import numpy.typing as npt
import structlog

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

ECE_BINS = 10
CONFIDENCE = 0.95
ONE_CLASS_ONLY = "one class only"
NO_ROWS = "no rows"

log = structlog.get_logger("vlm_engine.metrics")


def _clean(y: npt.ArrayLike, p: npt.ArrayLike) -> tuple[FloatArray, FloatArray]:
    ya = np.asarray(y, dtype=np.float64).ravel()
    pa = np.asarray(p, dtype=np.float64).ravel()
    if ya.shape != pa.shape:
        msg = f"labels ({ya.shape[0]}) and probabilities ({pa.shape[0]}) differ in length"
        raise ValueError(msg)
    keep = np.isfinite(ya) & np.isfinite(pa)
    return ya[keep], pa[keep]


def _tie_groups(p: FloatArray) -> tuple[IntArray, IntArray]:
    """The order sorting p, and each sorted row's tie-group id (equal p = one group)."""
    order = np.argsort(p, kind="mergesort")
    sp = p[order]
    new = np.empty(sp.shape[0], dtype=bool)
    new[:1] = True
    new[1:] = sp[1:] != sp[:-1]
    return order.astype(np.int64), (np.cumsum(new) - 1).astype(np.int64)


def _weighted_auc(up: FloatArray, w: FloatArray, group: IntArray, n_groups: int) -> float:
    """AUC of rows already sorted by p (tie groups given), each row weighted: O(n)."""
    w_pos = np.bincount(group, weights=w * up, minlength=n_groups)
    w_neg = np.bincount(group, weights=w * (1.0 - up), minlength=n_groups)
    total_pos, total_neg = w_pos.sum(), w_neg.sum()
    if total_pos <= 0 or total_neg <= 0:
        return float("nan")
    below = np.cumsum(w_neg) - w_neg  # negative weight strictly below each group
    return float(np.sum(w_pos * (below + 0.5 * w_neg)) / (total_pos * total_neg))


def auc(y: npt.ArrayLike, p: npt.ArrayLike) -> float:
    """Area under the ROC curve of P(up) (Mann-Whitney, ties by average rank); NaN with one class."""
    ya, pa = _clean(y, p)
    if ya.size == 0:
        return float("nan")
    order, group = _tie_groups(pa)
    return _weighted_auc(ya[order], np.ones(ya.size), group, int(group[-1]) + 1)


def brier(y: npt.ArrayLike, p: npt.ArrayLike) -> float:
    ya, pa = _clean(y, p)
    return float(np.mean((pa - ya) ** 2)) if ya.size else float("nan")


def log_loss(y: npt.ArrayLike, p: npt.ArrayLike) -> float:
    ya, pa = _clean(y, p)
    if not ya.size:
        return float("nan")
    pc = np.clip(pa, 1e-12, 1 - 1e-12)
    return float(-np.mean(ya * np.log(pc) + (1 - ya) * np.log(1 - pc)))


def base_rate(y: npt.ArrayLike) -> float:
    ya = np.asarray(y, dtype=np.float64).ravel()
    ya = ya[np.isfinite(ya)]
    return float(ya.mean()) if ya.size else float("nan")


def hit_rate(y: npt.ArrayLike, p: npt.ArrayLike) -> float:
    """Share of rows where P(up) > 0.5 agrees with the label (label > 0.5)."""
    ya, pa = _clean(y, p)
    return float(np.mean((pa > 0.5) == (ya > 0.5))) if ya.size else float("nan")


def unmeasured(y: npt.ArrayLike) -> str | None:
    """Why AUC (and, with no rows, every metric) of these labels has no value; None when it has one."""
    ya = np.asarray(y, dtype=np.float64).ravel()
    ya = ya[np.isfinite(ya)]
    if ya.size == 0:
        return NO_ROWS
    up = ya > 0.5
    return ONE_CLASS_ONLY if bool(up.all()) or not bool(up.any()) else None


def auc_text(y: npt.ArrayLike, p: npt.ArrayLike, digits: int = 4) -> str:
    """AUC of P(up) as text: the number, or why it has none ("one class only", "no rows")."""
    value = auc(y, p)
    return f"{value:.{digits}f}" if np.isfinite(value) else unmeasured(y) or "nan"


def calibration_curve(
    y: npt.ArrayLike, p: npt.ArrayLike, bins: int = ECE_BINS
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Per equal-width bin of P(up): mean P(up), observed up-frequency, count (empty bins dropped)."""
    ya, pa = _clean(y, p)
    index = np.clip((pa * bins).astype(np.int64), 0, bins - 1)
    count = np.bincount(index, minlength=bins).astype(np.float64)
    sum_p = np.bincount(index, weights=pa, minlength=bins)
    sum_y = np.bincount(index, weights=ya, minlength=bins)
    keep = count > 0
    return sum_p[keep] / count[keep], sum_y[keep] / count[keep], count[keep]


def ece(y: npt.ArrayLike, p: npt.ArrayLike, bins: int = ECE_BINS) -> float:
    """Expected calibration error of P(up) over `bins` equal-width bins (count-weighted |gap|)."""
    mean_p, freq, count = calibration_curve(y, p, bins)
    total = count.sum()
    if total == 0:
        return float("nan")
    return float(np.sum(count / total * np.abs(mean_p - freq)))


def summary(y: npt.ArrayLike, p: npt.ArrayLike) -> dict[str, float]:
    """AUC, Brier, ECE, log loss, hit rate and row count n of one model's P(up)."""
    ya, pa = _clean(y, p)
    return {
        "auc": auc(ya, pa),
        "brier": brier(ya, pa),
        "ece": ece(ya, pa),
        "log_loss": log_loss(ya, pa),
        "hit_rate": hit_rate(ya, pa),
        "n": float(ya.size),
    }


def sigmoid(z: npt.ArrayLike) -> FloatArray:
    """1 / (1 + exp(-z)), z clipped to [-40, 40] (no overflow; the ends are 0 and 1 in float64)."""
    za = np.clip(np.asarray(z, dtype=np.float64), -40.0, 40.0)
    return 1.0 / (1.0 + np.exp(-za))  # type: ignore[no-any-return]


def logit(p: npt.ArrayLike, eps: float = 1e-6) -> FloatArray:
    """log(p / (1 - p)), p clipped to [eps, 1 - eps]."""
    pa = np.clip(np.asarray(p, dtype=np.float64), eps, 1 - eps)
    return np.log(pa / (1 - pa))  # type: ignore[no-any-return]


def sigmoid_scalar(z: float) -> float:
    """sigmoid() of one float in plain Python (a NumPy call on a scalar costs ~10 us; the live
    fusion makes a few per symbol per bar)."""
    return 1.0 / (1.0 + math.exp(-min(max(z, -40.0), 40.0)))


def logit_scalar(p: float, eps: float = 1e-6) -> float:
    """logit() of one float in plain Python (see sigmoid_scalar)."""
    q = min(max(p, eps), 1 - eps)
    return math.log(q / (1 - q))


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


def fit_logistic(
    x: npt.ArrayLike,
    y: npt.ArrayLike,
    *,
    l2: float = 1e-3,
    weights: npt.ArrayLike | None = None,
    iterations: int = 50,
) -> LogisticParams:
    """Fit p = sigmoid(b + a . x) to targets y in [0, 1] by Newton-Raphson on the log loss.

    l2 x (sum of weights) penalises the coefficients (not the intercept)."""
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


class BootstrapConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Moving-block bootstrap over time; block_bars 0 = max(20, 4 x horizon)."""

    resamples: int = 1000
    block_bars: int = 0
    confidence: float = CONFIDENCE
    seed: int = 0

    def __post_init__(self) -> None:
        if self.resamples < 500:
            msg = f"bootstrap.resamples is {self.resamples}: use at least 500"
            raise ValueError(msg)
        if not 0 < self.confidence < 1:
            msg = f"bootstrap.confidence is {self.confidence}: must lie in (0, 1)"
            raise ValueError(msg)

    def block_for(self, horizon_bars: int) -> int:
        return self.block_bars or max(20, 4 * horizon_bars)


class Interval(msgspec.Struct, frozen=True, kw_only=True):
    """A point estimate and its bootstrap interval."""

    value: float
    low: float
    high: float


class BootstrapResult(msgspec.Struct, frozen=True, kw_only=True):
    """AUC intervals per model and paired AUC differences ("a - b"), with the block length used."""

    auc: dict[str, Interval]
    differences: dict[str, Interval]
    block_bars: int
    resamples: int
    confidence: float


def _interval(value: float, draws: FloatArray, confidence: float) -> Interval:
    draws = draws[np.isfinite(draws)]
    if not np.isfinite(value) or draws.size == 0:
        return Interval(value=value, low=float("nan"), high=float("nan"))
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(draws, [tail, 100 - tail])
    # a percentile interval can miss a point estimate on a skewed distribution: widen to hold it
    return Interval(value=value, low=float(min(low, value)), high=float(max(high, value)))


def block_bootstrap(
    ts: npt.ArrayLike,
    y: npt.ArrayLike,
    probabilities: Mapping[str, npt.ArrayLike],
    *,
    block_bars: int,
    config: BootstrapConfig,
    pairs: Sequence[tuple[str, str]] = (),
) -> BootstrapResult:
    """AUC intervals of each model and of the paired differences, by moving-block bootstrap.

    Rows are (symbol, time) predictions; each resample draws blocks of `block_bars` consecutive
    distinct times (all symbols together) until it covers as many times as the data, and weights
    every row by how often its time was drawn. The rows must be the same for every model
    (finite labels and probabilities), as the paired differences need.
    """
    tsa = np.asarray(ts, dtype=np.int64).ravel()
    ya = np.asarray(y, dtype=np.float64).ravel()
    probs = {m: np.asarray(p, dtype=np.float64).ravel() for m, p in probabilities.items()}
    for m, p in probs.items():
        if p.shape != ya.shape or tsa.shape != ya.shape:
            msg = f"bootstrap of {m}: {p.shape[0]} probabilities, {ya.shape[0]} labels, {tsa.shape[0]} times"
            raise ValueError(msg)
        if not (np.isfinite(p).all() and np.isfinite(ya).all()):
            msg = f"bootstrap of {m}: labels and probabilities must be finite on every row"
            raise ValueError(msg)
    times, time_index = np.unique(tsa, return_inverse=True)
    n_times = times.shape[0]
    block = max(1, min(block_bars, n_times))
    n_blocks = -(-n_times // block)
    rng = np.random.default_rng(config.seed)
    sorted_rows = {}
    for m, p in probs.items():
        order, group = _tie_groups(p)
        sorted_rows[m] = (order, group, ya[order], int(group[-1]) + 1 if group.size else 0)
    draws = {m: np.empty(config.resamples) for m in probs}
    offsets = np.arange(block)
    for r in range(config.resamples):
        starts = rng.integers(0, n_times - block + 1, size=n_blocks)
        drawn = (starts[:, None] + offsets).ravel()[:n_times]
        time_weight = np.bincount(drawn, minlength=n_times).astype(np.float64)
        row_weight = time_weight[time_index]
        for m, (order, group, up, n_groups) in sorted_rows.items():
            draws[m][r] = _weighted_auc(up, row_weight[order], group, n_groups)
    point = {m: auc(ya, p) for m, p in probs.items()}
    return BootstrapResult(
        auc={m: _interval(point[m], draws[m], config.confidence) for m in probs},
        differences={
            f"{a} - {b}": _interval(point[a] - point[b], draws[a] - draws[b], config.confidence)
            for a, b in pairs
        },
        block_bars=block,
        resamples=config.resamples,
        confidence=config.confidence,
    )


def fit_platt(p: npt.ArrayLike, y: npt.ArrayLike, *, model: str) -> LogisticParams | None:
    """Platt map p -> sigmoid(b + a * logit(p)) fitted on (p, y), or None (identity) when it
    cannot be fitted (one class) or would reverse the ranking (a < 0): calibration is monotone
    increasing, it may change Brier and ECE, never AUC. A refusal is logged with the slope."""
    pa = np.asarray(p, dtype=np.float64).ravel()
    ya = np.asarray(y, dtype=np.float64).ravel()
    if ya.size == 0 or ya.min() == ya.max():
        return None
    params = fit_logistic(logit(pa), ya)
    if params.coef[0] < 0:
        log.warning("calibration.refused", model=model, reason="negative_slope",
                    slope=round(params.coef[0], 6), intercept=round(params.intercept, 6),
                    rows=int(ya.size))  # fmt: skip
        return None
    return params
