"""The simulated broker's fills: prices, costs, volume limits, cancels, duplicates and snapshots."""

from __future__ import annotations

import math
from collections import defaultdict
from datetime import UTC, datetime, timedelta

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from strategy.errors import InvariantError
from strategy.sim_broker import SimBroker, SimBrokerConfig
from strategy.types import Bar, Order, OrderStatus, OrderType, Side

T0 = datetime(2024, 1, 2, 14, 30, tzinfo=UTC)


def ts(i: int) -> datetime:
    return T0 + timedelta(minutes=i)


def bar(
    i: int,
    *,
    open: float = 100.0,
    high: float | None = None,
    low: float | None = None,
    close: float | None = None,
    volume: float = 100_000.0,
    symbol: str = "AAA",
) -> Bar:
    close = open if close is None else close
    high = max(open, close) + 1.0 if high is None else high
    low = min(open, close) - 1.0 if low is None else low
    return Bar(symbol=symbol, ts=ts(i), open=open, high=high, low=low, close=close, volume=volume)


def order(
    coid: str = "VT-1",
    *,
    side: Side = Side.BUY,
    quantity: float = 100.0,
    limit: float | None = None,
    symbol: str = "AAA",
    at: int = 0,
) -> Order:
    return Order(
        client_order_id=coid,
        symbol=symbol,
        side=side,
        quantity=quantity,
        order_type=OrderType.LIMIT if limit is not None else OrderType.MARKET,
        limit_price=limit,
        created_ts=ts(at),
    )


def broker(**overrides: float) -> SimBroker:
    return SimBroker(config=msgspec.convert(overrides, SimBrokerConfig))


def test_submit_when_market_buy_then_fills_at_next_open_plus_half_spread_and_slippage() -> None:
    b = broker()
    b.on_bar(bar(0))
    events = b.submit(order(quantity=100), ts(0))
    assert [e.status for e in events] == [OrderStatus.ACCEPTED]
    assert events[0].broker_order_id == "SIM-1"

    bar_events, fills = b.on_bar(bar(1, open=101.0))

    assert len(fills) == 1
    fill = fills[0]
    assert fill.fill_id == "VT-1-F1"
    assert fill.price == pytest.approx(101.0 * 1.0002)  # 1 bp half spread + 1 bp slippage
    assert fill.commission == pytest.approx(1.0)  # 100 * 0.005 = 0.5 -> minimum 1.0
    assert fill.ts == ts(1)
    assert [(e.status, e.filled_quantity) for e in bar_events] == [(OrderStatus.FILLED, 100.0)]
    pos = b.positions()["AAA"]
    assert pos.quantity == 100.0
    assert pos.average_price == pytest.approx(101.0202)
    assert pos.realized_pnl == pytest.approx(-1.0)
    assert b.order("VT-1") is not None
    assert b.order("VT-1").average_fill_price == pytest.approx(101.0202)


def test_submit_when_market_sell_of_1000_then_price_below_open_and_per_share_commission() -> None:
    b = broker()
    b.submit(order(side=Side.SELL, quantity=1000), ts(0))

    _, fills = b.on_bar(bar(1, open=50.0))

    assert fills[0].price == pytest.approx(49.99)
    assert fills[0].commission == pytest.approx(5.0)
    assert b.positions()["AAA"].quantity == -1000.0


def test_submit_when_cheap_stock_then_commission_capped_at_fraction_of_notional() -> None:
    b = broker(slippage_bps=0.0, spread_bps=0.0)
    b.submit(order(quantity=100), ts(0))

    _, fills = b.on_bar(bar(1, open=0.5, high=0.6, low=0.4))

    assert fills[0].price == pytest.approx(0.5)
    assert fills[0].commission == pytest.approx(0.5)  # 1% of 50.0 beats the 1.0 minimum


def test_on_bar_when_bar_closed_at_submit_time_then_no_fill_until_next_bar() -> None:
    b = broker()
    b.submit(order(), ts(0))

    assert b.on_bar(bar(0)) == ([], [])
    _, fills = b.on_bar(bar(1, open=102.0))

    assert [f.price for f in fills] == [pytest.approx(102.0204)]


