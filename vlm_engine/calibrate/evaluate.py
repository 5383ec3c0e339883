"""Score a split with a CLIP model and its prompts, fit the calibration and measure everything."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import numpy.typing as npt

from vlm_engine.calibrate.metrics import (
    FloatArray,
    IntArray,
    accuracy,
    binary_ece,
    brier,
    calibration_bins,
    ece_mce,
    macro_f1,
    nll,
    recall_at_k,
    roc_auc,
    sigmoid,
    softmax,
)
from vlm_engine.calibrate.params import Calibration, FoldStats
from vlm_engine.calibrate.scaling import (
    cross_validate,
    fit_platt,
    fit_temperature,
    fold_stats,
    kfold_indexes,
)
from vlm_engine.clip.data import ClipSamples, PromptSet
from vlm_engine.clip.encode import encode_images, encode_texts, logit_scale, prompt_embeddings
from vlm_engine.clip.model import ClipParts


class RawScores:
    """Uncalibrated outputs on a split: pattern logits (N, K), direction logit z (N,), embeddings (N, D)."""

    def __init__(
        self,
        *,
        pattern_logits: FloatArray,
        direction_logit: FloatArray,
        embeddings: npt.NDArray[np.float32],
    ) -> None:
        self.pattern_logits = pattern_logits
        self.direction_logit = direction_logit
        self.embeddings = embeddings


def raw_scores(
    parts: ClipParts, prompts: PromptSet, images: npt.NDArray[np.uint8], *, batch_size: int = 256
) -> RawScores:
    """Encode the images once and compare them with the prompt classes and the up/down prompts."""
    class_features, direction_features = prompt_embeddings(parts, prompts)
    embeddings = encode_images(parts, images, batch_size=batch_size)
    scale = logit_scale(parts)
    emb = embeddings.astype(np.float64)
    pattern_logits = scale * emb @ class_features.T.astype(np.float64)
    direction = scale * emb @ direction_features.T.astype(np.float64)
    return RawScores(
        pattern_logits=pattern_logits,
        direction_logit=direction[:, 1] - direction[:, 0],
        embeddings=embeddings,
    )


def apply_calibration(calibration: Calibration, scores: RawScores) -> tuple[FloatArray, FloatArray]:
    """Calibrated pattern probabilities (N, K) and p_up (N,)."""
    probs = softmax(scores.pattern_logits / calibration.pattern_temperature)
    p_up = sigmoid(calibration.direction_a * scores.direction_logit + calibration.direction_b)
    return probs, p_up


def pattern_labels(prompts: PromptSet, samples: ClipSamples) -> IntArray:
    """Class index of each sample's pattern in the prompt set (-1 when it has no prompt)."""
    index = {name: i for i, name in enumerate(prompts.classes)}
    return np.array([index.get(p, -1) for p in samples.patterns], dtype=np.int64)


def fit_calibration(
    scores: RawScores,
    labels: IntArray,
    direction: npt.NDArray[np.int8],
    *,
    k_folds: int = 5,
    n_bins: int = 15,
    seed: int = 0,
) -> tuple[Calibration, dict[str, Any]]:
    """Temperature (NLL) for patterns and Platt for direction on a validation split, with k-fold CV."""
    keep = labels >= 0
    logits, y = scores.pattern_logits[keep], labels[keep]
    moving = direction != 0
    z, up = scores.direction_logit[moving], direction[moving] > 0
    temperature = fit_temperature(logits, y)
    a, b = fit_platt(z, up)
    report: dict[str, Any] = {"k_folds": 0}
    cv_t = cv_a = cv_b = None
    k = min(k_folds, int(y.size), int(z.size))
    if k >= 2:
        cv_t, cv_ece = cross_validate(
            y.size,
            k,
            seed,
            lambda tr: fit_temperature(logits[tr], y[tr]),
            lambda held, t: ece_mce(softmax(logits[held] / t), y[held], n_bins)[0],
        )
        params = [fit_platt(z[tr], up[tr]) for tr, _ in kfold_indexes(z.size, k, seed)]
        cv_a = fold_stats([p[0] for p in params])
        cv_b = fold_stats([p[1] for p in params])
        held_ece = [
            binary_ece(sigmoid(pa * z[held] + pb), up[held])
            for (pa, pb), (_, held) in zip(params, kfold_indexes(z.size, k, seed), strict=True)
        ]
        report = {
            "k_folds": k,
            "cv_pattern_ece": _stats(cv_ece),
            "cv_direction_ece": _stats(fold_stats(held_ece)),
        }
    calibration = Calibration(
        pattern_temperature=temperature,
        direction_a=a,
        direction_b=b,
        n_bins=n_bins,
        fitted=True,
        cv_pattern_temperature=cv_t,
        cv_direction_a=cv_a,
        cv_direction_b=cv_b,
    )
    return calibration, report


def _stats(s: FoldStats) -> dict[str, float]:
    return {"mean": s.mean, "std": s.std}


