"""The per-bar value Structs stay out of the cyclic garbage collector (gc=False): an Order holds a
Side and an OrderStatus (enum members, which the collector tracks), so without it every order,
fill, event, intent and decision of a run was tracked and counted towards gen0 collections, and
the ones kept (the run's orders, the broker's records) made each full collection longer. None of
these values can be part of a reference cycle: their fields are strings, numbers, datetimes, enum
members, tuples of strings and other such values.
"""

from __future__ import annotations

import gc
from datetime import UTC, datetime

import msgspec
import pytest

from strategy.bars_types import BarRejected, WindowReset
from strategy.risk_types import TradingStateChange
from strategy.sim_broker_types import SymbolTape, VenueOrder
from strategy.target_strategy_types import SizingMiss
from strategy.types import (
    Bar,
    Fill,
    Order,
    OrderEvent,
    OrderIntent,
    OrderStatus,
    OrderType,
    Position,
    RiskDecision,
    Side,
    Signal,
    TradingState,
)

HAVE_GC = 1 << 14  # Py_TPFLAGS_HAVE_GC: instances are allocated (and counted) by the collector
T = datetime(2024, 3, 1, 15, 30, tzinfo=UTC)


def values() -> list[msgspec.Struct]:
    bar = Bar(symbol="AAA", ts=T, open=1.0, high=2.0, low=0.5, close=1.5, volume=10.0)
    intent = OrderIntent(symbol="AAA", ts=T, side=Side.SELL, quantity=3.0, reason="exit")
    order = Order(
        client_order_id="BT-1", symbol="AAA", side=Side.BUY, quantity=3.0,
        order_type=OrderType.LIMIT, created_ts=T, limit_price=1.2,
    )  # fmt: skip
    return [
        bar,
        Signal(symbol="AAA", ts=T, p_up=0.7, confidence=0.4, scorer="s", reasons=("x", "y")),
        intent,
        RiskDecision(intent=intent, accepted=False, reason="max_position", ts=T),
        order,
        OrderEvent(client_order_id="BT-1", ts=T, status=OrderStatus.FILLED, filled_quantity=3.0),
        Fill(
            fill_id="F-1",
            client_order_id="BT-1",
            symbol="AAA",
            side=Side.BUY,
            quantity=3.0,
            price=1.2,
            commission=1.0,
            ts=T,
        ),
        Position(symbol="AAA", quantity=3.0, average_price=1.2),
        VenueOrder(order=order, sequence=1, submitted_ts=T),
        SymbolTape(bar=bar, volume_used=1.0),
        BarRejected(symbol="AAA", ts=T, reason="stale", detail="late"),
        WindowReset(symbol="AAA", ts=T, missing_bars=3, policy="reset", after=T),
        TradingStateChange(
            previous=TradingState.ACTIVE, current=TradingState.HALTED, reason="drawdown", ts=T
        ),
        SizingMiss(symbol="AAA", ts=T, price=1.0, notional=0.5, step=1.0),
    ]


@pytest.mark.parametrize("value", values(), ids=lambda v: type(v).__name__)
def test_value_when_built_or_decoded_then_untracked_by_the_collector(value: msgspec.Struct) -> None:
    decoded = msgspec.json.decode(msgspec.json.encode(value), type=type(value))
    assert decoded == value
    for instance in (value, decoded):
        assert not gc.is_tracked(instance)
    assert not type(value).__flags__ & HAVE_GC


def test_values_when_enum_members_held_then_the_collector_would_track_a_plain_struct() -> None:
    """The reason for gc=False: a Struct holding an enum member is tracked by default."""

    class Plain(msgspec.Struct, frozen=True):
        side: Side

    assert gc.is_tracked(Plain(Side.BUY))
    assert gc.is_tracked(Side.BUY)
