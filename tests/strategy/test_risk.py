"""RiskEngine: every check at and over its limit, the trading states, rate window, hours, config."""

from __future__ import annotations

import itertools
import math
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from strategy.book import Book
from strategy.risk import (
    RiskConfig,
    RiskEngine,
    RiskReason,
    TradingStateChange,
    worst_gross_exposure,
)
from strategy.trading_hours import TradingHours
from strategy.types import (
    Bar,
    Fill,
    Order,
    OrderEvent,
    OrderIntent,
    OrderStatus,
    OrderType,
    Side,
    TradingState,
)

T0 = datetime(2024, 3, 6, 15, 0, tzinfo=UTC)  # a Wednesday
ALL_OFF: dict[str, Any] = {
    "max_order_quantity": None,
    "max_order_notional": None,
    "max_position_quantity": None,
    "max_position_notional": None,
    "max_gross_exposure": None,
    "max_open_orders": None,
    "max_orders_per_minute": None,
    "max_daily_loss": None,
    "max_drawdown": None,
    "price_collar_bps": None,
}
_ids = itertools.count()


def only(**limits: Any) -> RiskEngine:
    """An engine with every check off except the given ones."""
    return RiskEngine(config=RiskConfig(**{**ALL_OFF, **limits}))


def mark(book: Book, symbol: str, price: float, ts: datetime = T0) -> None:
    book.mark(Bar(symbol=symbol, ts=ts, open=price, high=price, low=price, close=price, volume=1e4))


def make_book(prices: dict[str, float] | None = None, cash: float = 100_000.0) -> Book:
    book = Book(starting_cash=cash)
    for symbol, price in (prices if prices is not None else {"AAA": 100.0}).items():
        mark(book, symbol, price)
    return book


def fill(
    book: Book,
    symbol: str,
    side: Side,
    quantity: float,
    price: float = 100.0,
    ts: datetime = T0,
    client_order_id: str = "X",
) -> None:
    book.apply_fill(
        Fill(
            fill_id=f"F{next(_ids)}",
            client_order_id=client_order_id,
            symbol=symbol,
            side=side,
            quantity=quantity,
            price=price,
            commission=0.0,
            ts=ts,
        )
    )


def open_order(
    book: Book, symbol: str, side: Side, quantity: float, limit_price: float | None = None
) -> Order:
    order = Order(
        client_order_id=f"O{next(_ids)}",
        symbol=symbol,
        side=side,
        quantity=quantity,
        order_type=OrderType.LIMIT if limit_price else OrderType.MARKET,
        limit_price=limit_price,
        created_ts=T0,
    )
    book.add_order(order)
    return order


def intent(
    side: Side = Side.BUY, quantity: float = 10.0, symbol: str = "AAA", **kw: Any
) -> OrderIntent:
    return OrderIntent(symbol=symbol, ts=T0, side=side, quantity=quantity, **kw)


# ---- order-level checks ------------------------------------------------------------------------
@pytest.mark.parametrize(("quantity", "accepted"), [(100.0, True), (100.5, False)])
def test_check_when_order_quantity_at_or_over_limit_then_accepted_or_rejected(quantity, accepted):
    decision = only(max_order_quantity=100).check(intent(quantity=quantity), make_book(), T0)
    assert decision.accepted is accepted
    assert decision.reason == ("ok" if accepted else "max_order_quantity")


@pytest.mark.parametrize(("quantity", "accepted"), [(250.0, True), (250.01, False)])
def test_check_when_order_notional_at_or_over_limit_then_accepted_or_rejected(quantity, accepted):
    decision = only(max_order_notional=25_000).check(intent(quantity=quantity), make_book(), T0)
    assert decision.accepted is accepted
    assert decision.reason == ("ok" if accepted else "max_order_notional")


def test_check_when_limit_order_then_notional_uses_limit_price():
    engine = only(max_order_notional=25_000)
    book = make_book()
    at = intent(quantity=250, order_type=OrderType.LIMIT, limit_price=100.0)
    over = intent(quantity=250, order_type=OrderType.LIMIT, limit_price=100.1)
    assert engine.check(at, book, T0).accepted
    assert engine.check(over, book, T0).reason == "max_order_notional"