def measure(
    parts: ClipParts,
    prompts: PromptSet,
    samples: ClipSamples,
    calibration: Calibration,
    *,
    scores: RawScores | None = None,
) -> dict[str, float]:
    """Pattern accuracy/macro-F1/NLL/ECE/MCE (before and after calibration), recall@1/5 both ways, direction AUC/Brier/ECE."""
    scores = scores or raw_scores(parts, prompts, samples.images)
    labels = pattern_labels(prompts, samples)
    keep = labels >= 0
    y = labels[keep]
    before = softmax(scores.pattern_logits[keep])
    probs, p_up = apply_calibration(calibration, scores)
    after = probs[keep]
    n_bins = calibration.n_bins
    ece_before, mce_before = ece_mce(before, y, n_bins)
    ece_after, mce_after = ece_mce(after, y, n_bins)
    out = {
        "samples": float(len(samples)),
        "pattern_accuracy": accuracy(after, y),
        "pattern_macro_f1": macro_f1(after, y, after.shape[1]),
        "pattern_nll_before": nll(before, y),
        "pattern_nll_after": nll(after, y),
        "pattern_ece_before": ece_before,
        "pattern_ece_after": ece_after,
        "pattern_mce_before": mce_before,
        "pattern_mce_after": mce_after,
    }
    out.update(_recalls(parts, samples, scores.embeddings, keep))
    moving = samples.direction != 0
    up = samples.direction[moving] > 0
    p_raw = sigmoid(scores.direction_logit[moving])
    out.update(
        {
            "direction_samples": float(moving.sum()),
            "direction_auc": roc_auc(p_up[moving], up),
            "direction_brier_before": brier(p_raw, up),
            "direction_brier_after": brier(p_up[moving], up),
            "direction_ece_before": binary_ece(p_raw, up),
            "direction_ece_after": binary_ece(p_up[moving], up),
        }
    )
    return out


def _recalls(
    parts: ClipParts,
    samples: ClipSamples,
    embeddings: npt.NDArray[np.float32],
    keep: npt.NDArray[np.bool_],
) -> dict[str, float]:
    """Recall@1/5 image->text and text->image; a text is relevant to every chart of its pattern (texts are templated)."""
    texts: dict[str, str] = {}
    for i in np.flatnonzero(keep).tolist():
        for t in samples.texts[i]:
            texts.setdefault(t, samples.patterns[i])
    if not texts:
        return {}
    text_features = encode_texts(parts, list(texts)).astype(np.float64)
    image_patterns = np.array([samples.patterns[i] for i in np.flatnonzero(keep).tolist()])
    sim = embeddings[keep].astype(np.float64) @ text_features.T
    relevant = image_patterns[:, None] == np.array(list(texts.values()))[None, :]
    return {
        "recall_image_to_text_at_1": recall_at_k(sim, relevant, 1),
        "recall_image_to_text_at_5": recall_at_k(sim, relevant, 5),
        "recall_text_to_image_at_1": recall_at_k(sim.T, relevant.T, 1),
        "recall_text_to_image_at_5": recall_at_k(sim.T, relevant.T, 5),
    }


def reliability_png(
    confidence: FloatArray, correct: npt.NDArray[np.bool_], *, title: str, n_bins: int = 15
) -> bytes:
    """A reliability diagram (accuracy and mean confidence per bin, with the diagonal) as PNG bytes."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    conf, acc, counts = calibration_bins(confidence, correct, n_bins)
    centers = (np.arange(n_bins) + 0.5) / n_bins
    fig = Figure(figsize=(4, 4), dpi=100)
    ax = fig.add_subplot(1, 1, 1)
    shown = counts > 0
    ax.bar(
        centers[shown],
        acc[shown],
        width=1.0 / n_bins,
        edgecolor="black",
        color="#4fc3f7",
        label="accuracy",
    )
    ax.plot(conf[shown], acc[shown], "o", color="#ef5350", markersize=3, label="mean confidence")
    ax.plot([0, 1], [0, 1], "--", color="gray", linewidth=1)
    ece = float(np.sum(np.abs(conf - acc) * counts) / max(int(counts.sum()), 1))
    ax.set_title(f"{title} (ECE {ece:.3f})", fontsize=9)
    ax.set_xlabel("confidence")
    ax.set_ylabel("accuracy")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.legend(loc="upper left", fontsize=7)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", metadata={"Software": None})
    return buffer.getvalue()


def calibrate_and_measure(
    parts: ClipParts,
    prompts: PromptSet,
    val: ClipSamples,
    test: ClipSamples,
    *,
    k_folds: int = 5,
    seed: int = 0,
) -> tuple[Calibration, dict[str, float], dict[str, Any], dict[str, bytes]]:
    """Fit on validation, measure on test; returns calibration, test metrics, CV report and reliability PNGs."""
    val_scores = raw_scores(parts, prompts, val.images)
    calibration, report = fit_calibration(
        val_scores, pattern_labels(prompts, val), val.direction, k_folds=k_folds, seed=seed
    )
    test_scores = raw_scores(parts, prompts, test.images)
    metrics = measure(parts, prompts, test, calibration, scores=test_scores)
    labels = pattern_labels(prompts, test)
    keep = labels >= 0
    probs, p_up = apply_calibration(calibration, test_scores)
    before = softmax(test_scores.pattern_logits[keep])
    moving = test.direction != 0
    up = test.direction[moving] > 0
    figures = {
        "reliability_pattern_before.png": reliability_png(
            before.max(1), before.argmax(1) == labels[keep], title="pattern, before"
        ),
        "reliability_pattern_after.png": reliability_png(
            probs[keep].max(1), probs[keep].argmax(1) == labels[keep], title="pattern, after"
        ),
        "reliability_direction_after.png": reliability_png(
            np.maximum(p_up[moving], 1 - p_up[moving]),
            (p_up[moving] > 0.5) == up,
            title="direction, after",
        ),
    }
    report = {
        **report,
        "pattern_temperature": calibration.pattern_temperature,
        "direction_a": calibration.direction_a,
        "direction_b": calibration.direction_b,
        "ece_before": metrics["pattern_ece_before"],
        "ece_after": metrics["pattern_ece_after"],
    }
    return calibration, metrics, report, figures
