"""The ML scorer's top reasons (and drift update) on the live path: computed after the batch's
orders are at the broker, and journaled with their signals exactly as score() gives them."""

from __future__ import annotations

import asyncio
from pathlib import Path

import msgspec
import numpy as np

from strategy.bars import BarStore, BarStoreConfig
from strategy.features import FeatureConfig, FeatureEngine
from strategy.fusion import FusionConfig, FusionEngine
from strategy.market_sim import MarketSimulator, SimMarketConfig
from strategy.ml_scorer import Deferred, MLScorer
from strategy.target_strategy import StrategyConfig
from strategy.types import Bar, Order, Signal
from tests.daemon.test_pipeline import START, pipeline_at
from vlm_engine.xgb import XgbModel, XgbTrainConfig, train_xgb

WINDOW = 16
FEATURES = FeatureConfig(lookback=WINDOW)
MARKET = SimMarketConfig(symbols=["AAA", "BBB", "CCC"], seed=5, pattern_rate=0.1)
# Permissive, so that the weak test model's signals place orders.
TRADES_OFTEN = StrategyConfig(
    hold_bars=1, position_notional=2_000, enter_threshold=0.53, min_confidence=0.0
)


def _model() -> XgbModel:
    """A small XGBoost on the test market's own features (labels: the next close is higher)."""
    sim = MarketSimulator(config=MARKET, start=START)
    store, engine = BarStore(config=BarStoreConfig(window=WINDOW)), FeatureEngine(config=FEATURES)
    rows, labels, ts, previous = [], [], [], {}
    for _ in range(400):
        for bar in sim.next_batch():
            store.add(bar)
            if bar.symbol in previous:
                labels.append(float(bar.close > previous[bar.symbol][1]))
                rows.append(previous[bar.symbol][0])
                ts.append(bar.ts.timestamp())
            window = store.window(bar.symbol)
            if window is not None:
                previous[bar.symbol] = (engine.compute([window])[0], bar.close)
    x, y, t = np.array(rows), np.array(labels), np.array(ts, dtype=np.int64)
    return train_xgb(
        x,
        y,
        ts=t,
        label_end=t + 60,
        feature_names=engine.names(60),
        config=XgbTrainConfig(n_folds=2, num_boost_round=20),
        bar_seconds=60,
        horizon_bars=1,
    ).model


def _scorer(model: XgbModel) -> MLScorer:
    return MLScorer(
        features=FeatureEngine(config=FEATURES),
        fusion=FusionEngine(config=FusionConfig(weights={"xgb": 1.0})),
        xgb=model,
    )


def _twin_signals(twin: MLScorer, store: BarStore, batch: list[Bar]) -> list[Signal]:
    """What the live scorer should journal for this batch: a twin scorer on its own windows."""
    for bar in batch:
        store.add(bar)
    windows = [w for s in store.symbols if (w := store.window(s))]
    return [s for s in twin.score(windows) if s.confidence > 0]


def test_on_bars_when_ml_scorer_then_reasons_after_orders_and_journaled_as_score_gives_them(
    tmp_path: Path,
) -> None:
    model = _model()
    live, twin = _scorer(model), _scorer(model)
    sim = MarketSimulator(config=MARKET, start=START)
    batches = [sim.next_batch() for _ in range(120)]
    orders_when_explained: list[tuple[int, int]] = []
    expected: list[Signal] = []
    checked: list[int] = []
    twin_store = BarStore(config=BarStoreConfig(window=WINDOW))
    with pipeline_at(tmp_path, scorer=live, window=WINDOW, strategy=TRADES_OFTEN) as pipeline:
        finish = live.finish

        def noted(signals: list[Signal], deferred: Deferred | None) -> list[Signal]:
            orders_when_explained.append((pipeline.stats.batches, pipeline.stats.orders_submitted))
            return finish(signals, deferred)

        live.finish = noted  # type: ignore[method-assign]

        async def go() -> None:
            for batch in batches:
                expected.extend(_twin_signals(twin, twin_store, batch))
                before = pipeline.stats.orders_submitted
                orders = await pipeline.on_bars(batch)
                if orders:  # this batch's reasons came once its orders were at the broker
                    assert orders_when_explained[-1] == (
                        pipeline.stats.batches,
                        before + len(orders),
                    )
                    checked.append(len(orders))

        asyncio.run(go())
        journaled = [
            msgspec.json.decode(r["data"], type=Signal) for r in pipeline.journal.rows("signals")
        ]
    assert len(checked) >= 3
    assert len(orders_when_explained) > 50
    assert journaled == expected
    assert sum(bool(s.reasons) for s in journaled) > 50


def test_on_bars_when_the_venue_fails_a_submit_then_that_batch_signals_are_still_journaled(
    tmp_path: Path,
) -> None:
    """A venue error reaches the caller, but the batch's deferred signals (and the monitors'
    update in finish) are not lost with it: the journal ends with every signal score() gives."""
    model = _model()
    live, twin = _scorer(model), _scorer(model)
    sim = MarketSimulator(config=MARKET, start=START)
    batches = [sim.next_batch() for _ in range(120)]
    expected: list[Signal] = []
    finished: list[int] = []
    failures: list[str] = []
    failed_batch: list[int] = []
    twin_store = BarStore(config=BarStoreConfig(window=WINDOW))
    with pipeline_at(tmp_path, scorer=live, window=WINDOW, strategy=TRADES_OFTEN) as pipeline:
        finish, submit = live.finish, pipeline.execution.submit

        def counted(signals: list[Signal], deferred: Deferred | None) -> list[Signal]:
            finished.append(pipeline.stats.batches)
            return finish(signals, deferred)

        async def refuses_once(orders: list[Order]) -> None:
            if not failures:
                failures.append(orders[0].client_order_id)
                raise ConnectionError("venue refused the batch")
            await submit(orders)

        live.finish = counted  # type: ignore[method-assign]
        pipeline.execution.submit = refuses_once  # type: ignore[method-assign]

        async def go() -> None:
            for batch in batches:
                expected.extend(_twin_signals(twin, twin_store, batch))
                try:
                    await pipeline.on_bars(batch)
                except ConnectionError:
                    failed_batch.append(pipeline.stats.batches)

        asyncio.run(go())
        journaled = [
            msgspec.json.decode(r["data"], type=Signal) for r in pipeline.journal.rows("signals")
        ]
        refused = [
            r for r in pipeline.journal.rows("orders") if r["client_order_id"] == failures[0]
        ]
    assert len(failed_batch) == 1
    assert failed_batch[0] in finished  # the monitors saw the failed batch too
    assert len(refused) == 1  # its order was journaled ahead, as every order is
    assert journaled == expected
