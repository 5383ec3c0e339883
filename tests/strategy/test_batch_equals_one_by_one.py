"""The batch APIs (BarStore.add_batch/windows, Book.mark_batch, SimBroker.on_bars) leave the same
state and return the same values as the one-bar calls made bar by bar, on streams with every kind
of bad bar, a symbol twice in one batch, a shared bar time, day changes and open positions.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from strategy.bars import BarStore, BarStoreConfig
from strategy.book import Book
from strategy.sim_broker import SimBroker, SimBrokerConfig
from strategy.types import Bar, Order, OrderType, Side
from tests.strategy.test_risk import fill

T0 = datetime(2024, 3, 1, 23, 50, tzinfo=UTC)  # batches cross midnight: the day rolls
STEP = 60
SYMBOLS = ("AAA", "BBB", "CCC")
FAULTS = (
    "ok",
    "ok",
    "ok",
    "ok",
    "nan",
    "inf_volume",
    "high_below_low",
    "misaligned",
    "future",
    "jump",
    "repeat",  # the symbol's previous bar again (duplicate_ts)
    "back",  # a bar before the symbol's last (out_of_order)
    "gap",  # 9 bars missing (over max_gap_bars)
)


def _bar(symbol: str, step: int, price: float, fault: str, stamps: dict[int, datetime]) -> Bar:
    ts = stamps.setdefault(step, T0 + timedelta(seconds=STEP * step))  # one object per time
    o, h, low, c, v = price, price + 1.0, price - 1.0, price + 0.5, 1000.0
    if fault == "nan":
        c = math.nan
    elif fault == "inf_volume":
        v = math.inf
    elif fault == "high_below_low":
        h = low - 0.5
    elif fault == "misaligned":
        ts = ts + timedelta(seconds=7)
    elif fault == "future":
        ts = T0 + timedelta(days=3)
    elif fault == "jump":
        o, h, low, c = price * 50, price * 51, price * 49, price * 50
    return Bar(symbol=symbol, ts=ts, open=o, high=h, low=low, close=c, volume=v)


@st.composite
def streams(draw: st.DrawFn) -> tuple[list[list[Bar]], BarStoreConfig]:
    """Batches of bars with faults mixed in; each batch shares one ts object, as a feed's does."""
    stamps: dict[int, datetime] = {}
    step = {s: 0 for s in SYMBOLS}
    batches: list[list[Bar]] = []
    clock = 0
    for _ in range(draw(st.integers(1, 40))):
        clock += 1
        batch = []
        for symbol in draw(st.lists(st.sampled_from(SYMBOLS), min_size=1, max_size=5)):
            fault = draw(st.sampled_from(FAULTS))
            at = step[symbol] + 1
            if fault == "repeat":
                at = step[symbol]
            elif fault == "back":
                at = step[symbol] - 2
            elif fault == "gap":
                at = step[symbol] + 10
            at = max(at, clock) if fault not in {"repeat", "back"} else at
            price = 100.0 + draw(st.integers(-3, 3))
            batch.append(_bar(symbol, at, price, fault, stamps))
            step[symbol] = max(step[symbol], at)
            clock = max(clock, at)
        batches.append(batch)
    config = BarStoreConfig(
        window=8,
        bar_seconds=STEP,
        gap_policy=draw(st.sampled_from(["reset", "reject", "accept"])),
        max_gap_bars=5,
        max_future_seconds=600.0,
    )
    return batches, config


def _state(store: BarStore) -> list[object]:
    out: list[object] = [store.pop_resets()]
    for symbol in SYMBOLS:
        w = store.window(symbol)
        arrays = None if w is None else [a.tolist() for a in (w.timestamps, w.close, w.volume)]
        out.append((store.count(symbol), store.last_ts(symbol), arrays))
    return out


@settings(max_examples=200, deadline=None)
@given(case=streams())
def test_add_batch_when_bad_bars_mixed_in_then_equals_adding_bar_by_bar(
    case: tuple[list[list[Bar]], BarStoreConfig],
) -> None:
    batches, config = case
    now = T0 + timedelta(hours=2)  # a live clock: the "future" bars are refused
    one, many = BarStore(config=config), BarStore(config=config)
    for batch in batches:
        singles = [(bar, one.add(bar, now=now)) for bar in batch]
        added = many.add_batch(batch, now=now)
        assert added.accepted == [bar for bar, problem in singles if problem is None]
        assert added.rejected == [problem for _, problem in singles if problem is not None]
        assert _state(many) == _state(one)
        expected = [one.window(s) for s in SYMBOLS]
        got = many.windows(SYMBOLS)
        assert [None if w is None else w.close.tolist() for w in got] == [
            None if w is None else w.close.tolist() for w in expected
        ]


