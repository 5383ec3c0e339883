from __future__ import annotations

from datetime import UTC, datetime

import msgspec
import numpy as np
import pytest

from strategy.backtest.data import build_dataset, frame_batches, precompute_signals
from strategy.backtest.engine import BacktestConfig, BacktestEngine
from strategy.bars import BarStore, BarStoreConfig
from strategy.drift import DriftConfig, DriftMonitor, drift_reference
from strategy.features import FeatureConfig, FeatureEngine
from strategy.fusion import FUSED, FusionConfig, FusionEngine
from strategy.market_sim import SimMarketConfig, simulate_frame
from strategy.ml_scorer import MLScorer, VisionScores, usable_rows
from strategy.target_strategy import StrategyConfig
from strategy.types import Signal
from vlm_engine.xgb import XgbTrainConfig, train_xgb

START = datetime(2024, 1, 1, tzinfo=UTC)
STORE = BarStoreConfig(window=40)
FEATURES = FeatureConfig(lookback=40)


class FakeVision:
    """A deterministic stand-in for CLIP: P(up) from the last bar's body."""

    def score_windows(self, windows):
        body = np.array([(w.close[-1] - w.open[-1]) / w.close[-1] for w in windows])
        p = 1 / (1 + np.exp(-body * 2000))
        return VisionScores(
            p_up=p,
            pattern_probs=np.column_stack([p, 1 - p]),
            pattern_names=("up", "down"),
            embeddings=np.zeros((len(windows), 4)),
        )


@pytest.fixture(scope="module")
def setup():
    market = SimMarketConfig(symbols=("A", "B"), pattern_rate=0.05, pattern_drift_bps=40, seed=4)
    batches = frame_batches(simulate_frame(market, START, 900))
    ds = build_dataset(batches, STORE, FeatureEngine(config=FEATURES), horizon=5)
    m = ds.labelled()
    result = train_xgb(
        ds.x[m],
        ds.y[m],
        ts=ds.ts[m],
        label_end=ds.label_end[m],
        feature_names=ds.feature_names,
        config=XgbTrainConfig(n_folds=2, num_boost_round=30),
        bar_seconds=60,
        horizon_bars=5,
    )
    return batches, ds, result.model


def _window_batches(batches):  # type: ignore[no-untyped-def]
    """The full windows after each batch of bars (batches with none left out)."""
    store = BarStore(config=STORE)
    for batch in batches:
        for bar in batch:
            store.add(bar)
        windows = [w for s in store.symbols if (w := store.window(s)) is not None]
        if windows:
            yield windows


def _scorer(model, **kw):
    kw.setdefault("fusion", FusionEngine(config=FusionConfig(smoothing_bars=3)))
    return MLScorer(features=FeatureEngine(config=FEATURES), xgb=model, vision=FakeVision(), **kw)


def test_run_when_ml_scores_batched_then_same_orders_as_bar_by_bar(setup) -> None:
    batches, _, model = setup
    cfg = BacktestConfig(
        bars=STORE, strategy=StrategyConfig(enter_threshold=0.55, min_confidence=0.05)
    )
    live = BacktestEngine(config=cfg, scorer=_scorer(model)).run_batches(batches)
    pre = precompute_signals(_scorer(model), batches, STORE, chunk=500)
    batched = BacktestEngine(config=cfg, scorer=pre).run_batches(batches)
    assert len(live.orders) > 5
    assert [msgspec.to_builtins(o) for o in batched.orders] == [
        msgspec.to_builtins(o) for o in live.orders
    ]


def test_score_when_fused_then_signal_carries_uncertainty_and_reasons(setup) -> None:
    batches, _ds, model = setup
    scorer = _scorer(model)
    pre = precompute_signals(scorer, batches[:300], STORE)
    signals = list(pre.signals.values())
    assert all(0 <= s.disagreement <= 1 and 0 <= s.entropy <= 1 for s in signals)
    assert any(s.disagreement > 0.05 for s in signals)
    confident = [s for s in signals if s.confidence > 0]
    assert confident
    assert all(s.reasons and s.reasons[0][-1] in "+-" for s in confident)
    assert {s.scorer for s in signals} == {"ml"}


