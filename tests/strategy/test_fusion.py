from __future__ import annotations

import msgspec
import numpy as np
import pytest

from strategy.drift import DriftConfig, DriftMonitor, DriftReference, drift_reference, psi
from strategy.fusion import (
    FUSED,
    AdaptationConfig,
    FusionConfig,
    FusionEngine,
    MonitorConfig,
    Recalibration,
    StackingParams,
    binary_entropy,
    fit_stacking,
)


def test_fuse_when_weighted_70_30_then_weighted_mean_with_uncertainty() -> None:
    engine = FusionEngine(config=FusionConfig(weights={"clip": 0.7, "xgb": 0.3}))
    f = engine.fuse({"clip": 0.8, "xgb": 0.4})
    assert f.p_up == pytest.approx(0.68)
    assert f.disagreement == pytest.approx(0.4)
    assert f.entropy == pytest.approx(binary_entropy(0.68))
    assert f.confidence == pytest.approx(0.36 * 0.6)
    assert engine.fuse({"xgb": 0.4}).p_up == pytest.approx(0.4)  # missing model: renormalised


@pytest.mark.parametrize(
    "config",
    [
        FusionConfig(weights={"clip": 1.0, "xgb": 0.0}),
        FusionConfig(
            method="stacking",
            stacking=StackingParams(models=("clip", "xgb"), coef=(1.0, 1.0), intercept=0.0),
        ),
    ],
    ids=["weight_zero", "stacking_needs_both"],
)
def test_alone_when_fitted_fusion_ignores_a_model_then_that_model_still_passes_through(
    config: FusionConfig,
) -> None:
    assert FusionEngine(config=config).combine({"xgb": 0.8}) == 0.5  # the trap alone() avoids
    alone = config.alone("xgb")
    assert FusionEngine(config=alone).combine({"xgb": 0.8}) == pytest.approx(0.8)
    assert alone.monitor == config.monitor
    assert alone.drift == config.drift


def test_fuse_when_model_recalibrated_then_its_mapped_probability_is_fused_and_compared() -> None:
    shrink = Recalibration(a=0.25, b=0.0)  # CLIP's P(up) far too confident on ordinary bars
    config = FusionConfig(
        weights={"clip": 0.5, "xgb": 0.5}, recalibrate={"clip": shrink}, disagreement_penalty=1.0
    )
    engine = FusionEngine(config=config)
    mapped = shrink.apply(0.9)
    assert 0.6 < mapped < 0.65  # sigmoid(0.25 * logit(0.9))
    fused = engine.fuse({"clip": 0.9, "xgb": 0.55})
    assert fused.p_up == pytest.approx((mapped + 0.55) / 2)
    assert fused.disagreement == pytest.approx(abs(mapped - 0.55))
    assert FusionEngine(config=config.alone("clip")).combine({"clip": 0.9}) == pytest.approx(mapped)
    assert shrink.apply(0.5) == pytest.approx(0.5)
    assert shrink.apply_array([0.9, 0.5])[0] == pytest.approx(mapped)  # the offline form agrees
    # The monitor scores CLIP as the fusion used it: recalibrated.
    config = msgspec.structs.replace(config, monitor=MonitorConfig(horizon_bars=1, window=10))
    monitored = FusionEngine(config=config)
    monitored.observe("A", 100.0, {"clip": 0.9, FUSED: 0.6})
    monitored.observe("A", 101.0, {"clip": 0.9, FUSED: 0.6})  # price rose: outcome 1
    assert monitored.stats()["clip"].brier == pytest.approx((mapped - 1.0) ** 2)
    assert Recalibration(a=1.0, b=0.0).apply(0.73) == pytest.approx(0.73)


def test_fuse_when_confidence_weighted_then_confident_model_dominates() -> None:
    engine = FusionEngine(
        config=FusionConfig(method="confidence_weighted", weights={"clip": 0.5, "xgb": 0.5})
    )
    assert engine.fuse({"clip": 0.9, "xgb": 0.5}).p_up == pytest.approx(0.9)
    assert engine.fuse({"clip": 0.5, "xgb": 0.5}).p_up == pytest.approx(0.5)


def test_stacking_when_fitted_on_oof_then_weights_the_informative_model() -> None:
    rng = np.random.default_rng(0)
    y = (rng.random(4000) < 0.5).astype(float)
    good = np.clip(0.5 + (y - 0.5) * 0.4 + rng.normal(0, 0.1, 4000), 0.01, 0.99)
    noise = rng.uniform(0.2, 0.8, 4000)
    params = fit_stacking({"clip": noise, "xgb": good}, y)
    coef = dict(zip(params.models, params.coef, strict=True))
    assert coef["xgb"] > 1.0 > abs(coef["clip"])
    engine = FusionEngine(config=FusionConfig(method="stacking", stacking=params))
    assert engine.fuse({"clip": 0.5, "xgb": 0.8}).p_up > 0.8
    assert engine.fuse({"xgb": 0.8}).p_up == 0.5  # a stacked model needs every input


