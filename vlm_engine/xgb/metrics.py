"""Probability metrics for a binary direction label: AUC, Brier, ECE, log loss, calibration curve."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]


def _clean(y: npt.ArrayLike, p: npt.ArrayLike) -> tuple[FloatArray, FloatArray]:
    ya = np.asarray(y, dtype=np.float64).ravel()
    pa = np.asarray(p, dtype=np.float64).ravel()
    if ya.shape != pa.shape:
        msg = f"labels ({ya.shape[0]}) and probabilities ({pa.shape[0]}) differ in length"
        raise ValueError(msg)
    keep = np.isfinite(ya) & np.isfinite(pa)
    return ya[keep], pa[keep]


def auc(y: npt.ArrayLike, p: npt.ArrayLike) -> float:
    """Area under the ROC curve (Mann-Whitney, ties counted half); NaN with a single class."""
    ya, pa = _clean(y, p)
    pos = ya > 0.5
    n_pos = int(pos.sum())
    n_neg = ya.shape[0] - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(pa, kind="mergesort")
    sorted_p = pa[order]
    ranks = np.empty(pa.shape[0], dtype=np.float64)
    # average ranks of ties
    _, first, counts = np.unique(sorted_p, return_index=True, return_counts=True)
    avg = first + (counts + 1) / 2.0
    ranks[order] = np.repeat(avg, counts)
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def brier(y: npt.ArrayLike, p: npt.ArrayLike) -> float:
    ya, pa = _clean(y, p)
    return float(np.mean((pa - ya) ** 2)) if ya.size else float("nan")


def log_loss(y: npt.ArrayLike, p: npt.ArrayLike) -> float:
    ya, pa = _clean(y, p)
    if not ya.size:
        return float("nan")
    pc = np.clip(pa, 1e-12, 1 - 1e-12)
    return float(-np.mean(ya * np.log(pc) + (1 - ya) * np.log(1 - pc)))


def calibration_curve(
    y: npt.ArrayLike, p: npt.ArrayLike, bins: int = 10
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Per equal-width bin: mean predicted probability, observed frequency, count (empty bins dropped)."""
    ya, pa = _clean(y, p)
    index = np.clip((pa * bins).astype(np.int64), 0, bins - 1)
    count = np.bincount(index, minlength=bins).astype(np.float64)
    sum_p = np.bincount(index, weights=pa, minlength=bins)
    sum_y = np.bincount(index, weights=ya, minlength=bins)
    keep = count > 0
    return sum_p[keep] / count[keep], sum_y[keep] / count[keep], count[keep]


def ece(y: npt.ArrayLike, p: npt.ArrayLike, bins: int = 10) -> float:
    """Expected calibration error over equal-width bins."""
    mean_p, freq, count = calibration_curve(y, p, bins)
    total = count.sum()
    if total == 0:
        return float("nan")
    return float(np.sum(count / total * np.abs(mean_p - freq)))


def summary(y: npt.ArrayLike, p: npt.ArrayLike) -> dict[str, float]:
    """AUC, Brier, ECE, log loss, hit rate and count of one model's predictions."""
    ya, pa = _clean(y, p)
    hit = float(np.mean((pa > 0.5) == (ya > 0.5))) if ya.size else float("nan")
    return {
        "auc": auc(ya, pa),
        "brier": brier(ya, pa),
        "ece": ece(ya, pa),
        "log_loss": log_loss(ya, pa),
        "hit_rate": hit,
        "count": float(ya.size),
    }