@pytest.mark.parametrize(("open_count", "accepted"), [(2, True), (3, False)])
def test_check_when_open_orders_at_or_over_limit_then_accepted_or_rejected(open_count, accepted):
    book = make_book({"AAA": 100.0, "BBB": 50.0})
    for _ in range(open_count):
        open_order(book, "BBB", Side.BUY, 1)
    decision = only(max_open_orders=3).check(intent(), book, T0)
    assert decision.accepted is accepted
    assert decision.reason == ("ok" if accepted else "max_open_orders")


@pytest.mark.parametrize(
    ("limit_price", "accepted"), [(105.0, True), (95.0, True), (105.01, False), (94.99, False)]
)
def test_check_when_limit_price_at_or_beyond_collar_then_accepted_or_rejected(
    limit_price, accepted
):
    decision = only(price_collar_bps=500).check(
        intent(order_type=OrderType.LIMIT, limit_price=limit_price), make_book(), T0
    )
    assert decision.accepted is accepted
    assert decision.reason == ("ok" if accepted else "price_collar")


def test_check_when_collar_on_and_no_last_price_then_rejected_no_price():
    decision = only(price_collar_bps=500).check(
        intent(symbol="NEW", order_type=OrderType.LIMIT, limit_price=10.0), make_book(), T0
    )
    assert (decision.accepted, decision.reason) == (False, "no_price")


def test_check_when_collar_off_and_no_last_price_then_limit_order_accepted():
    decision = only().check(
        intent(symbol="NEW", order_type=OrderType.LIMIT, limit_price=10.0), make_book(), T0
    )
    assert decision.accepted


def test_check_when_market_order_and_no_last_price_then_rejected_no_price():
    decision = only().check(intent(symbol="NEW"), make_book(), T0)
    assert (decision.accepted, decision.reason) == (False, "no_price")
    assert "NEW" in decision.detail


@pytest.mark.parametrize("limit_price", [None, 0.0, -1.0, math.nan, math.inf])
def test_check_when_limit_order_has_bad_limit_price_then_rejected_no_price(limit_price):
    decision = only().check(
        intent(order_type=OrderType.LIMIT, limit_price=limit_price), make_book(), T0
    )
    assert (decision.accepted, decision.reason) == (False, "no_price")


@pytest.mark.parametrize("quantity", [0.0, -5.0, math.nan, math.inf])
def test_check_when_quantity_not_positive_finite_then_rejected_invalid_quantity(quantity):
    decision = RiskEngine(config=RiskConfig()).check(intent(quantity=quantity), make_book(), T0)
    assert (decision.accepted, decision.reason) == (False, "invalid_quantity")


@pytest.mark.parametrize(
    ("confidence", "accepted"), [(0.6, True), (0.59, False), (math.nan, False)]
)
def test_check_when_confidence_at_or_under_minimum_then_accepted_or_rejected(confidence, accepted):
    decision = only(min_confidence=0.6).check(intent(confidence=confidence), make_book(), T0)
    assert decision.accepted is accepted
    assert decision.reason == ("ok" if accepted else "min_confidence")


# ---- position and exposure caps ------------------------------------------------------------------
@pytest.mark.parametrize(
    ("side", "quantity", "accepted"),
    [
        (Side.BUY, 20.0, True),  # 60 held + 20 open buy + 20 = 100
        (Side.BUY, 21.0, False),
        (
            Side.SELL,
            160.0,
            True,
        ),  # worst case short: 60 - 160 = -100 (the open buy may be cancelled)
        (Side.SELL, 161.0, False),
    ],
)
def test_check_when_position_could_reach_or_pass_limit_then_accepted_or_rejected(
    side, quantity, accepted
):
    book = make_book()
    fill(book, "AAA", Side.BUY, 60)
    open_order(book, "AAA", Side.BUY, 20)
    decision = only(max_position_quantity=100).check(intent(side, quantity), book, T0)
    assert decision.accepted is accepted
    assert decision.reason == ("ok" if accepted else "max_position_quantity")


@pytest.mark.parametrize(("quantity", "accepted"), [(150.0, True), (151.0, False)])
def test_check_when_position_notional_at_or_over_limit_then_accepted_or_rejected(
    quantity, accepted
):
    book = make_book()
    fill(book, "AAA", Side.BUY, 100)
    decision = only(max_position_notional=25_000).check(intent(quantity=quantity), book, T0)
    assert decision.accepted is accepted
    assert decision.reason == ("ok" if accepted else "max_position_notional")


