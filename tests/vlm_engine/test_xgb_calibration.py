"""XGBoost calibration never reverses a ranking and never sees the rows it calibrates."""

from __future__ import annotations

import numpy as np
from structlog.testing import capture_logs

from vlm_engine.metrics import auc, fit_platt
from vlm_engine.xgb import XgbTrainConfig
from vlm_engine.xgb.train import calibrate_after_first_fold, train_xgb


def _scores(n: int, sign: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.5).astype(float)
    p = 1 / (1 + np.exp(-(sign * (y - 0.5) * 2 + rng.normal(size=n))))
    return p, y


def test_fit_platt_when_slope_negative_then_refused_identity_and_logged() -> None:
    p, y = _scores(400, -1.0, 0)  # anti-correlated: the fitted slope comes out negative
    with capture_logs() as logs:
        assert fit_platt(p, y, model="test") is None
    refused = [e for e in logs if e["event"] == "calibration.refused"]
    assert refused
    assert refused[0]["slope"] < 0
    good = fit_platt(*_scores(400, 1.0, 0), model="test")
    assert good is not None
    assert good.coef[0] > 0
    assert fit_platt([0.2, 0.7, 0.9], [1, 1, 1], model="test") is None  # one class only: identity


def test_calibrate_after_first_fold_when_later_labels_change_then_maps_unchanged() -> None:
    p, y = _scores(900, 1.0, 1)
    fold = np.repeat([0, 1, 2], 300)
    out, params = calibrate_after_first_fold(p, y, fold)
    assert params is not None
    np.testing.assert_array_equal(out[fold == 0], p[fold == 0])  # fold 0 stays raw
    assert not np.allclose(out[fold >= 1], p[fold >= 1])
    flipped = y.copy()
    flipped[fold >= 1] = 1 - flipped[fold >= 1]  # would give a negative slope if they were used
    again, _ = calibrate_after_first_fold(p, flipped, fold)
    np.testing.assert_array_equal(again, out)
    changed = y.copy()
    changed[fold == 0] = (np.arange(300) % 3 == 0).astype(float)
    assert not np.allclose(
        calibrate_after_first_fold(p, changed, fold)[0][fold >= 1], out[fold >= 1]
    )
    later = fold >= 1
    assert auc(y[later], out[later]) == auc(y[later], p[later])  # one monotone map: same ranking


def test_train_xgb_when_relation_reverses_then_oof_auc_stays_below_half() -> None:
    rng = np.random.default_rng(2)
    n = 3000
    x = rng.normal(size=(n, 2))
    sign = np.where(np.arange(n) < 1200, 1.0, -1.0)  # reverses before the first test fold ends
    y = (sign * x[:, 0] + 0.5 * rng.normal(size=n) > 0).astype(float)
    ts = np.arange(n, dtype=np.int64) * 60
    config = XgbTrainConfig(n_folds=3, num_boost_round=40, min_train_fraction=0.35, nthread=1)
    with capture_logs() as logs:
        result = train_xgb(
            x, y, ts=ts, label_end=ts + 60, feature_names=("a", "b"), config=config,
            bar_seconds=60, horizon_bars=1,
        )  # fmt: skip
    covered = np.isfinite(result.oof)
    assert auc(y[covered], result.oof_raw[covered]) < 0.4
    assert auc(y[covered], result.oof[covered]) < 0.4  # no calibration flips it
    assert result.model.meta.calibration is None  # the live map would have reversed it: refused
    assert any(e["event"] == "calibration.refused" for e in logs)
    assert set(result.fold[covered].tolist()) == {0, 1, 2}