def test_submit_when_latency_zero_then_market_order_fills_at_last_close_immediately() -> None:
    b = broker(latency_bars=0)
    b.on_bar(bar(0, open=99.0, close=100.0))

    events = b.submit(order(), ts(0))
    flushed_events, fills = b.flush()

    assert [e.status for e in events] == [OrderStatus.ACCEPTED]
    assert [e.status for e in flushed_events] == [OrderStatus.FILLED]
    assert [f.price for f in fills] == [pytest.approx(100.02)]
    assert fills[0].ts == ts(0)
    assert b.flush() == ([], [])


def test_on_bar_when_buy_limit_not_reached_then_no_fill() -> None:
    b = broker()
    b.submit(order(limit=99.0), ts(0))

    events, fills = b.on_bar(bar(1, open=100.0, low=99.5))

    assert (events, fills) == ([], [])
    assert b.order("VT-1").status is OrderStatus.ACCEPTED


def test_on_bar_when_buy_limit_crossed_then_fills_at_limit_without_spread() -> None:
    b = broker()
    b.submit(order(limit=99.0), ts(0))
    b.on_bar(bar(1, open=100.0, low=99.5))

    _, fills = b.on_bar(bar(2, open=100.0, low=98.5))

    assert [f.price for f in fills] == [99.0]


def test_on_bar_when_buy_limit_and_open_gaps_below_then_fills_at_open() -> None:
    b = broker()
    b.submit(order(limit=99.0), ts(0))

    _, fills = b.on_bar(bar(1, open=98.0))

    assert [f.price for f in fills] == [98.0]


def test_on_bar_when_sell_limit_crossed_or_gapped_then_fills_at_limit_or_open() -> None:
    b = broker()
    b.submit(order("S1", side=Side.SELL, limit=101.0), ts(0))
    b.submit(order("S2", side=Side.SELL, limit=105.0), ts(0))

    _, fills = b.on_bar(bar(1, open=102.0, high=103.0))

    assert [(f.client_order_id, f.price) for f in fills] == [("S1", 102.0)]
    _, fills = b.on_bar(bar(2, open=104.0, high=105.5))
    assert [(f.client_order_id, f.price) for f in fills] == [("S2", 105.0)]


def test_on_bar_when_order_exceeds_volume_share_then_partial_fills_across_bars() -> None:
    b = broker()
    b.submit(order(quantity=250), ts(0))

    results = [b.on_bar(bar(i, volume=1000.0)) for i in (1, 2, 3)]

    fills = [f for _, fs in results for f in fs]
    assert [f.quantity for f in fills] == [100.0, 100.0, 50.0]
    assert [f.fill_id for f in fills] == ["VT-1-F1", "VT-1-F2", "VT-1-F3"]
    # Commission is per order: the minimum once, then the per-share excess (250 * 0.005 = 1.25).
    assert [f.commission for f in fills] == pytest.approx([1.0, 0.0, 0.25])
    statuses = [(e.status, e.filled_quantity) for es, _ in results for e in es]
    assert statuses == [
        (OrderStatus.PARTIALLY_FILLED, 100.0),
        (OrderStatus.PARTIALLY_FILLED, 200.0),
        (OrderStatus.FILLED, 250.0),
    ]
    assert b.open_orders() == []


def test_on_bar_when_two_orders_share_a_bar_then_volume_goes_first_come_first_served() -> None:
    b = broker()
    b.submit(order("A", quantity=80), ts(0))
    b.submit(order("B", quantity=80), ts(0))

    _, fills = b.on_bar(bar(1, volume=1000.0))

    assert [(f.client_order_id, f.quantity) for f in fills] == [("A", 80.0), ("B", 20.0)]


def test_on_bar_when_zero_volume_then_no_fill() -> None:
    b = broker()
    b.submit(order(), ts(0))

    assert b.on_bar(bar(1, volume=0.0)) == ([], [])


