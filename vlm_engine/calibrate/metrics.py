"""Pattern (multi-class) and retrieval metrics on NumPy arrays; metrics of P(up) are vlm_engine.metrics."""

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
    """Top-label expected and maximum calibration error of pattern probabilities (N, K) over equal-width bins."""
    confidence = probs.max(axis=1)
    correct = np.argmax(probs, axis=1) == labels
    return bin_errors(*calibration_bins(confidence, correct, n_bins))


def bin_errors(conf: FloatArray, acc: FloatArray, counts: IntArray) -> tuple[float, float]:
    """ECE (count-weighted mean |conf - acc|) and MCE (largest) of calibration_bins' output; 0 without rows."""
    if counts.sum() == 0:
        return 0.0, 0.0
    gaps = np.abs(conf - acc)
    ece = float(np.sum(gaps * counts) / counts.sum())
    mce = float(gaps[counts > 0].max())
    return ece, mce


def recall_at_k(similarity: FloatArray, relevant: npt.NDArray[np.bool_], k: int) -> float:
    """Share of queries (rows) with at least one relevant item among their k most similar columns."""
    k = min(k, similarity.shape[1])
    top = np.argpartition(-similarity, k - 1, axis=1)[:, :k]
    hits = np.take_along_axis(relevant, top, axis=1).any(axis=1)
    return float(hits.mean()) if hits.size else 0.0