def test_score_when_inputs_drift_then_drift_report_recorded(setup) -> None:
    batches, ds, model = setup
    names = [*ds.feature_names, "confidence"]
    ref_x = np.column_stack([ds.x, np.zeros(len(ds.x))])
    ref_x[:, ds.feature_names.index("ret_1")] = 5.0  # a reference the live data cannot match
    drift = DriftMonitor(
        reference=drift_reference(ref_x, names), config=DriftConfig(window=200, min_samples=100)
    )
    scorer = _scorer(model, drift=drift)
    precompute_signals(scorer, batches[:200], STORE)
    reports = scorer.take_drift_reports()
    assert len(reports) == 1
    assert "ret_1" in reports[0].drifted
    assert scorer.take_drift_reports() == []


def test_scorer_when_clip_mode_without_vision_then_error(setup) -> None:
    with pytest.raises(ValueError, match="vision"):
        MLScorer(
            features=FeatureEngine(config=FEATURES),
            fusion=FusionEngine(config=FusionConfig()),
            mode="clip",
        )


def _row_by_row_signals(scorer: MLScorer, windows) -> list[Signal]:  # type: ignore[no-untyped-def]
    """score() as it was written before the column fusion and the deferred reasons: fuse() and
    observe() row by row, then each confident row's top contributions."""
    x, probs = scorer.model_rows(windows)
    usable = usable_rows(x)
    assert usable.all()
    out = []
    confidences = []
    for i, w in enumerate(windows):
        row = {m: float(p[i]) for m, p in probs.items()}
        fused = scorer.fusion.fuse(row, symbol=w.symbol)
        scorer.fusion.observe(w.symbol, float(w.close[-1]), {**row, FUSED: fused.p_up})
        confidences.append(fused.confidence)
        reasons: tuple[str, ...] = ()
        if fused.confidence > 0:
            top = scorer.xgb.explain(x[i : i + 1], scorer.explain_top, approximate=True)[0]
            reasons = tuple(f"{n}{'+' if v > 0 else '-'}" for n, v in top)
        out.append(
            Signal(
                symbol=w.symbol,
                ts=w.ts,
                p_up=fused.p_up,
                confidence=fused.confidence,
                scorer=scorer.name,
                reasons=reasons,
                disagreement=fused.disagreement,
                entropy=fused.entropy,
            )
        )
    assert scorer.drift is not None
    scorer.drift.observe(np.column_stack([x, confidences]))
    report = scorer.drift.check(windows[-1].ts)
    if report is not None:
        scorer.drift_reports.append(report)
    return out


def test_score_when_fused_by_columns_then_signals_equal_row_by_row_fusion(setup) -> None:
    batches, ds, model = setup
    fusion = FusionConfig(weights={"clip": 0.6, "xgb": 0.4}, disagreement_penalty=0.5)
    reference_rows = np.column_stack([ds.x, np.zeros(len(ds.x))])
    names = [*ds.feature_names, "confidence"]
    live, reference = (
        MLScorer(
            features=FeatureEngine(config=FEATURES),
            fusion=FusionEngine(config=fusion),
            xgb=model,
            vision=FakeVision(),
            drift=DriftMonitor(
                reference=drift_reference(reference_rows, names),
                config=DriftConfig(window=100, min_samples=20, psi_threshold=0.05),
            ),
        )
        for _ in range(2)
    )
    compared = explained = 0
    for windows in _window_batches(batches[:120]):
        deferred, pending = live.score_deferred(windows)
        signals = live.finish(deferred, pending)
        assert signals == _row_by_row_signals(reference, windows)
        assert [msgspec.structs.replace(s, reasons=()) for s in signals] == deferred
        compared += len(signals)
        explained += sum(bool(s.reasons) for s in signals)
    assert compared > 100
    assert explained > 10
    assert live.fusion.stats() == reference.fusion.stats()
    assert live.take_drift_reports() == reference.take_drift_reports() != []


def test_score_deferred_when_fused_by_columns_then_outcome_monitor_updated_by_finish(setup) -> None:
    batches, _, model = setup
    live, reference = (
        _scorer(model, fusion=FusionEngine(config=FusionConfig(weights={"clip": 0.6, "xgb": 0.4})))
        for _ in range(2)
    )
    left = 0
    for windows in _window_batches(batches[:80]):
        before = repr(live.fusion.monitor._pending), live.fusion.stats()
        signals, pending = live.score_deferred(windows)
        assert pending is not None
        if pending.observation is not None:  # off the order path: untouched until finish()
            left += 1
            assert (repr(live.fusion.monitor._pending), live.fusion.stats()) == before
        assert live.finish(signals, pending) == reference.score(windows)
        assert repr(live.fusion.monitor._pending) == repr(reference.fusion.monitor._pending)
    assert left > 0
    assert live.fusion.stats() == reference.fusion.stats()
    assert live.fusion.stats()["fused"].count > 0