@pytest.mark.parametrize(("quantity", "accepted"), [(200.0, True), (201.0, False)])
def test_check_when_gross_exposure_at_or_over_limit_then_accepted_or_rejected(quantity, accepted):
    book = make_book({"AAA": 100.0, "BBB": 50.0})
    fill(book, "BBB", Side.SELL, 200, price=50.0)  # |-200 * 50| = 10_000
    open_order(book, "BBB", Side.SELL, 100)  # worst case short 300 * 50 = 15_000
    decision = only(max_gross_exposure=35_000).check(intent(quantity=quantity), book, T0)
    assert decision.accepted is accepted
    assert decision.reason == ("ok" if accepted else "max_gross_exposure")


def test_worst_gross_exposure_when_open_orders_on_both_sides_then_counts_the_worse_side():
    book = make_book({"AAA": 100.0, "BBB": 50.0})
    fill(book, "AAA", Side.BUY, 100)  # 100 long
    open_order(book, "AAA", Side.SELL, 300)  # worst short -200 -> 20_000
    open_order(book, "CCC", Side.BUY, 10, limit_price=7.0)  # no last price: valued at its limit
    gross = worst_gross_exposure(book, intent(Side.BUY, 50, symbol="BBB"), 50.0)
    assert gross == pytest.approx(20_000 + 2_500 + 70)


def test_check_when_order_reduces_position_then_caps_cooldown_and_confidence_skipped():
    book = make_book()
    fill(book, "AAA", Side.BUY, 500)
    book.last_exit_ts["AAA"] = T0
    engine = only(
        max_position_quantity=100,
        max_position_notional=1_000,
        max_gross_exposure=1_000,
        min_confidence=0.9,
        cooldown_seconds=3600,
    )
    assert engine.check(intent(Side.SELL, 300, confidence=0.0), book, T0).accepted
    assert engine.check(intent(Side.BUY, 1, confidence=1.0), book, T0).reason == "cooldown"


def test_check_when_sell_would_flip_long_position_then_not_treated_as_reducing():
    book = make_book()
    fill(book, "AAA", Side.BUY, 50)
    engine = only(max_position_quantity=20)
    assert engine.check(intent(Side.SELL, 70), book, T0).accepted  # ends at -20
    assert engine.check(intent(Side.SELL, 71), book, T0).reason == "max_position_quantity"


# ---- rate limit --------------------------------------------------------------------------------------
def test_check_when_rate_limit_reached_then_rejected_until_oldest_leaves_the_60s_window():
    engine = only(max_orders_per_minute=2)
    book = make_book()
    assert engine.check(intent(), book, T0).accepted
    assert engine.check(intent(), book, T0 + timedelta(seconds=1)).accepted
    third = engine.check(intent(), book, T0 + timedelta(seconds=59))
    assert (third.accepted, third.reason) == (False, "order_rate_limit")
    assert engine.check(intent(), book, T0 + timedelta(seconds=60)).accepted  # T0 left the window
    assert engine.check(intent(), book, T0 + timedelta(seconds=60.5)).reason == "order_rate_limit"
    assert engine.orders_in_window(T0 + timedelta(seconds=61)) == 1


def test_check_when_rejected_or_cancel_then_not_counted_by_rate_limit():
    engine = only(max_orders_per_minute=1, max_order_quantity=5)
    book = make_book()
    assert not engine.check(intent(quantity=10), book, T0).accepted
    assert engine.check(intent(is_cancel=True, cancel_client_order_id="O1"), book, T0).accepted
    assert engine.orders_in_window(T0) == 0
    assert engine.check(intent(quantity=5), book, T0).accepted


# ---- cooldown ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("seconds_after_exit", "accepted"), [(300, True), (299, False)])
def test_check_when_cooldown_seconds_elapsed_or_not_then_accepted_or_rejected(
    seconds_after_exit, accepted
):
    book = make_book()
    fill(book, "AAA", Side.BUY, 10)
    fill(book, "AAA", Side.SELL, 10, ts=T0)  # flat: the book records the exit
    now = T0 + timedelta(seconds=seconds_after_exit)
    decision = only(cooldown_seconds=300).check(intent(), book, now)
    assert decision.accepted is accepted
    assert decision.reason == ("ok" if accepted else "cooldown")