def test_cancel_when_partially_filled_then_cancelled_with_fills_kept_and_no_more_fills() -> None:
    b = broker()
    b.submit(order(quantity=250), ts(0))
    b.on_bar(bar(1, volume=1000.0))

    events = b.cancel("VT-1", ts(1))

    assert [(e.status, e.filled_quantity) for e in events] == [(OrderStatus.CANCELLED, 100.0)]
    assert b.on_bar(bar(2, volume=1000.0)) == ([], [])
    assert b.positions()["AAA"].quantity == 100.0
    assert b.order("VT-1").status is OrderStatus.CANCELLED
    assert b.open_orders() == []


def test_cancel_when_unknown_then_rejected_and_when_filled_then_nothing() -> None:
    b = broker()
    b.submit(order(), ts(0))
    b.on_bar(bar(1))

    unknown = b.cancel("nope", ts(1))

    assert [(e.status, e.reason) for e in unknown] == [
        (OrderStatus.REJECTED, "unknown_client_order_id")
    ]
    assert b.cancel("VT-1", ts(1)) == []
    assert b.order("VT-1").status is OrderStatus.FILLED


def test_submit_when_duplicate_client_order_id_then_rejected_and_never_a_second_order() -> None:
    b = broker()
    b.submit(order(quantity=100), ts(0))

    events = b.submit(order(quantity=500, side=Side.SELL), ts(0))
    b.on_bar(bar(1))

    assert [(e.status, e.reason) for e in events] == [
        (OrderStatus.REJECTED, "duplicate_client_order_id")
    ]
    assert len(b.orders()) == 1
    assert b.order("VT-1").status is OrderStatus.FILLED
    assert [f.quantity for f in b.fills()] == [100.0]
    assert b.positions()["AAA"].quantity == 100.0


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        (order(quantity=0), "invalid_quantity"),
        (order(quantity=-5), "invalid_quantity"),
        (order(quantity=math.nan), "invalid_quantity"),
        (order(limit=-1.0), "invalid_limit_price"),
        (msgspec.structs.replace(order(), order_type=OrderType.LIMIT), "invalid_limit_price"),
        (order(symbol=""), "invalid_symbol"),
    ],
)
def test_submit_when_invalid_order_then_rejected_with_reason_and_never_filled(
    bad: Order, reason: str
) -> None:
    b = broker()

    events = b.submit(bad, ts(0))
    b.on_bar(bar(1, symbol=bad.symbol or "AAA"))

    assert [(e.status, e.reason) for e in events] == [(OrderStatus.REJECTED, reason)]
    assert b.knows(bad.client_order_id)
    assert b.fills() == ()
    assert b.open_orders() == []


@pytest.mark.parametrize(
    "bad",
    [
        bar(1, open=math.nan),
        bar(1, open=-1.0, close=1.0),
        bar(1, high=99.0),
        bar(1, low=101.0),
        bar(1, volume=-1.0),
        bar(1, volume=math.inf),
    ],
)
def test_on_bar_when_bad_bar_then_ignored_and_next_good_bar_fills(bad: Bar) -> None:
    b = broker()
    b.submit(order(), ts(0))

    assert b.on_bar(bad) == ([], [])
    _, fills = b.on_bar(bar(2, open=100.0))

    assert [f.price for f in fills] == [pytest.approx(100.02)]


def test_on_bar_when_stale_timestamp_then_ignored() -> None:
    b = broker()
    b.on_bar(bar(5))
    b.submit(order(), ts(5))

    assert b.on_bar(bar(6, open=100.0)) != ([], [])
    b.submit(order("VT-2"), ts(6))
    assert b.on_bar(bar(6, open=50.0)) == ([], [])
    assert b.on_bar(bar(4, open=50.0)) == ([], [])


def test_restore_when_snapshot_taken_mid_fill_then_equal_state_and_same_future() -> None:
    b = broker()
    b.submit(order("A", quantity=250), ts(0))
    b.submit(order("B", side=Side.SELL, quantity=50, limit=103.0), ts(0))
    b.submit(order("C", quantity=10, symbol="BBB"), ts(0))
    b.on_bar(bar(1, volume=1000.0))
    b.on_bar(bar(1, symbol="BBB"))
    b.cancel("C", ts(1))

    restored = SimBroker.restore(b.snapshot(), b.config)

    assert restored.orders() == b.orders()
    assert restored.fills() == b.fills()
    assert restored.positions() == b.positions()
    assert restored.snapshot() == b.snapshot()
    nxt = bar(2, open=102.0, high=104.0, volume=1000.0)
    assert restored.on_bar(nxt) == b.on_bar(nxt)
    assert restored.snapshot() == b.snapshot()
    assert restored.submit(order("D"), ts(2))[0].broker_order_id == "SIM-4"


