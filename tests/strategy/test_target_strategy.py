"""TargetStrategy: signals become a target position per symbol; intents close the gap to it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import msgspec
import pytest

from strategy.book import Book
from strategy.target_strategy import StrategyConfig, TargetStrategy
from strategy.types import Bar, Fill, Order, OrderIntent, OrderType, Side, Signal

T0 = datetime(2024, 1, 2, 14, 30, tzinfo=UTC)


def _ts(bar: int) -> datetime:
    return T0 + timedelta(minutes=bar)


def _signal(bar: int, p_up: float, confidence: float = 0.8, symbol: str = "AAPL") -> Signal:
    return Signal(symbol=symbol, ts=_ts(bar), p_up=p_up, confidence=confidence, scorer="rules")


def _neutral(bar: int, symbol: str = "AAPL") -> Signal:
    return _signal(bar, 0.5, 0.0, symbol)


def _book(price: float = 100.0, *symbols: str) -> Book:
    book = Book(starting_cash=1e6)
    for symbol in symbols or ("AAPL",):
        book.mark(
            Bar(symbol=symbol, ts=T0, open=price, high=price, low=price, close=price, volume=1e3)
        )
    return book


_fills = 0


def _fill(book: Book, intent: OrderIntent, price: float = 100.0) -> None:
    """Fill an intent completely, as the broker would, through the book's front door."""
    global _fills
    _fills += 1
    book.apply_fill(
        Fill(
            fill_id=f"F{_fills}",
            client_order_id=f"C{_fills}",
            symbol=intent.symbol,
            side=intent.side,
            quantity=intent.quantity,
            price=price,
            commission=0.0,
            ts=intent.ts,
        )
    )


def _pend(book: Book, intent: OrderIntent) -> Order:
    """Register an intent as an open order in the book (accepted, not yet filled)."""
    global _fills
    _fills += 1
    order = Order(
        client_order_id=f"P{_fills}",
        symbol=intent.symbol,
        side=intent.side,
        quantity=intent.quantity,
        order_type=intent.order_type,
        created_ts=intent.ts,
    )
    book.add_order(order)
    return order


def test_on_signals_when_p_up_above_threshold_and_flat_then_enter_long_sized_by_notional() -> None:
    strategy = TargetStrategy(config=StrategyConfig(position_notional=10_000))
    [intent] = strategy.on_signals([_signal(0, 0.7, 0.6)], _book(price=33.0))
    assert intent.side is Side.BUY
    assert intent.quantity == 303  # floor(10000 / 33)
    assert intent.reason == "enter_long"
    assert intent.confidence == 0.6
    assert intent.order_type is OrderType.MARKET
    assert intent.ts == _ts(0)
    assert strategy.entry_ts("AAPL") == _ts(0)


def test_on_signals_when_p_up_below_threshold_and_shorts_allowed_then_enter_short() -> None:
    strategy = TargetStrategy(config=StrategyConfig())
    [intent] = strategy.on_signals([_signal(0, 0.3)], _book())
    assert intent.side is Side.SELL
    assert intent.quantity == 100
    assert intent.reason == "enter_short"


def test_on_signals_when_shorts_disallowed_then_bearish_signal_ignored_when_flat() -> None:
    strategy = TargetStrategy(config=StrategyConfig(allow_short=False))
    assert strategy.on_signals([_signal(0, 0.2)], _book()) == []


@pytest.mark.parametrize(
    ("p_up", "confidence"),
    [(0.59, 0.9), (0.41, 0.9), (0.9, 0.29), (0.5, 0.0), (0.1, 0.0)],
)
def test_on_signals_when_signal_weak_then_no_intent(p_up: float, confidence: float) -> None:
    strategy = TargetStrategy(config=StrategyConfig(enter_threshold=0.6, min_confidence=0.3))
    assert strategy.on_signals([_signal(0, p_up, confidence)], _book()) == []


def test_on_signals_when_price_unknown_or_notional_below_price_then_no_intent() -> None:
    strategy = TargetStrategy(config=StrategyConfig(position_notional=50))
    assert strategy.on_signals([_signal(0, 0.9, symbol="NEW")], _book()) == []
    assert strategy.on_signals([_signal(0, 0.9)], _book(price=100.0)) == []