def test_check_when_cooldown_bars_then_counts_batches_after_the_exit():
    book = make_book({"AAA": 100.0, "BBB": 50.0})
    fill(book, "AAA", Side.BUY, 10)
    fill(book, "AAA", Side.SELL, 10, ts=T0)
    engine = only(cooldown_bars=2)
    minute = timedelta(minutes=1)
    results = []
    for k in range(3):
        engine.update(book, T0 + k * minute)
        results.append(engine.check(intent(), book, T0 + k * minute).reason)
    assert results == ["cooldown", "cooldown", "ok"]
    assert engine.check(intent(symbol="BBB"), book, T0).accepted  # other symbols unaffected


def test_check_when_exit_noted_by_caller_then_cooldown_applies():
    engine = only(cooldown_seconds=60)
    engine.note_exit("AAA", T0)
    assert engine.check(intent(), make_book(), T0 + timedelta(seconds=30)).reason == "cooldown"
    assert engine.check(intent(), make_book(), T0 + timedelta(seconds=60)).accepted


# ---- trading hours -------------------------------------------------------------------------------------
NY = TradingHours(start="09:30", end="16:00", timezone="America/New_York")


@pytest.mark.parametrize(
    ("now", "accepted"),
    [
        (datetime(2024, 1, 10, 14, 30, tzinfo=UTC), True),  # Wed 09:30 EST: the open
        (datetime(2024, 1, 10, 14, 29, 59, tzinfo=UTC), False),
        (datetime(2024, 1, 10, 20, 59, 59, tzinfo=UTC), True),
        (datetime(2024, 1, 10, 21, 0, tzinfo=UTC), False),  # 16:00 EST: closed
        (datetime(2024, 7, 10, 13, 30, tzinfo=UTC), True),  # 09:30 EDT in summer
        (datetime(2024, 7, 10, 13, 29, tzinfo=UTC), False),
        (datetime(2024, 1, 13, 16, 0, tzinfo=UTC), False),  # Saturday 11:00
        (datetime(2024, 1, 14, 16, 0, tzinfo=UTC), False),  # Sunday
        (datetime(2024, 1, 10, 16, 0), True),  # naive: read as UTC
    ],
)
def test_check_when_time_inside_or_outside_hours_then_accepted_or_rejected(now, accepted):
    decision = only(trading_hours=NY).check(intent(), make_book(), now)
    assert decision.accepted is accepted
    assert decision.reason == ("ok" if accepted else "outside_trading_hours")


@pytest.mark.parametrize(
    ("now", "accepted"),
    [
        (datetime(2024, 1, 12, 23, 0, tzinfo=UTC), True),  # Friday evening
        (datetime(2024, 1, 13, 2, 0, tzinfo=UTC), True),  # Saturday early: Friday's session
        (datetime(2024, 1, 13, 23, 0, tzinfo=UTC), False),  # Saturday evening
        (datetime(2024, 1, 15, 2, 0, tzinfo=UTC), False),  # Monday early: Sunday's session
        (datetime(2024, 1, 15, 12, 0, tzinfo=UTC), False),  # Monday midday: between sessions
    ],
)
def test_check_when_window_spans_midnight_then_session_belongs_to_its_start_day(now, accepted):
    hours = TradingHours(start="18:00", end="06:00", timezone="UTC")
    assert only(trading_hours=hours).check(intent(), make_book(), now).accepted is accepted


# ---- trading states -------------------------------------------------------------------------------------
def losing_book(loss: float) -> Book:
    """A book 100 long from 100 whose mark gives the stated daily loss."""
    book = make_book()
    fill(book, "AAA", Side.BUY, 100)
    mark(book, "AAA", 100.0 - loss / 100)
    return book


def test_update_when_daily_loss_at_limit_then_stays_active():
    engine = only(max_daily_loss=3_000)
    assert engine.update(losing_book(3_000), T0) is None
    assert engine.state is TradingState.ACTIVE


def test_update_when_daily_loss_over_limit_then_halts_and_rejects_new_entries():
    engine = only(max_daily_loss=3_000)
    book = losing_book(3_001)
    change = engine.update(book, T0)
    assert change == TradingStateChange(
        previous=TradingState.ACTIVE,
        current=TradingState.HALTED,
        reason="max_daily_loss",
        ts=T0,
        detail=change.detail,
    )
    assert "3001" in change.detail
    decision = engine.check(intent(Side.BUY, 1), book, T0)
    assert (decision.accepted, decision.reason) == (False, "halted")
    assert "max_daily_loss" in decision.detail