def test_restore_when_bytes_are_garbage_then_invariant_error_naming_the_snapshot() -> None:
    with pytest.raises(InvariantError, match="snapshot"):
        SimBroker.restore(b"{not json", SimBrokerConfig())


def test_config_when_unknown_or_out_of_range_field_then_validation_error() -> None:
    with pytest.raises(msgspec.ValidationError, match="latency_bars"):
        msgspec.convert({"latency_bars": 2}, SimBrokerConfig)
    with pytest.raises(msgspec.ValidationError, match="max_volume_fraction"):
        msgspec.convert({"max_volume_fraction": 0}, SimBrokerConfig)
    with pytest.raises(msgspec.ValidationError, match="bogus"):
        msgspec.convert({"bogus": 1}, SimBrokerConfig)


# ---- property: positions are the sum of signed fills ------------------------------------------------

_submit = st.tuples(
    st.just("submit"),
    st.sampled_from(["AAA", "BBB"]),
    st.sampled_from([Side.BUY, Side.SELL]),
    st.integers(min_value=1, max_value=400),
    st.one_of(st.none(), st.floats(min_value=-3.0, max_value=3.0)),
)
_bar = st.tuples(
    st.just("bar"),
    st.sampled_from(["AAA", "BBB"]),
    st.floats(min_value=-2.0, max_value=2.0),
    st.floats(min_value=0.0, max_value=3000.0),
)
_cancel = st.tuples(st.just("cancel"), st.integers(min_value=1, max_value=30))


@settings(max_examples=150, deadline=None)
@given(
    ops=st.lists(st.one_of(_submit, _bar, _cancel), max_size=60), latency=st.sampled_from([0, 1])
)
def test_any_sequence_when_orders_and_bars_then_positions_equal_sum_of_signed_fills(
    ops: list[tuple[object, ...]], latency: int
) -> None:
    b = broker(latency_bars=latency)
    prices = {"AAA": 100.0, "BBB": 20.0}
    submitted = 0
    for step, op in enumerate(ops, start=1):
        if op[0] == "submit":
            _, symbol, side, qty, offset = op
            submitted += 1
            limit = None if offset is None else round(prices[symbol] + float(offset), 2)
            b.submit(
                order(
                    f"O{submitted}", symbol=str(symbol), side=side, quantity=float(qty), limit=limit
                ),
                ts(step),
            )
        elif op[0] == "bar":
            _, symbol, move, volume = op
            o = prices[str(symbol)]
            c = max(o + float(move), 1.0)
            prices[str(symbol)] = c
            b.on_bar(bar(step, symbol=str(symbol), open=o, close=c, volume=float(volume)))
        else:
            b.cancel(f"O{op[1]}", ts(step))
    b.flush()

    signed: dict[str, float] = defaultdict(float)
    per_order: dict[str, float] = defaultdict(float)
    for f in b.fills():
        signed[f.symbol] += f.signed_quantity
        per_order[f.client_order_id] += f.quantity
        assert f.commission >= 0
        assert f.quantity > 0
    for symbol, pos in b.positions().items():
        assert pos.quantity == pytest.approx(signed[symbol], abs=1e-6)
    assert set(b.positions()) == set(signed)
    assert len({f.fill_id for f in b.fills()}) == len(b.fills())
    for coid, o in b.orders().items():
        assert o.filled_quantity == pytest.approx(per_order.get(coid, 0.0))
        assert o.filled_quantity <= o.quantity
        assert (o.status is OrderStatus.FILLED) == (o.filled_quantity == o.quantity)
    assert SimBroker.restore(b.snapshot(), b.config).positions() == b.positions()
