from __future__ import annotations

import numpy as np
import pytest

from vlm_engine.calibrate.evaluate import direction_reliability_png, pattern_reliability_png
from vlm_engine.calibrate.metrics import accuracy, ece_mce, macro_f1, recall_at_k, softmax
from vlm_engine.calibrate.scaling import (
    cross_validate,
    fit_platt_scores,
    fit_temperature,
    kfold_indexes,
)
from vlm_engine.metrics import sigmoid


def _calibrated_logits(n: int, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Logits whose softmax is the true label distribution (labels drawn from it)."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 2.0, (n, k))
    probs = softmax(logits)
    labels = np.array([rng.choice(k, p=p) for p in probs])
    return logits, labels


def test_ece_when_probabilities_are_calibrated_then_small_and_when_sharpened_then_large():
    logits, labels = _calibrated_logits(20_000, 5, 0)
    ece_ok, _ = ece_mce(softmax(logits), labels)
    ece_sharp, mce_sharp = ece_mce(softmax(logits * 4.0), labels)
    assert ece_ok < 0.02
    assert ece_sharp > 0.1
    assert mce_sharp >= ece_sharp


def test_fit_temperature_when_logits_were_sharpened_then_recovers_the_factor_and_lowers_ece():
    logits, labels = _calibrated_logits(10_000, 5, 1)
    sharpened = logits * 3.0
    temperature = fit_temperature(sharpened, labels)
    assert temperature == pytest.approx(3.0, rel=0.1)
    before, _ = ece_mce(softmax(sharpened), labels)
    after, _ = ece_mce(softmax(sharpened / temperature), labels)
    assert after < 0.5 * before


def test_fit_platt_scores_when_labels_follow_a_logistic_then_recovers_slope_and_bias():
    rng = np.random.default_rng(2)
    scores = rng.normal(0, 2, 20_000)
    positive = rng.random(20_000) < sigmoid(0.5 * scores - 0.3)
    a, b = fit_platt_scores(scores, positive)
    assert a == pytest.approx(0.5, abs=0.05)
    assert b == pytest.approx(-0.3, abs=0.05)


def test_fit_platt_scores_when_one_class_only_then_identity_keeps_the_ranking():
    assert fit_platt_scores(np.array([0.1, 0.2, 0.3]), np.array([True, True, True])) == (1.0, 0.0)
    assert fit_platt_scores(np.array([0.1, 0.2]), np.array([False, False])) == (1.0, 0.0)


def test_accuracy_macro_f1_when_known_values_then_exact():
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]])
    labels = np.array([0, 1, 1, 1])
    assert accuracy(probs, labels) == 0.75
    # class 0: tp 1 fp 1 fn 0 -> 2/3; class 1: tp 2 fp 0 fn 1 -> 4/5
    assert macro_f1(probs, labels) == pytest.approx((2 / 3 + 4 / 5) / 2)


def test_recall_at_k_when_relevant_item_is_second_then_missed_at_1_found_at_2():
    sim = np.array([[0.9, 0.8, 0.1], [0.1, 0.2, 0.95]])
    relevant = np.array([[False, True, False], [False, False, True]])
    assert recall_at_k(sim, relevant, 1) == 0.5
    assert recall_at_k(sim, relevant, 2) == 1.0


def test_kfold_when_cross_validating_then_every_sample_held_out_once():
    folds = kfold_indexes(10, 3, seed=0)
    held = np.sort(np.concatenate([h for _, h in folds]))
    assert held.tolist() == list(range(10))
    params, scores = cross_validate(
        10, 3, 0, lambda tr: float(len(tr)), lambda held, p: p + len(held)
    )
    assert len(params.folds) == 3
    assert scores.mean == pytest.approx(10.0)


def test_reliability_png_when_drawn_then_png_bytes():
    confidence, correct = np.array([0.2, 0.7, 0.9]), np.array([False, True, True])
    for data in (
        pattern_reliability_png(confidence, correct, title="test"),
        direction_reliability_png(confidence, correct, title="test"),
    ):
        assert data.startswith(b"\x89PNG\r\n\x1a\n")
        assert len(data) > 1000


def test_fit_platt_scores_when_the_fit_would_reverse_the_ranking_then_refused_identity_and_logged():
    from structlog.testing import capture_logs

    rng = np.random.default_rng(2)
    scores = rng.normal(size=2_000)
    positive = rng.random(2_000) < 1 / (1 + np.exp(1.5 * scores))  # higher score, fewer positives
    with capture_logs() as logs:
        a, b = fit_platt_scores(scores, positive)
    assert (a, b) == (1.0, 0.0)
    assert [e["reason"] for e in logs if e["event"] == "calibration.refused"] == ["negative_slope"]