@pytest.mark.parametrize(("equity_drop", "halted"), [(10_000, False), (10_001, True)])
def test_update_when_drawdown_at_or_over_limit_then_active_or_halted(equity_drop, halted):
    engine = only(max_drawdown=0.10)
    change = engine.update(losing_book(equity_drop), T0)
    assert (engine.state is TradingState.HALTED) is halted
    assert (change is not None and change.reason == "max_drawdown") is halted


def test_check_when_halted_then_cancels_and_reducing_orders_pass():
    engine = only(max_daily_loss=1_000)
    book = losing_book(2_000)
    engine.update(book, T0)
    assert engine.check(intent(Side.SELL, 40), book, T0).accepted
    assert engine.check(
        intent(Side.BUY, 1, is_cancel=True, cancel_client_order_id="O1"), book, T0
    ).accepted
    assert engine.check(intent(Side.SELL, 101), book, T0).reason == "halted"  # would go short
    assert engine.check(intent(Side.BUY, 1, symbol="AAA"), book, T0).reason == "halted"


def test_check_when_halted_and_open_sells_then_reducing_counts_them():
    engine = only()
    book = make_book()
    fill(book, "AAA", Side.BUY, 100)
    open_order(book, "AAA", Side.SELL, 80)
    engine.set_state(TradingState.HALTED, "operator", T0)
    assert engine.check(intent(Side.SELL, 20), book, T0).accepted
    assert engine.check(intent(Side.SELL, 21), book, T0).reason == "halted"


def test_update_when_halted_and_loss_recovers_then_stays_halted_until_operator():
    engine = only(max_daily_loss=1_000)
    book = losing_book(2_000)
    engine.update(book, T0)
    mark(book, "AAA", 100.0)
    assert engine.update(book, T0 + timedelta(minutes=1)) is None
    assert engine.state is TradingState.HALTED
    change = engine.set_state(TradingState.ACTIVE, "operator resumed", T0 + timedelta(minutes=2))
    assert change is not None
    assert (change.previous, change.current, change.reason) == (
        TradingState.HALTED,
        TradingState.ACTIVE,
        "operator resumed",
    )
    assert engine.check(intent(Side.BUY, 1), book, T0).accepted


def test_set_state_when_same_state_then_returns_none():
    engine = only()
    assert engine.set_state(TradingState.ACTIVE, "noop", T0) is None
    assert engine.set_state(TradingState.REDUCING, "operator", T0) is not None
    assert engine.set_state(TradingState.REDUCING, "operator", T0) is None
    assert engine.state_reason == "operator"


def test_check_when_reducing_then_only_position_reducing_orders_pass():
    engine = only()
    book = make_book()
    fill(book, "AAA", Side.SELL, 50)
    engine.set_state(TradingState.REDUCING, "operator", T0)
    assert engine.check(intent(Side.BUY, 50), book, T0).accepted
    assert engine.check(intent(Side.BUY, 51), book, T0).reason == "reducing"
    assert engine.check(intent(Side.SELL, 1), book, T0).reason == "reducing"


def test_update_when_loss_passes_reduce_fraction_then_reducing_and_later_halted():
    engine = only(max_daily_loss=2_000, reduce_at_daily_loss_fraction=0.5)
    assert engine.update(losing_book(1_000), T0) is None
    change = engine.update(losing_book(1_001), T0)
    assert change is not None
    assert (change.current, change.reason) == (
        TradingState.REDUCING,
        "reduce_at_daily_loss_fraction",
    )
    change = engine.update(losing_book(2_001), T0)
    assert change is not None
    assert (change.previous, change.current) == (TradingState.REDUCING, TradingState.HALTED)


def test_reconfigure_when_limits_change_then_new_limits_apply_and_state_kept():
    engine = only(max_order_quantity=10)
    engine.set_state(TradingState.REDUCING, "operator", T0)
    engine.reconfigure(RiskConfig(**{**ALL_OFF, "max_order_quantity": 5, "cooldown_bars": 3}))
    assert engine.state is TradingState.REDUCING
    engine.set_state(TradingState.ACTIVE, "operator", T0)
    assert engine.check(intent(quantity=6), make_book(), T0).reason == "max_order_quantity"


