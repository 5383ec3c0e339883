from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from strategy.backtest.data import frame_batches, iter_windows
from strategy.bars import BarStoreConfig, Window
from strategy.features import FeatureConfig, FeatureEngine, feature_names
from strategy.market_sim import SimMarketConfig, simulate_frame

START = datetime(2024, 1, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def windows():
    cfg = SimMarketConfig(symbols=("A", "B"), pattern_rate=0.05, seed=5)
    batches = frame_batches(simulate_frame(cfg, START, 400))
    return [w for chunk in iter_windows(batches, BarStoreConfig(window=64)) for w in chunk]


def test_compute_when_batched_then_rows_equal_one_by_one(windows) -> None:
    engine = FeatureEngine(config=FeatureConfig())
    batch = engine.compute(windows)
    single = np.vstack([engine.compute([w]) for w in windows[:80]])
    np.testing.assert_array_equal(batch[:80], single)
    assert batch.shape == (len(windows), len(engine.names(60)))


def test_compute_when_prices_scaled_then_features_unchanged(windows) -> None:
    import msgspec

    engine = FeatureEngine(config=FeatureConfig())
    scaled = [
        msgspec.structs.replace(
            w, open=w.open * 37.0, high=w.high * 37.0, low=w.low * 37.0, close=w.close * 37.0
        )
        for w in windows[:50]
    ]
    np.testing.assert_allclose(engine.compute(scaled), engine.compute(windows[:50]), atol=1e-9)


def test_compute_when_planted_patterns_then_pattern_flags_fire(windows) -> None:
    engine = FeatureEngine(config=FeatureConfig())
    x = engine.compute(windows)
    names = engine.names(60)
    flags = x[:, [i for i, n in enumerate(names) if n.startswith("cdl")]]
    assert np.isfinite(x[:, names.index("rsi")]).all()
    assert (np.abs(flags) > 0).any(axis=1).sum() > 10
    assert set(np.unique(flags)) <= {-1.0, -0.8, -0.5, 0.0, 0.5, 0.8, 1.0} | set(np.unique(flags))


def test_compute_when_window_shorter_than_indicators_then_nan_not_error(windows) -> None:
    import msgspec

    w = windows[0]
    short = msgspec.structs.replace(
        w,
        timestamps=w.timestamps[-10:],
        open=w.open[-10:],
        high=w.high[-10:],
        low=w.low[-10:],
        close=w.close[-10:],
        volume=w.volume[-10:],
    )
    engine = FeatureEngine(config=FeatureConfig())
    row = engine.compute([short])[0]
    names = engine.names(60)
    assert np.isnan(row[names.index("macd")])
    assert np.isfinite(row[names.index("ret_1")])


def test_names_when_daily_bars_then_no_time_of_day() -> None:
    names = feature_names(FeatureConfig(), 86_400)
    assert "tod_sin" not in names
    assert "dow_sin" in names
    assert "tod_sin" in feature_names(FeatureConfig(), 60)


def test_config_when_unknown_pattern_then_value_error_names_it() -> None:
    with pytest.raises(ValueError, match="CDLNOPE"):
        FeatureConfig(patterns=("CDLNOPE",))


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    picks=st.lists(st.tuples(st.integers(0, 10_000), st.integers(2, 90)), min_size=1, max_size=12)
)
def test_compute_when_mixed_lengths_then_indicators_are_talib_per_window(
    windows: list[Window], picks: list[tuple[int, int]]
) -> None:
    """The stacked tails and the per-window TA-Lib loop against TA-Lib called on each window's
    own tail (divided by its last close), bit for bit; and each row equals its window alone."""
    import msgspec
    import talib

    cfg = FeatureConfig()
    engine = FeatureEngine(config=cfg)
    batch = []
    for index, keep in picks:
        w = windows[index % len(windows)]
        batch.append(
            msgspec.structs.replace(
                w,
                timestamps=w.timestamps[-keep:],
                open=w.open[-keep:],
                high=w.high[-keep:],
                low=w.low[-keep:],
                close=w.close[-keep:],
                volume=w.volume[-keep:],
            )
        )
    x = engine.compute(batch)
    names = engine.names(60)
    for row, w in zip(x, batch, strict=True):
        np.testing.assert_array_equal(row, engine.compute([w])[0])
        length = min(len(w), cfg.lookback)
        last = w.close[-1]
        c, h, lo = (a[-length:] / last for a in (w.close, w.high, w.low))
        want = {
            "rsi": talib.RSI(c, timeperiod=cfg.rsi_period)[-1] / 100.0,
            "macd": talib.MACD(c, cfg.macd_fast, cfg.macd_slow, cfg.macd_signal)[0][-1],
            "macd_hist": talib.MACD(c, cfg.macd_fast, cfg.macd_slow, cfg.macd_signal)[2][-1],
            "atr": talib.ATR(h, lo, c, timeperiod=cfg.atr_period)[-1],
        }
        got = {k: row[names.index(k)] for k in want}
        np.testing.assert_array_equal(np.array(list(got.values())), np.array(list(want.values())))
