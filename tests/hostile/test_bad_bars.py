"""Finding 2: bars validated across bars (jumps, implausible and future times) and a fill collar."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from daemon.feeds.replay import ReplayFileError, load_bars_frame
from strategy.bars import BarStore, BarStoreConfig
from strategy.sim_broker import SimBroker, SimBrokerConfig
from strategy.types import Bar, Order, OrderType, Side

T0 = datetime(2024, 3, 1, 14, 30, tzinfo=UTC)


def _bar(i: int, close: float, *, symbol: str = "SPY", spread: float = 0.1) -> Bar:
    return Bar(
        symbol=symbol,
        ts=T0 + timedelta(minutes=i),
        open=close,
        high=close + spread,
        low=close - spread,
        close=close,
        volume=10_000.0,
    )


def _warm(store: BarStore, n: int = 20, price: float = 99.3) -> None:
    for i in range(n):
        assert store.add(_bar(i, price + 0.05 * (i % 3))) is None


def test_add_when_bar_priced_x1000_then_rejected_as_price_jump_and_window_unchanged() -> None:
    store = BarStore(config=BarStoreConfig(window=8))
    _warm(store)
    before = store.window("SPY")
    rejected = store.add(_bar(20, 99_324.0))
    assert rejected is not None
    assert rejected.reason == "price_jump"
    after = store.window("SPY")
    assert before is not None
    assert after is not None
    assert after.close.tolist() == before.close.tolist()
    assert store.add(_bar(21, 99.3)) is None  # back to normal: stored


def test_add_when_jump_confirmed_by_next_bar_then_next_bar_stored() -> None:
    store = BarStore(config=BarStoreConfig(window=8))
    _warm(store)
    assert store.add(_bar(20, 150.0)) is not None
    assert store.add(_bar(21, 150.2)) is None  # the new level holds: a real move
    assert store.add(_bar(22, 150.1)) is None


def test_add_when_jump_check_off_then_x1000_stored() -> None:
    store = BarStore(config=BarStoreConfig(window=8, max_jump_atr=0.0))
    _warm(store)
    assert store.add(_bar(20, 99_324.0)) is None


@pytest.mark.parametrize(
    "ts",
    [
        datetime(9999, 1, 1, tzinfo=UTC),
        datetime(2100, 1, 1, tzinfo=UTC),
        datetime(1, 1, 1, tzinfo=UTC),
        datetime(1969, 12, 31, 23, 59, tzinfo=UTC),
    ],
)
def test_add_when_ts_implausible_then_rejected(ts: datetime) -> None:
    store = BarStore(config=BarStoreConfig(window=8))
    bar = Bar(symbol="SPY", ts=ts, open=1.0, high=1.0, low=1.0, close=1.0, volume=1.0)
    rejected = store.add(bar)
    assert rejected is not None
    assert rejected.reason == "implausible_ts"


def test_add_when_ts_after_clock_beyond_tolerance_then_future_ts() -> None:
    store = BarStore(config=BarStoreConfig(window=8, max_future_seconds=60))
    now = T0
    assert store.add(_bar(0, 100.0), now=now) is None
    rejected = store.add(_bar(2, 100.0), now=now)
    assert rejected is not None
    assert rejected.reason == "future_ts"
    assert store.add(_bar(1, 100.0), now=now) is None  # within the tolerance


def _pending_sell(broker: SimBroker) -> None:
    order = Order(
        client_order_id="T-1",
        symbol="SPY",
        side=Side.SELL,
        quantity=10.0,
        order_type=OrderType.MARKET,
        created_ts=T0 + timedelta(minutes=19),
    )
    broker.submit(order, T0 + timedelta(minutes=19, seconds=1))


def test_sim_broker_when_bar_priced_x1000_then_no_fill_at_that_price() -> None:
    broker = SimBroker(config=SimBrokerConfig())
    for i in range(20):
        broker.on_bar(_bar(i, 99.3))
    _pending_sell(broker)
    _, fills = broker.on_bar(_bar(20, 99_324.0))
    assert fills == []
    _, fills = broker.on_bar(_bar(21, 99.4))
    assert len(fills) == 1
    assert fills[0].price < 100.0


def test_sim_broker_when_new_level_confirmed_then_fills_there() -> None:
    broker = SimBroker(config=SimBrokerConfig())
    for i in range(20):
        broker.on_bar(_bar(i, 100.0))
    _pending_sell(broker)
    assert broker.on_bar(_bar(20, 300.0))[1] == []
    _, fills = broker.on_bar(_bar(21, 301.0))
    assert len(fills) == 1
    assert fills[0].price > 290.0


@pytest.mark.parametrize(
    ("ts", "expected"),
    [
        ("-1", "outside 1970-01-02"),
        ("0", "outside 1970-01-02"),
        ("9999-01-01T00:00:00Z", "cannot parse"),
        ("2150-01-01T00:00:00Z", "cannot parse"),
        ("nan", "row 2"),
        ("1e30", "is not a time"),
    ],
)
def test_load_bars_when_ts_implausible_then_one_line_error_naming_row(
    tmp_path: Path, ts: str, expected: str
) -> None:
    path = tmp_path / "bars.csv"
    path.write_text(
        "symbol,ts,open,high,low,close,volume\n"
        "SPY,1709303400,99,100,98,99.5,1000\n"
        f"SPY,{ts},99,100,98,99.5,1000\n"
    )
    with pytest.raises(ReplayFileError) as e:
        load_bars_frame(path)
    assert "\n" not in str(e.value)
    assert expected in str(e.value)
    assert "row 2" in str(e.value) or "row 1" in str(e.value)