def test_add_batch_when_stream_has_each_fault_then_each_reason_is_reported() -> None:
    """The generator above reaches every rejection the batch loop has a branch for."""
    stamps: dict[int, datetime] = {}
    store = BarStore(config=BarStoreConfig(window=8, bar_seconds=STEP, gap_policy="reject"))
    good = [_bar("AAA", i, 100.0, "ok", stamps) for i in range(1, 9)]
    bad = [
        _bar("AAA", 9, 100.0, fault, stamps)
        for fault in ("nan", "inf_volume", "high_below_low", "misaligned", "jump")
    ]
    added = store.add_batch(
        [
            *good,
            *bad,
            _bar("AAA", 8, 100.0, "ok", stamps),
            _bar("AAA", 5, 100.0, "ok", stamps),
            _bar("AAA", 20, 100.0, "ok", stamps),
        ]
    )
    assert added.accepted == good
    assert [r.reason for r in added.rejected] == [
        "non_finite",
        "non_finite",
        "high_below_low",
        "misaligned_ts",
        "price_jump",
        "duplicate_ts",
        "out_of_order",
        "gap",
    ]


def _book_state(book: Book) -> tuple[object, ...]:
    return (
        book.cash,
        book.peak_equity,
        book.day,
        book.day_start_equity,
        book.equity(),
        book.gross_exposure(),
        dict(book.last_prices),
    )


@settings(max_examples=200, deadline=None)
@given(
    moves=st.lists(
        st.lists(st.tuples(st.sampled_from(SYMBOLS), st.floats(50.0, 150.0)), max_size=6),
        min_size=1,
        max_size=30,
    ),
    restored=st.floats(50.0, 150.0),
)
def test_mark_batch_when_positions_held_and_day_rolls_then_equals_marking_bar_by_bar(
    moves: list[list[tuple[str, float]]], restored: float
) -> None:
    one, many = Book(starting_cash=10_000.0), Book(starting_cash=10_000.0)
    for book in (one, many):
        fill(book, "AAA", Side.BUY, 30.0, 100.0)
        fill(book, "BBB", Side.SELL, 20.0, 100.0)
        book.set_price("AAA", restored)  # moves equity without a peak check: the batch must look
    for k, batch_moves in enumerate(moves):
        ts = T0 + timedelta(minutes=5 * k)  # from 23:50: the date changes within the run
        batch = [
            Bar(symbol=s, ts=ts, open=p, high=p + 1, low=p - 1, close=p, volume=10.0)
            for s, p in batch_moves
        ]
        for bar in batch:
            one.mark(bar)
        many.mark_batch(batch)
        assert _book_state(many) == _book_state(one)


def _order(n: int, symbol: str, side: Side) -> Order:
    return Order(
        client_order_id=f"O{n}",
        symbol=symbol,
        side=side,
        quantity=50.0,
        order_type=OrderType.MARKET,
        created_ts=T0,
    )


@settings(max_examples=200, deadline=None)
@given(case=streams(), orders=st.lists(st.sampled_from(SYMBOLS), max_size=6))
def test_on_bars_when_bad_and_stale_bars_mixed_in_then_equals_on_bar_one_by_one(
    case: tuple[list[list[Bar]], BarStoreConfig], orders: list[str]
) -> None:
    batches, _ = case
    config = SimBrokerConfig(price_collar=0.5)
    one, many = SimBroker(config=config), SimBroker(config=config)
    for n, symbol in enumerate(orders):
        for broker in (one, many):
            broker.submit(_order(n, symbol, Side.BUY if n % 2 else Side.SELL), T0)
    for batch in batches:
        events, fills = [], []
        latest: datetime | None = None
        for bar in batch:
            bar_events, bar_fills = one.on_bar(bar)
            events += bar_events
            fills += bar_fills
            tape = one.tape(bar.symbol)
            if tape is not None and (latest is None or tape.bar.ts > latest):
                latest = tape.bar.ts
        matched = many.on_bars(batch)
        assert (matched.events, matched.fills, matched.latest) == (events, fills, latest)
        assert many.snapshot() == one.snapshot()