def test_on_signals_when_quantity_exceeds_max_quantity_then_capped() -> None:
    strategy = TargetStrategy(config=StrategyConfig(position_notional=1e6, max_quantity=250))
    [intent] = strategy.on_signals([_signal(0, 0.9)], _book(price=10.0))
    assert intent.quantity == 250


def test_on_signals_when_quantity_rounds_to_zero_then_no_intent_and_sizing_miss_recorded() -> None:
    strategy = TargetStrategy(config=StrategyConfig(position_notional=10_000))
    assert strategy.on_signals([_signal(0, 0.9)], _book(price=60_000.0)) == []
    assert strategy.sizing_misses == 1
    miss = strategy.last_sizing_miss
    assert miss is not None
    assert (miss.symbol, miss.price, miss.notional, miss.step) == ("AAPL", 60_000.0, 10_000, 1.0)


def test_on_signals_when_fractional_step_then_a_60000_instrument_trades_with_10000() -> None:
    config = StrategyConfig(position_notional=10_000, quantity_step=1e-8)
    [intent] = TargetStrategy(config=config).on_signals([_signal(0, 0.9)], _book(price=60_000.0))
    assert intent.quantity == pytest.approx(0.16666666, abs=1e-12)  # floor to 1e-8 units
    assert intent.quantity * 60_000.0 <= 10_000.0


def test_on_signals_when_symbol_has_its_own_step_then_it_overrides_the_global_step() -> None:
    config = StrategyConfig(quantity_step=1.0, quantity_steps={"BTC": 0.001})
    book = _book(60_000.0, "BTC", "AAPL")
    intents = TargetStrategy(config=config).on_signals(
        [_signal(0, 0.9, symbol="BTC"), _signal(0, 0.9, symbol="AAPL")], book
    )
    assert [(i.symbol, i.quantity) for i in intents] == [("BTC", 0.166)]


def test_on_signals_when_position_fraction_then_sized_from_current_equity() -> None:
    config = StrategyConfig(position_fraction=0.1)
    [rich] = TargetStrategy(config=config).on_signals([_signal(0, 0.9)], _book(price=100.0))
    poorer = _book(price=100.0)
    poorer.cash = 500_000.0  # equity halves
    [poor] = TargetStrategy(config=config).on_signals([_signal(0, 0.9)], poorer)
    assert (rich.quantity, poor.quantity) == (1_000, 500)  # 0.1 x equity / 100


def test_on_signals_when_pending_order_covers_target_then_no_new_intent() -> None:
    strategy = TargetStrategy(config=StrategyConfig())
    book = _book()
    [intent] = strategy.on_signals([_signal(0, 0.8)], book)
    _pend(book, intent)
    assert strategy.on_signals([_signal(1, 0.8)], book) == []
    assert strategy.on_signals([_signal(2, 0.9)], book) == []


def test_on_signals_when_position_partly_filled_then_pending_remainder_counts() -> None:
    strategy = TargetStrategy(config=StrategyConfig())
    book = _book()
    [intent] = strategy.on_signals([_signal(0, 0.8)], book)
    order = _pend(book, intent)
    book.apply_fill(
        Fill(
            fill_id="half",
            client_order_id=order.client_order_id,
            symbol="AAPL",
            side=Side.BUY,
            quantity=40,
            price=100.0,
            commission=0.0,
            ts=_ts(1),
        )
    )
    assert book.position("AAPL") == 40
    assert strategy.on_signals([_signal(1, 0.8)], book) == []


def test_on_signals_when_long_held_for_hold_bars_then_exit_hold_for_whole_position() -> None:
    strategy = TargetStrategy(config=StrategyConfig(hold_bars=5, bar_seconds=60))
    book = _book()
    [entry] = strategy.on_signals([_signal(0, 0.8)], book)
    _fill(book, entry)
    for bar in range(1, 5):
        assert strategy.on_signals([_neutral(bar)], book) == []
    [exit_] = strategy.on_signals([_neutral(5)], book)
    assert exit_.side is Side.SELL
    assert exit_.quantity == 100
    assert exit_.reason == "exit_hold"
    assert exit_.confidence == 1.0


