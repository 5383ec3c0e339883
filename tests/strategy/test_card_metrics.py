"""The model card's direction figures and `evaluate`'s per-model figures are one definition each."""

from __future__ import annotations

import math

import numpy as np
import pytest

from strategy.backtest.evaluate_report import model_metrics, verdict
from vlm_engine.calibrate.evaluate import direction_metrics, unmeasured_direction
from vlm_engine.metrics import ECE_BINS, BootstrapConfig, sigmoid


def _predictions(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 2, n)
    up = rng.random(n) < sigmoid(0.6 * z)
    return sigmoid(z), sigmoid(0.6 * z + 0.1), up  # raw (overconfident), calibrated, labels


def test_card_direction_metrics_when_same_predictions_then_equal_evaluate_figures() -> None:
    p_raw, p_up, up = _predictions(4_000, 0)
    card = direction_metrics(p_raw, p_up, up)
    y = up.astype(np.float64)
    ts = np.arange(y.size, dtype=np.int64) * 60
    evaluated, _, _ = model_metrics(
        y, ts, np.zeros(y.size, dtype=np.int64), {"clip": p_up, "raw": p_raw},
        horizon_bars=1, bootstrap=BootstrapConfig(resamples=500),
    )  # fmt: skip
    assert card["direction_ece_after"] == evaluated["clip"]["ece"]
    assert card["direction_ece_before"] == evaluated["raw"]["ece"]
    assert card["direction_auc"] == evaluated["clip"]["auc"]
    assert card["direction_brier_after"] == evaluated["clip"]["brier"]
    assert card["direction_ece_bins"] == ECE_BINS
    # the sharpened raw probabilities are visibly worse calibrated: ECE of P(up) sees it
    assert card["direction_ece_before"] > card["direction_ece_after"] + 0.05


def test_direction_metrics_when_one_class_only_then_auc_nan_and_both_callers_say_so() -> None:
    p_raw, p_up, _ = _predictions(200, 1)
    up = np.ones(200, dtype=bool)
    card = direction_metrics(p_raw, p_up, up)
    assert math.isnan(card["direction_auc"])
    assert unmeasured_direction(np.ones(200, dtype=np.int8)) == {"direction_auc": "one class only"}
    assert unmeasured_direction(np.array([1, -1, 0], dtype=np.int8)) == {}
    y = up.astype(np.float64)
    evaluated, differences, _ = model_metrics(
        y, np.arange(200, dtype=np.int64), np.zeros(200, dtype=np.int64), {"xgb": p_up},
        horizon_bars=1, bootstrap=BootstrapConfig(resamples=500),
    )  # fmt: skip
    assert evaluated["xgb"]["unmeasured"] == "one class only"
    assert verdict(evaluated, differences) == "no verdict: xgb AUC unmeasured (one class only)"
    assert card["direction_brier_after"] == pytest.approx(float(np.mean((p_up - 1) ** 2)))
