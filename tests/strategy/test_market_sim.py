"""The simulated market: deterministic, seekable, valid bars, detectable planted patterns with a drift."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import msgspec
import numpy as np
import pytest
import talib
from hypothesis import given, settings
from hypothesis import strategies as st

from strategy.market_sim import (
    BAR_COLUMNS,
    MarketSimulator,
    RegimeConfig,
    SimMarketConfig,
    simulate_arrays,
    simulate_frame,
)
from strategy.sim_patterns import ALL_PATTERNS, CHART_SHAPES, PATTERN_DIRECTION, PATTERN_TALIB

START = datetime(2026, 1, 5, 14, 30, tzinfo=UTC)
SMALL = SimMarketConfig(session_bars=64, pattern_rate=0.05)


def _stream(config: SimMarketConfig, n: int) -> list[list]:
    sim = MarketSimulator(config=config, start=START)
    return [sim.next_batch() for _ in range(n)]


def test_next_batch_when_same_seed_then_same_bars() -> None:
    assert _stream(SMALL, 300) == _stream(SMALL, 300)


def test_next_batch_when_other_seed_then_other_bars() -> None:
    other = msgspec.structs.replace(SMALL, seed=SMALL.seed + 1)
    assert _stream(SMALL, 50) != _stream(other, 50)


def test_next_batch_when_streaming_then_all_symbols_share_each_close_time() -> None:
    batches = _stream(SMALL, 130)
    for i, batch in enumerate(batches):
        assert [b.symbol for b in batch] == list(SMALL.symbols)
        assert {b.ts for b in batch} == {START + timedelta(seconds=60 * i)}


def test_skip_to_when_seeking_forward_and_back_then_equals_streaming() -> None:
    streamed = _stream(SMALL, 400)
    sim = MarketSimulator(config=SMALL, start=START)
    for index in (333, 64, 0, 399, 127, 128):
        sim.skip_to(START + timedelta(minutes=index))
        assert sim.next_batch() == streamed[index]
        assert sim.position == index + 1


def test_skip_to_when_seeking_then_planted_equals_streamed_planted() -> None:
    sim = MarketSimulator(config=SMALL, start=START)
    for _ in range(300):
        sim.next_batch()
    seeker = MarketSimulator(config=SMALL, start=START)
    seeker.skip_to(START + timedelta(minutes=300))
    assert seeker.planted == sim.planted
    assert sim.planted, "pattern_rate 0.05 over 1200 bars plants some patterns"
    assert all(p.index < 300 for p in sim.planted)


def test_simulate_frame_when_compared_with_streaming_then_identical() -> None:
    n = 200
    frame = simulate_frame(SMALL, START, n)
    sim = MarketSimulator(config=SMALL, start=START)
    bars = [bar for _ in range(n) for bar in sim.next_batch()]
    assert list(frame.columns[:7]) == list(BAR_COLUMNS)
    assert frame["symbol"].tolist() == [b.symbol for b in bars]
    assert [t.to_pydatetime() for t in frame["ts"]] == [b.ts for b in bars]
    for column in BAR_COLUMNS[2:]:
        assert frame[column].tolist() == [getattr(b, column) for b in bars]
    marked = frame[frame["pattern"] != ""]
    assert [
        (r.symbol, r.ts.to_pydatetime(), r.pattern, r.direction) for r in marked.itertuples()
    ] == [(p.symbol, p.ts, p.pattern, p.direction) for p in sim.planted]


def test_next_batch_when_symbol_added_then_other_symbols_unchanged() -> None:
    more = msgspec.structs.replace(SMALL, symbols=(*SMALL.symbols, "EXTRA"))
    a, b = _stream(SMALL, 80), _stream(more, 80)
    assert [batch for batch in a] == [batch[:-1] for batch in b]


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**32),
    vol=st.floats(0.5, 200.0),
    drift=st.floats(-20.0, 20.0),
    rate=st.floats(0.0, 0.2),
    drift_bps=st.floats(-500.0, 500.0),
    session=st.integers(32, 400),
)
def test_simulate_arrays_when_any_config_then_every_bar_is_valid(
    seed: int, vol: float, drift: float, rate: float, drift_bps: float, session: int
) -> None:
    config = SimMarketConfig(
        symbols=("A", "B"),
        seed=seed,
        regimes=(
            RegimeConfig(name="x", vol_bps=vol, drift_bps=drift, mean_bars=20),
            RegimeConfig(name="y", vol_bps=vol / 3, mean_bars=5),
        ),
        session_bars=session,
        pattern_rate=rate,
        pattern_drift_bps=drift_bps,
    )
    (o, h, low, c, v), _ = simulate_arrays(config, 900)
    assert np.isfinite([o, h, low, c, v]).all()
    assert (h >= np.maximum(o, c)).all()
    assert (low <= np.minimum(o, c)).all()
    assert (low > 0).all()
    assert (v > 0).all()


@pytest.fixture(scope="module")
def long_market() -> tuple[np.ndarray, list]:
    return simulate_arrays(SimMarketConfig(pattern_rate=0.05), 40_000)


@pytest.mark.parametrize("pattern", ALL_PATTERNS)
def test_planted_pattern_when_scanned_with_talib_then_detected_at_least_80_percent(
    long_market: tuple[np.ndarray, list], pattern: str
) -> None:
    (o, h, low, c, _), planted = long_market
    function = getattr(talib, PATTERN_TALIB[pattern])
    outputs = [function(o[j], h[j], low[j], c[j]) for j in range(o.shape[0])]
    direction = PATTERN_DIRECTION[pattern]
    hits = [outputs[j][index] * direction > 0 for j, index, name in planted if name == pattern]
    assert len(hits) >= 100
    assert np.mean(hits) >= 0.8


def test_planted_pattern_when_followed_forward_then_bullish_outruns_bearish(
    long_market: tuple[np.ndarray, list],
) -> None:
    (_, _, _, c, _), planted = long_market
    horizon = SimMarketConfig().drift_horizon
    forward: dict[int, list[float]] = {1: [], -1: []}
    for j, index, name in planted:
        if index + horizon < c.shape[1]:
            forward[PATTERN_DIRECTION[name]].append(np.log(c[j, index + horizon] / c[j, index]))
    up, down = np.mean(forward[1]), np.mean(forward[-1])
    assert up > 0 > down
    assert up - down > 15e-4  # twice the 15 bps drift, less noise


def test_chart_shape_when_planted_then_no_candlestick_function_sees_it_but_price_follows() -> None:
    config = SimMarketConfig(pattern_rate=0.05, patterns=CHART_SHAPES)
    (o, h, low, c, _), planted = simulate_arrays(config, 20_000)
    assert {name for _, _, name in planted} == set(CHART_SHAPES)
    assert len(planted) >= 200
    for function in sorted(set(PATTERN_TALIB.values())):  # what the rule scorer and features flag
        outputs = [getattr(talib, function)(o[j], h[j], low[j], c[j]) for j in range(o.shape[0])]
        fired = [outputs[j][index] != 0 for j, index, _ in planted]
        assert np.mean(fired) < 0.05, function
    horizon = config.drift_horizon
    signed = [
        PATTERN_DIRECTION[name] * np.log(c[j, index + horizon] / c[j, index])
        for j, index, name in planted
        if index + horizon < c.shape[1]
    ]
    assert np.mean(signed) > 7e-4  # the 15 bps drift, less noise
    # The shape itself: the signal bar closes near where the W (or M) began, its two lows (highs)
    # lie well below (above) both ends.
    j, index, _ = next(p for p in planted if p[2] == "double_bottom")
    path = np.log(c[j, index - 11 : index + 1] / c[j, index - 11])
    lows = (path[3], path[7])
    assert max(lows) < min(path[0], path[-1])
    assert path[5] > max(lows)


def test_simulate_arrays_when_averaged_over_sessions_then_volume_is_u_shaped() -> None:
    config = SimMarketConfig(pattern_rate=0.0)
    (_, _, _, _, v), _ = simulate_arrays(config, config.session_bars * 40)
    by_bar = v.reshape(len(config.symbols), 40, config.session_bars).mean(axis=(0, 1))
    edges = np.r_[by_bar[:30], by_bar[-30:]].mean()
    assert edges > 1.5 * by_bar[180:210].mean()


def test_simulate_arrays_when_pattern_rate_zero_then_nothing_planted() -> None:
    _, planted = simulate_arrays(SimMarketConfig(pattern_rate=0.0), 2_000)
    assert planted == []


def test_simulator_when_start_not_aligned_then_value_error() -> None:
    with pytest.raises(ValueError, match="not aligned"):
        MarketSimulator(config=SMALL, start=START + timedelta(seconds=7))


def test_simulator_when_start_naive_then_value_error() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        MarketSimulator(config=SMALL, start=START.replace(tzinfo=None))


def test_skip_to_when_before_start_then_value_error() -> None:
    sim = MarketSimulator(config=SMALL, start=START)
    with pytest.raises(ValueError, match="not a bar close"):
        sim.skip_to(START - timedelta(minutes=1))


@pytest.mark.parametrize(
    ("yaml", "where"),
    [
        ("symbols: [A, A]", "symbols must be unique"),
        ("symbols: []", "$.symbols"),
        ("pattern_rate: 0.5", "$.pattern_rate"),
        ("patterns: [doji]", "$.patterns[0]"),
        ("bar_seconds: 0", "$.bar_seconds"),
        ("regimes: [{name: x, vol_bps: -1}]", "$.regimes[0].vol_bps"),
        ("colour: red", "colour"),
    ],
)
def test_decode_when_bad_market_config_then_error_names_the_key(yaml: str, where: str) -> None:
    with pytest.raises(msgspec.ValidationError) as excinfo:
        msgspec.yaml.decode(yaml, type=SimMarketConfig)
    assert where in str(excinfo.value)