def test_on_signals_when_exit_pending_then_no_duplicate_exit() -> None:
    strategy = TargetStrategy(config=StrategyConfig(hold_bars=2))
    book = _book()
    [entry] = strategy.on_signals([_signal(0, 0.8)], book)
    _fill(book, entry)
    [exit_] = strategy.on_signals([_neutral(2)], book)
    _pend(book, exit_)
    assert strategy.on_signals([_neutral(3)], book) == []
    assert strategy.on_signals([_neutral(4)], book) == []


def test_on_signals_when_exit_refused_then_retried_next_bar() -> None:
    strategy = TargetStrategy(config=StrategyConfig(hold_bars=2))
    book = _book()
    [entry] = strategy.on_signals([_signal(0, 0.8)], book)
    _fill(book, entry)
    [first] = strategy.on_signals([_neutral(2)], book)
    [again] = strategy.on_signals([_neutral(3)], book)  # risk refused the first: nothing pending
    assert first.reason == again.reason == "exit_hold"


def test_on_signals_when_confirming_signal_then_hold_restarts() -> None:
    strategy = TargetStrategy(config=StrategyConfig(hold_bars=3))
    book = _book()
    [entry] = strategy.on_signals([_signal(0, 0.8)], book)
    _fill(book, entry)
    assert strategy.on_signals([_signal(2, 0.8)], book) == []
    assert strategy.entry_ts("AAPL") == _ts(2)
    assert strategy.on_signals([_neutral(3)], book) == []
    assert strategy.on_signals([_neutral(4)], book) == []
    [exit_] = strategy.on_signals([_neutral(5)], book)
    assert exit_.reason == "exit_hold"


def test_on_signals_when_long_and_strong_bearish_signal_then_reverse_to_short() -> None:
    strategy = TargetStrategy(config=StrategyConfig())
    book = _book()
    [entry] = strategy.on_signals([_signal(0, 0.8)], book)
    _fill(book, entry)
    [reverse] = strategy.on_signals([_signal(1, 0.2, 0.7)], book)
    assert reverse.side is Side.SELL
    assert reverse.quantity == 200
    assert reverse.reason == "reverse"
    assert reverse.confidence == 0.7
    _fill(book, reverse)
    assert book.position("AAPL") == -100
    assert strategy.entry_ts("AAPL") == _ts(1)


def test_on_signals_when_long_and_bearish_but_shorts_disallowed_then_exit_opposite() -> None:
    strategy = TargetStrategy(config=StrategyConfig(allow_short=False))
    book = _book()
    [entry] = strategy.on_signals([_signal(0, 0.8)], book)
    _fill(book, entry)
    [exit_] = strategy.on_signals([_signal(1, 0.2)], book)
    assert exit_.side is Side.SELL
    assert exit_.quantity == 100
    assert exit_.reason == "exit_opposite"


def test_on_signals_when_short_and_mild_bullish_signal_then_exit_opposite_to_flat() -> None:
    strategy = TargetStrategy(config=StrategyConfig(enter_threshold=0.7))
    book = _book()
    [entry] = strategy.on_signals([_signal(0, 0.2)], book)
    _fill(book, entry)
    [exit_] = strategy.on_signals([_signal(1, 0.6, 0.5)], book)  # confident, not past 0.7
    assert exit_.side is Side.BUY
    assert exit_.quantity == 100
    assert exit_.reason == "exit_opposite"


def test_on_signals_when_exit_on_opposite_disabled_then_position_kept_until_hold() -> None:
    strategy = TargetStrategy(config=StrategyConfig(exit_on_opposite=False, hold_bars=3))
    book = _book()
    [entry] = strategy.on_signals([_signal(0, 0.8)], book)
    _fill(book, entry)
    assert strategy.on_signals([_signal(1, 0.1, 0.9)], book) == []
    [exit_] = strategy.on_signals([_neutral(3)], book)
    assert exit_.reason == "exit_hold"