def test_config_when_stacking_without_params_then_error() -> None:
    with pytest.raises(ValueError, match="fit_stacking"):
        FusionConfig(method="stacking")


def test_fuse_when_temporal_smoothing_then_ema_per_symbol() -> None:
    engine = FusionEngine(config=FusionConfig(weights={"xgb": 1.0}, smoothing_bars=3))
    assert engine.fuse({"xgb": 0.9}, symbol="A").p_up == pytest.approx(0.9)
    assert engine.fuse({"xgb": 0.5}, symbol="A").p_up == pytest.approx(0.7)
    assert engine.fuse({"xgb": 0.5}, symbol="B").p_up == pytest.approx(0.5)


def test_monitor_when_outcomes_arrive_then_rolling_brier_and_hit_rate() -> None:
    engine = FusionEngine(config=FusionConfig(monitor=MonitorConfig(horizon_bars=1, window=10)))
    closes = [100, 101, 100, 101, 100, 101]
    for c in closes:
        engine.observe("A", c, {"xgb": 1.0 if c == 100 else 0.0, "clip": 0.5, FUSED: 0.6})
    stats = engine.stats()
    assert stats["xgb"].count == 5
    assert stats["xgb"].brier == 0.0
    assert stats["xgb"].hit_rate == 1.0
    assert stats["clip"].brier == pytest.approx(0.25)


def test_adaptation_when_one_model_better_then_weights_shift_within_bounds() -> None:
    cfg = FusionConfig(
        weights={"clip": 0.7, "xgb": 0.3},
        monitor=MonitorConfig(horizon_bars=1),
        adaptation=AdaptationConfig(
            enabled=True, min_weight=0.2, max_weight=0.8, rate=0.5, min_outcomes=5
        ),
    )
    engine = FusionEngine(config=cfg)
    rng = np.random.default_rng(1)
    price = 100.0
    for _ in range(300):
        up = rng.random() < 0.5
        nxt = price + (1 if up else -1)
        engine.observe("A", price, {"xgb": 0.9 if up else 0.1, "clip": float(rng.random())})
        price = nxt
    assert engine.weights["xgb"] == pytest.approx(0.8)
    assert engine.weights["clip"] == pytest.approx(0.2)


def test_drift_when_distribution_shifts_then_one_report_with_retrain() -> None:
    rng = np.random.default_rng(2)
    ref = drift_reference(rng.normal(size=(5000, 2)), ["a", "b"])
    monitor = DriftMonitor(reference=ref, config=DriftConfig(window=1000, min_samples=500))
    monitor.observe(rng.normal(size=(1000, 2)))
    assert monitor.check() is None
    assert monitor.report().max_psi < 0.05
    shifted = np.column_stack([rng.normal(2.0, 1.0, 1000), rng.normal(size=1000)])
    monitor.observe(shifted)
    report = monitor.check()
    assert report is not None
    assert report.drifted == ("a",)
    assert report.recommendation == "retrain"
    monitor.observe(shifted[:10])
    assert monitor.check() is None  # reported once per crossing


def _psi_by_hand(ref: DriftReference, rows: np.ndarray) -> dict[str, float]:
    """PSI of each column of rows against the reference, binned from scratch."""
    out = {}
    for j, (name, edges, fractions) in enumerate(
        zip(ref.names, ref.edges, ref.fractions, strict=True)
    ):
        col = rows[:, j]
        index = np.where(
            np.isfinite(col), np.searchsorted(np.asarray(edges), col, side="right"), len(edges) + 1
        )
        counts = np.bincount(index, minlength=len(edges) + 2)
        out[name] = psi(fractions, counts / rows.shape[0])
    return out


@pytest.mark.parametrize("batch", [1, 7, 30, 45], ids=lambda b: f"batch{b}")
def test_drift_when_rows_arrive_in_batches_then_psi_is_that_of_the_last_window_rows(
    batch: int,
) -> None:
    rng = np.random.default_rng(5)
    ref = drift_reference(rng.normal(size=(3000, 3)), ["a", "b", "c"])
    monitor = DriftMonitor(reference=ref, config=DriftConfig(window=40, min_samples=1))
    rows = np.column_stack([rng.normal(size=250), rng.normal(1.0, 2.0, 250), rng.random(250)])
    rows[::17, 1] = np.nan  # NaN has a bin of its own
    for start in range(0, rows.shape[0], batch):
        monitor.observe(rows[start : start + batch])
        seen = rows[: start + batch][-40:]
        got = monitor.report()
        assert got.samples == seen.shape[0]
        assert got.psi == pytest.approx(_psi_by_hand(ref, seen))
    assert monitor.report().max_psi > 0.1  # column b is shifted: the figures are not all zero


def test_psi_when_identical_then_zero() -> None:
    assert psi([0.5, 0.5], [0.5, 0.5]) == 0.0
    assert psi([0.5, 0.5], [0.9, 0.1]) > 0.25
