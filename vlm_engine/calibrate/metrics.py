"""Classification, retrieval and calibration metrics on NumPy arrays (no model code)."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


def softmax(logits: npt.ArrayLike, axis: int = -1) -> FloatArray:
    x = np.asarray(logits, dtype=np.float64)
    x = x - x.max(axis=axis, keepdims=True)
    e = np.exp(x)
    return e / e.sum(axis=axis, keepdims=True)  # type: ignore[no-any-return]


def sigmoid(x: npt.ArrayLike) -> FloatArray:
    return 1.0 / (1.0 + np.exp(-np.asarray(x, dtype=np.float64)))  # type: ignore[no-any-return]


def accuracy(probs: FloatArray, labels: IntArray) -> float:
    return float(np.mean(np.argmax(probs, axis=1) == labels)) if labels.size else 0.0


def macro_f1(probs: FloatArray, labels: IntArray, n_classes: int | None = None) -> float:
    """Unweighted mean F1 over the classes present in labels or predictions."""
    k = n_classes or probs.shape[1]
    pred = np.argmax(probs, axis=1)
    scores = []
    for c in range(k):
        tp = int(np.sum((pred == c) & (labels == c)))
        fp = int(np.sum((pred == c) & (labels != c)))
        fn = int(np.sum((pred != c) & (labels == c)))
        if tp + fp + fn == 0:
            continue
        scores.append(2 * tp / (2 * tp + fp + fn))
    return float(np.mean(scores)) if scores else 0.0


def nll(probs: FloatArray, labels: IntArray) -> float:
    """Mean negative log-likelihood of the true class."""
    p = probs[np.arange(labels.shape[0]), labels]
    return float(-np.mean(np.log(np.clip(p, 1e-12, 1.0))))


def calibration_bins(
    confidence: FloatArray, correct: npt.NDArray[np.bool_], n_bins: int = 15
) -> tuple[FloatArray, FloatArray, IntArray]:
    """Per equal-width bin: mean confidence, accuracy and count (empty bins have count 0)."""
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    index = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, n_bins - 1)
    counts = np.bincount(index, minlength=n_bins).astype(np.int64)
    conf_sum = np.bincount(index, weights=confidence, minlength=n_bins)
    acc_sum = np.bincount(index, weights=correct.astype(np.float64), minlength=n_bins)
    safe = np.maximum(counts, 1)
    return conf_sum / safe, acc_sum / safe, counts


def ece_mce(probs: FloatArray, labels: IntArray, n_bins: int = 15) -> tuple[float, float]:
    """Expected and maximum calibration error of the top-1 prediction over equal-width bins."""
    confidence = probs.max(axis=1)
    correct = np.argmax(probs, axis=1) == labels
    conf, acc, counts = calibration_bins(confidence, correct, n_bins)
    if counts.sum() == 0:
        return 0.0, 0.0
    gaps = np.abs(conf - acc)
    ece = float(np.sum(gaps * counts) / counts.sum())
    mce = float(gaps[counts > 0].max())
    return ece, mce


def binary_ece(p_up: FloatArray, up: npt.NDArray[np.bool_], n_bins: int = 15) -> float:
    """ECE of binary probabilities, as a two-class problem."""
    probs = np.stack([1.0 - p_up, p_up], axis=1)
    return ece_mce(probs, up.astype(np.int64), n_bins)[0]


def brier(p_up: FloatArray, up: npt.NDArray[np.bool_]) -> float:
    return float(np.mean((p_up - up.astype(np.float64)) ** 2)) if up.size else 0.0


def roc_auc(scores: FloatArray, positive: npt.NDArray[np.bool_]) -> float:
    """Area under the ROC curve via the rank statistic (ties count half); 0.5 when one class is absent."""
    n_pos = int(positive.sum())
    n_neg = int(positive.size - n_pos)
    if n_pos == 0 or n_neg == 0:
        return 0.5
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(scores.size, dtype=np.float64)
    sorted_scores = scores[order]
    ranks[order] = np.arange(1, scores.size + 1)
    # average ranks over ties
    _, first, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    for start, count in zip(first.tolist(), counts.tolist(), strict=True):
        if count > 1:
            ranks[order[start : start + count]] = start + (count + 1) / 2.0
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def recall_at_k(similarity: FloatArray, relevant: npt.NDArray[np.bool_], k: int) -> float:
    """Share of queries (rows) with at least one relevant item among their k most similar columns."""
    k = min(k, similarity.shape[1])
    top = np.argpartition(-similarity, k - 1, axis=1)[:, :k]
    hits = np.take_along_axis(relevant, top, axis=1).any(axis=1)
    return float(hits.mean()) if hits.size else 0.0
