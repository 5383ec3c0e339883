"""fit_stacking keeps every coefficient >= 0: fusion never trades a model inverted."""

from __future__ import annotations

import numpy as np

from strategy.fusion import fit_stacking


def _labelled(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    signal = rng.normal(size=n)
    y = (signal + rng.normal(scale=1.5, size=n) > 0).astype(float)
    return y, 1 / (1 + np.exp(-signal))


def test_fit_stacking_when_one_model_is_anti_correlated_then_its_coefficient_is_zero_not_negative():
    y, good = _labelled(4_000, seed=1)
    params = fit_stacking({"clip": 1 - good, "xgb": np.clip(good + 0.05, 0, 1)}, y)
    coef = dict(zip(params.models, params.coef, strict=True))
    assert coef["clip"] == 0.0
    assert coef["xgb"] > 0.5


def test_fit_stacking_when_every_model_is_anti_correlated_then_base_rate_only():
    y, good = _labelled(4_000, seed=2)
    params = fit_stacking({"clip": 1 - good, "xgb": 1 - good}, y)
    assert params.coef == (0.0, 0.0)
    assert abs(1 / (1 + np.exp(-params.intercept)) - y.mean()) < 1e-9


def test_fit_stacking_when_both_informative_then_both_coefficients_positive():
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=4_000), rng.normal(size=4_000)
    y = (a + b + rng.normal(scale=1.5, size=a.size) > 0).astype(float)
    params = fit_stacking({"clip": 1 / (1 + np.exp(-a)), "xgb": 1 / (1 + np.exp(-b))}, y)
    assert all(c > 0.3 for c in params.coef)
