"""The one metrics module: AUC / ECE definitions and the moving-block bootstrap's intervals."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from vlm_engine.metrics import (
    BootstrapConfig,
    auc,
    auc_text,
    base_rate,
    block_bootstrap,
    brier,
    ece,
    fit_logistic,
    hit_rate,
    log_loss,
    logit,
    logit_scalar,
    sigmoid,
    sigmoid_scalar,
    summary,
    unmeasured,
)

BOOT = BootstrapConfig(resamples=500, seed=1)


def _rank_auc(y: np.ndarray, p: np.ndarray) -> float:
    r = pd.Series(p).rank(method="average").to_numpy()
    n1 = y.sum()
    n0 = len(y) - n1
    return float((r[y == 1].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def _panel(n_times: int, n_symbols: int, signal: float, seed: int):
    """ts, y, p for n_symbols series; p carries `signal` of y plus a shared per-time shock."""
    rng = np.random.default_rng(seed)
    ts = np.repeat(np.arange(n_times) * 60, n_symbols)
    shock = np.repeat(rng.normal(size=n_times), n_symbols)
    y = (rng.random(ts.size) < 0.5).astype(float)
    p = 1 / (1 + np.exp(-(signal * (y - 0.5) + 0.5 * shock + rng.normal(size=ts.size))))
    return ts, y, p


def test_auc_when_ties_then_equals_average_rank_auc() -> None:
    rng = np.random.default_rng(0)
    y = (rng.random(500) < 0.4).astype(float)
    p = np.round(rng.random(500) * 0.3 + 0.2 * y, 2)  # many ties
    assert auc(y, p) == pytest.approx(_rank_auc(y, p), abs=1e-12)
    assert auc([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9]) == 1.0
    assert auc([0, 0, 1, 1], [0.9, 0.8, 0.2, 0.1]) == 0.0
    assert auc([0, 1, 0, 1], [0.5, 0.5, 0.5, 0.5]) == 0.5


def test_auc_when_one_class_then_nan() -> None:
    assert math.isnan(auc([1, 1, 1], [0.2, 0.5, 0.9]))


def test_ece_brier_log_loss_when_known_values_then_exact() -> None:
    y = np.array([0, 1, 0, 1], dtype=float)
    p = np.array([0.05, 0.05, 0.95, 0.95])  # two bins, each observed 0.5: gap 0.45
    assert ece(y, p) == pytest.approx(0.45)
    assert brier(y, p) == pytest.approx((0.05**2 + 0.95**2) / 2)
    assert log_loss(y, np.full(4, 0.5)) == pytest.approx(math.log(2))
    assert base_rate([1, 0, 1, np.nan]) == pytest.approx(2 / 3)
    assert summary(y, p)["n"] == 4


def test_block_bootstrap_when_no_signal_then_interval_holds_half_over_most_panels() -> None:
    holds = 0
    for seed in range(30):
        ts, y, p = _panel(400, 3, 0.0, seed)
        ci = block_bootstrap(ts, y, {"m": p}, block_bars=20, config=BOOT).auc["m"]
        assert ci.low <= ci.value <= ci.high
        holds += ci.low <= 0.5 <= ci.high
    assert holds >= 25  # nominal 95%: 28.5 of 30


def test_block_bootstrap_when_signal_then_interval_above_half() -> None:
    ts, y, p = _panel(600, 3, 1.0, 0)
    ci = block_bootstrap(ts, y, {"m": p}, block_bars=20, config=BOOT).auc["m"]
    assert ci.low > 0.55


def test_block_bootstrap_when_same_blocks_then_paired_difference_narrower_than_unpaired() -> None:
    ts, y, p = _panel(600, 3, 0.5, 2)
    rng = np.random.default_rng(5)
    q = 1 / (1 + np.exp(-(np.log(p / (1 - p)) + 0.3 * rng.normal(size=p.size))))
    boot = block_bootstrap(
        ts, y, {"a": p, "b": q, "c": p}, block_bars=20, config=BOOT, pairs=[("a", "b"), ("a", "c")]
    )
    same = boot.differences["a - c"]
    assert (same.value, same.low, same.high) == (0.0, 0.0, 0.0)
    d = boot.differences["a - b"]
    width_unpaired = (boot.auc["a"].high - boot.auc["a"].low) + (
        boot.auc["b"].high - boot.auc["b"].low
    )
    assert d.high - d.low < width_unpaired / 2
    assert d.value == pytest.approx(auc(y, p) - auc(y, q))


def test_block_bootstrap_when_same_seed_then_same_interval_and_block_stated() -> None:
    ts, y, p = _panel(300, 2, 0.3, 3)
    a = block_bootstrap(ts, y, {"m": p}, block_bars=24, config=BOOT)
    b = block_bootstrap(ts, y, {"m": p}, block_bars=24, config=BOOT)
    assert a.auc == b.auc
    assert (a.block_bars, a.resamples) == (24, 500)
    assert BootstrapConfig().block_for(3) == 20
    assert BootstrapConfig().block_for(10) == 40


def test_bootstrap_config_when_too_few_resamples_then_refused() -> None:
    with pytest.raises(ValueError, match="at least 500"):
        BootstrapConfig(resamples=100)


def test_block_bootstrap_when_nan_probability_then_error_names_model() -> None:
    ts, y, p = _panel(50, 1, 0.0, 0)
    p[3] = np.nan
    with pytest.raises(ValueError, match="bootstrap of m"):
        block_bootstrap(ts, y, {"m": p}, block_bars=20, config=BOOT)


def test_unmeasured_and_auc_text_when_one_class_or_no_rows_then_say_why() -> None:
    assert unmeasured([1, 1, 1]) == "one class only"
    assert unmeasured([0.0, float("nan")]) == "one class only"
    assert unmeasured([]) == "no rows"
    assert unmeasured([0, 1]) is None
    assert auc_text([1, 1], [0.2, 0.9]) == "one class only"
    assert auc_text([0, 1], [0.2, 0.9]) == "1.0000"


def test_fit_logistic_when_labels_follow_a_logistic_then_recovers_it_and_sigmoid_inverts_logit() -> (
    None
):
    rng = np.random.default_rng(3)
    x = rng.normal(size=20_000)
    y = (rng.random(x.size) < sigmoid(0.8 * x - 0.4)).astype(float)
    params = fit_logistic(x, y, l2=0.0)
    assert params.coef[0] == pytest.approx(0.8, abs=0.05)
    assert params.intercept == pytest.approx(-0.4, abs=0.05)
    p = np.array([1e-3, 0.3, 0.5, 0.9])
    assert sigmoid(logit(p)) == pytest.approx(p)
    assert sigmoid([-1e6, 1e6]).tolist() == pytest.approx([0.0, 1.0])  # no overflow warning


def test_hit_rate_when_known_values_then_share_of_agreeing_calls() -> None:
    assert hit_rate([1, 0, 1, 0], [0.9, 0.2, 0.4, 0.6]) == 0.5


def test_scalar_logit_and_sigmoid_when_compared_with_array_versions_then_same_values() -> None:
    for p in (0.0, 1e-9, 0.2, 0.5, 0.7, 0.999999, 1.0):
        assert logit_scalar(p) == pytest.approx(float(logit(p)), abs=1e-12)
    for z in (-50.0, -3.2, 0.0, 0.7, 41.0):
        assert sigmoid_scalar(z) == pytest.approx(float(sigmoid(z)), abs=1e-15)