# ---- values and config ---------------------------------------------------------------------------------
def test_encode_when_decision_and_state_change_then_round_trip_as_json():
    decision = only(max_order_quantity=1).check(intent(quantity=2), make_book(), T0)
    change = TradingStateChange(
        previous=TradingState.ACTIVE, current=TradingState.HALTED, reason="max_drawdown", ts=T0
    )
    assert msgspec.json.decode(msgspec.json.encode(decision), type=type(decision)) == decision
    assert msgspec.json.decode(msgspec.json.encode(change), type=TradingStateChange) == change
    assert {r.value for r in RiskReason} >= {"halted", "reducing", "cooldown", "price_collar"}


def test_decode_when_paper_sim_yaml_risk_section_then_valid():
    raw = (
        b"max_order_quantity: 1000\nmax_position_notional: 25000\nmax_gross_exposure: 80000\n"
        b"max_daily_loss: 3000\nmax_drawdown: 0.10\ntrading_hours: {start: '09:30', end: '16:00'}\n"
    )
    cfg = msgspec.yaml.decode(raw, type=RiskConfig)
    assert cfg.max_drawdown == 0.10
    assert cfg.trading_hours == NY


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"max_position: 5", "unknown field `max_position`"),
        (b"max_drawdown: 1.5", "$.max_drawdown"),
        (b"max_order_quantity: 0", "$.max_order_quantity"),
        (b"trading_hours: {start: '9:30', end: '16:00'}", "$.trading_hours.start"),
        (b"trading_hours: {start: '09:30', end: '16:00', timezone: Mars/Base}", "Mars/Base"),
        (b"trading_hours: {start: '09:30', end: '09:30'}", "empty"),
        (b"trading_hours: {weekdays: [funday]}", "$.trading_hours.weekdays[0]"),
        (b"{max_daily_loss: null, reduce_at_daily_loss_fraction: 0.5}", "needs max_daily_loss"),
    ],
)
def test_decode_when_bad_risk_config_then_error_names_the_key(raw, message):
    with pytest.raises(msgspec.ValidationError) as info:
        msgspec.yaml.decode(raw, type=RiskConfig)
    assert message in str(info.value)


# ---- property: an accepted order never takes |position| past the cap --------------------------------
_step = st.tuples(
    st.sampled_from([Side.BUY, Side.SELL]),
    st.integers(min_value=1, max_value=300),
    st.sampled_from(["fill", "partial", "cancel", "wait"]),
    st.integers(min_value=0, max_value=50),
    st.sampled_from([None, TradingState.ACTIVE, TradingState.HALTED, TradingState.REDUCING]),
)


@settings(max_examples=150, deadline=None)
@given(st.lists(_step, max_size=40))
def test_check_when_any_order_sequence_then_accepted_orders_never_pass_max_position(steps):
    cap = 250.0
    engine = only(max_position_quantity=cap)
    book = make_book()
    for n, (side, quantity, action, pick, state) in enumerate(steps):
        now = T0 + timedelta(seconds=n)
        if state is not None:
            engine.set_state(state, "test", now)
        if engine.check(intent(side, float(quantity)), book, now).accepted:
            book.add_order(
                Order(
                    client_order_id=f"P{n}",
                    symbol="AAA",
                    side=side,
                    quantity=float(quantity),
                    order_type=OrderType.MARKET,
                    created_ts=now,
                )
            )
        if book.open_orders and action != "wait":
            order = list(book.open_orders.values())[pick % len(book.open_orders)]
            if action == "cancel":
                book.apply_order_event(
                    OrderEvent(
                        client_order_id=order.client_order_id, ts=now, status=OrderStatus.CANCELLED
                    )
                )
            else:
                part = order.remaining if action == "fill" else math.ceil(order.remaining / 2)
                fill(book, "AAA", order.side, part, ts=now, client_order_id=order.client_order_id)
                if book.open_orders[order.client_order_id].remaining <= 0:
                    book.apply_order_event(
                        OrderEvent(
                            client_order_id=order.client_order_id,
                            ts=now,
                            status=OrderStatus.FILLED,
                            filled_quantity=order.quantity,
                        )
                    )
        position = book.position("AAA")
        buys = sum(o.remaining for o in book.open_orders.values() if o.side is Side.BUY)
        sells = sum(o.remaining for o in book.open_orders.values() if o.side is Side.SELL)
        assert abs(position) <= cap
        assert position + buys <= cap
        assert position - sells >= -cap