def test_on_signals_when_position_restored_without_entry_then_hold_clock_starts_now() -> None:
    book = _book()
    book.apply_fill(
        Fill(
            fill_id="old",
            client_order_id="old",
            symbol="AAPL",
            side=Side.SELL,
            quantity=30,
            price=100.0,
            commission=0.0,
            ts=_ts(-100),
        )
    )
    strategy = TargetStrategy(config=StrategyConfig(hold_bars=2))
    assert strategy.on_signals([_neutral(10)], book) == []
    assert strategy.entry_ts("AAPL") == _ts(10)
    [exit_] = strategy.on_signals([_neutral(12)], book)
    assert exit_.side is Side.BUY
    assert exit_.quantity == 30
    assert exit_.reason == "exit_hold"


def test_reconfigure_when_shorts_disallowed_while_short_then_exit_and_hold_clock_kept() -> None:
    strategy = TargetStrategy(config=StrategyConfig(hold_bars=10))
    book = _book()
    [entry] = strategy.on_signals([_signal(0, 0.2)], book)
    _fill(book, entry)
    strategy.reconfigure(StrategyConfig(hold_bars=10, allow_short=False))
    assert strategy.entry_ts("AAPL") == _ts(0)
    [exit_] = strategy.on_signals([_neutral(1)], book)
    assert exit_.side is Side.BUY
    assert exit_.reason == "exit_short_disabled"


def test_on_signals_when_limit_orders_then_priced_offset_from_last() -> None:
    strategy = TargetStrategy(config=StrategyConfig(order_type="limit", limit_offset_bps=10))
    [buy] = strategy.on_signals([_signal(0, 0.8)], _book(price=50.0))
    [sell] = TargetStrategy(config=strategy.config).on_signals([_signal(0, 0.2)], _book(price=50.0))
    assert buy.order_type is OrderType.LIMIT
    assert buy.limit_price == 50.05
    assert sell.limit_price == 49.95


def test_on_signals_when_several_symbols_then_one_intent_each_and_last_signal_wins() -> None:
    strategy = TargetStrategy(config=StrategyConfig())
    book = _book(100.0, "A", "B", "C")
    intents = strategy.on_signals(
        [
            _signal(0, 0.9, symbol="A"),
            _signal(0, 0.1, symbol="B"),
            _signal(0, 0.5, 0.0, "C"),
            _signal(0, 0.1, symbol="A"),
        ],
        book,
    )
    assert {(i.symbol, i.side) for i in intents} == {("A", Side.SELL), ("B", Side.SELL)}


def test_on_signals_when_hold_bars_zero_then_never_exits_on_time() -> None:
    strategy = TargetStrategy(config=StrategyConfig(hold_bars=0))
    book = _book()
    [entry] = strategy.on_signals([_signal(0, 0.8)], book)
    _fill(book, entry)
    assert strategy.on_signals([_neutral(1000)], book) == []


@pytest.mark.parametrize(
    ("raw", "match"),
    [
        ({"enter_threshold": 0.5}, r"\$\.enter_threshold"),
        ({"min_confidence": 1.5}, r"\$\.min_confidence"),
        ({"position_notional": 0}, r"\$\.position_notional"),
        ({"order_type": "stop"}, r"\$\.order_type"),
        ({"hold_bars": -1}, r"\$\.hold_bars"),
        ({"hold": 3}, "hold"),
    ],
)
def test_config_when_value_invalid_then_validation_error_names_it(
    raw: dict[str, object], match: str
) -> None:
    with pytest.raises(msgspec.ValidationError, match=match):
        msgspec.convert(raw, StrategyConfig)


def test_on_signals_when_flat_after_a_refused_entry_and_signal_unconfident_then_entry_forgotten() -> (
    None
):
    """The flat, nothing-pending, unconfident short cut does what _decide does: no intent, and
    the hold clock of an entry that never became a position is dropped."""
    strategy = TargetStrategy(config=StrategyConfig())
    book = _book(100.0, "AAPL", "MSFT")
    assert strategy.on_signals([_signal(1, 0.9)], book)  # an entry, refused by risk: never pending
    assert strategy.entry_ts("AAPL") == _ts(1)

    assert strategy.on_signals([_neutral(2), _signal(2, 0.9, 0.1, "MSFT")], book) == []
    assert strategy.entry_ts("AAPL") is None
    assert strategy.entry_ts("MSFT") is None
