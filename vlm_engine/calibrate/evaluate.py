"""Score a split with a CLIP model and its prompts, fit the calibration and measure everything.

Card metrics: `pattern_ece_*` is the top-label ECE of the pattern probabilities over
`pattern_ece_bins` bins (a K-class figure); `direction_*` are metrics of P(up) from
vlm_engine.metrics, so `direction_ece_*` is the ECE of P(up) over `direction_ece_bins`
(ECE_BINS = 10) bins: the same number `evaluate` reports as `ece` on the same predictions.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import numpy.typing as npt

from vlm_engine.calibrate.metrics import (
    FloatArray,
    IntArray,
    accuracy,
    bin_errors,
    calibration_bins,
    ece_mce,
    macro_f1,
    nll,
    recall_at_k,
    softmax,
)
from vlm_engine.calibrate.params import Calibration, FoldStats
from vlm_engine.calibrate.scaling import (
    cross_validate,
    fit_platt_scores,
    fit_temperature,
    fold_stats,
    kfold_indexes,
)
from vlm_engine.clip.data import ClipSamples, PromptSet
from vlm_engine.clip.encode import encode_images, encode_texts, logit_scale, prompt_embeddings
from vlm_engine.clip.model import ClipParts
from vlm_engine.metrics import (
    ECE_BINS,
    auc,
    brier,
    calibration_curve,
    ece,
    sigmoid,
    unmeasured,
)


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
    a, b = fit_platt_scores(z, up)
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
        params = [fit_platt_scores(z[tr], up[tr]) for tr, _ in kfold_indexes(z.size, k, seed)]
        cv_a = fold_stats([p[0] for p in params])
        cv_b = fold_stats([p[1] for p in params])
        held_ece = [
            ece(up[held], sigmoid(pa * z[held] + pb))
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
    out["pattern_ece_bins"] = float(n_bins)
    moving = samples.direction != 0
    up = samples.direction[moving] > 0
    out.update(direction_metrics(sigmoid(scores.direction_logit[moving]), p_up[moving], up))
    return out


def direction_metrics(
    p_raw: FloatArray, p_up: FloatArray, up: npt.NDArray[np.bool_]
) -> dict[str, float]:
    """The card's direction figures of P(up) (uncalibrated p_raw, calibrated p_up) on moving charts."""
    return {
        "direction_samples": float(up.size),
        "direction_auc": auc(up, p_up),
        "direction_brier_before": brier(up, p_raw),
        "direction_brier_after": brier(up, p_up),
        "direction_ece_before": ece(up, p_raw),
        "direction_ece_after": ece(up, p_up),
        "direction_ece_bins": float(ECE_BINS),
    }


def unmeasured_direction(direction: npt.NDArray[np.int8]) -> dict[str, str]:
    """Why the card's direction AUC has no value on these labels ({} when it has one)."""
    reason = unmeasured(direction[direction != 0] > 0)
    return {} if reason is None else {"direction_auc": reason}


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


def pattern_reliability_png(
    confidence: FloatArray, correct: npt.NDArray[np.bool_], *, title: str, n_bins: int = 15
) -> bytes:
    """Top-label reliability of pattern probabilities: accuracy against confidence per bin."""
    conf, acc, counts = calibration_bins(confidence, correct, n_bins)
    shown = counts > 0
    ece_value, _ = bin_errors(conf, acc, counts)
    return reliability_png(
        conf[shown], acc[shown], n_bins=n_bins, title=f"{title} (top-label ECE {ece_value:.3f})",
        axes=("confidence", "accuracy"),
    )  # fmt: skip


def direction_reliability_png(p_up: FloatArray, up: npt.NDArray[np.bool_], *, title: str) -> bytes:
    """Reliability of P(up): observed up-frequency against mean P(up) per bin (vlm_engine.metrics)."""
    mean_p, freq, _ = calibration_curve(up, p_up)
    return reliability_png(
        mean_p, freq, n_bins=ECE_BINS, title=f"{title} (ECE of P(up) {ece(up, p_up):.3f})",
        axes=("mean P(up)", "observed up-frequency"),
    )  # fmt: skip


def reliability_png(
    mean_x: FloatArray, observed: FloatArray, *, n_bins: int, title: str, axes: tuple[str, str]
) -> bytes:
    """A reliability diagram (one bar per non-empty bin, its mean as a dot, the diagonal) as PNG bytes."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    centers = (np.clip(np.floor(mean_x * n_bins), 0, n_bins - 1) + 0.5) / n_bins
    fig = Figure(figsize=(4, 4), dpi=100)
    ax = fig.add_subplot(1, 1, 1)
    ax.bar(centers, observed, width=1.0 / n_bins, edgecolor="black", color="#4fc3f7", label=axes[1])
    ax.plot(mean_x, observed, "o", color="#ef5350", markersize=3, label=axes[0])
    ax.plot([0, 1], [0, 1], "--", color="gray", linewidth=1)
    ax.set_title(title, fontsize=9)
    ax.set_xlabel(axes[0])
    ax.set_ylabel(axes[1])
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
        "reliability_pattern_before.png": pattern_reliability_png(
            before.max(1), before.argmax(1) == labels[keep], title="pattern, before"
        ),
        "reliability_pattern_after.png": pattern_reliability_png(
            probs[keep].max(1), probs[keep].argmax(1) == labels[keep], title="pattern, after"
        ),
        "reliability_direction_after.png": direction_reliability_png(
            p_up[moving], up, title="direction, after"
        ),
    }
    report = {
        **report,
        "pattern_temperature": calibration.pattern_temperature,
        "direction_a": calibration.direction_a,
        "direction_b": calibration.direction_b,
        "pattern_ece_before": metrics["pattern_ece_before"],
        "pattern_ece_after": metrics["pattern_ece_after"],
        "unmeasured": unmeasured_direction(test.direction),
    }
    return calibration, metrics, report, figures
