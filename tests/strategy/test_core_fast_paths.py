"""The written-out fast paths of the per-batch core give what the general code they replace gives:
TargetStrategy.on_signals' held-and-confirmed path (no _decide call), Book.mark_batch's inlined
revalue and day check, and SimBroker.on_bars' inlined collar test, each against the code as it
was before (kept here as the reference), on random streams, compared value by value.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta, timezone

from hypothesis import given, settings
from hypothesis import strategies as st

from strategy.bars import BarStore, BarStoreConfig
from strategy.book import Book
from strategy.native import pure_module
from strategy.sim_broker import _INF, BarsMatched, SimBroker, SimBrokerConfig
from strategy.target_strategy import StrategyConfig, TargetStrategy
from strategy.types import Bar, Fill, Order, OrderEvent, OrderIntent, OrderType, Side, Signal

T0 = datetime(2024, 3, 1, 23, 40, tzinfo=UTC)  # streams cross midnight: the day rolls
SYMBOLS = ("AAA", "BBB", "CCC")


# ---- the references: the code before the fast paths ------------------------------------------
def reference_on_signals(
    strategy: TargetStrategy, signals: Sequence[Signal], book: Book
) -> list[OrderIntent]:
    """TargetStrategy.on_signals before the held-and-confirmed path: _decide for every signal."""
    latest: dict[str, Signal] = {}
    for signal in signals:
        latest[signal.symbol] = signal
    prices, positions = book.last_prices, book.positions
    pending = book.open_totals().signed
    min_confidence, entries = strategy.config.min_confidence, strategy._entries
    intents: list[OrderIntent] = []
    for symbol, signal in latest.items():
        price = prices.get(symbol)
        if price is None or not math.isfinite(price) or price <= 0:
            continue
        pos = positions.get(symbol)
        if pos is None and symbol not in pending and not signal.confidence >= min_confidence:
            entries.pop(symbol, None)
            continue
        current = (pos.quantity if pos is not None else 0.0) + sum(pending.get(symbol, ()))
        intent = strategy._decide(signal, book, price, current)
        if intent is not None:
            intents.append(intent)
    return intents


def reference_mark_batch(book: Book, bars: Sequence[Bar]) -> None:
    """Book.mark_batch before the revalue was written out: _revalue and roll_day calls."""
    if book._totals is not None:
        book._totals.exposure = None
    prices, values = book.last_prices, book._values
    seen: datetime | None = None
    check = False
    for bar in bars:
        prices[bar.symbol] = bar.close
        if bar.symbol in values:
            book._revalue(bar.symbol)
            check = True
        if bar.ts is not seen:
            seen = bar.ts
            book.roll_day(bar.ts)
            check = True
        if check:
            equity = book.cash + book._net_value
            if equity > book.peak_equity:
                book.peak_equity = equity
            check = False


class ReferenceBroker(pure_module("strategy.sim_broker").SimBroker):  # type: ignore[misc]
    """SimBroker.on_bars before the collar test was written out: _outside_collar on every bar.

    It subclasses the Python source of SimBroker (the compiled class takes no Python subclass).
    """

    def on_bars(self, bars: Sequence[Bar]) -> BarsMatched:  # type: ignore[override]
        events, fills = self.flush()
        tapes, working = self._tape_bars, self._open
        collar = self.config.price_collar
        latest: datetime | None = None
        for bar in bars:
            symbol = bar.symbol
            previous = tapes.get(symbol)
            o, h, low, c, v = bar.open, bar.high, bar.low, bar.close, bar.volume
            if 0.0 < low <= o <= h < _INF and low <= c <= h and 0.0 <= v < _INF:
                if previous is None:
                    take = True
                elif bar.ts <= previous.ts:
                    take = False
                else:
                    take = not collar or not self._outside_collar(bar, previous.close, collar)
            else:
                take = False
            if take:
                tapes[symbol] = bar
                if working.get(symbol):
                    more_events, more_fills = self._match(bar, list(working[symbol]), at_open=True)
                    events.extend(more_events)
                    fills.extend(more_fills)
                ts = bar.ts
            elif previous is None:
                continue
            else:
                ts = previous.ts
            if latest is None or ts > latest:
                latest = ts
        return BarsMatched(events, fills, latest)


# ---- the strategy ----------------------------------------------------------------------------
P_UPS = (0.0, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 1.0, math.nan)
CONFIDENCES = (0.0, 0.2, 0.4, 0.9, math.nan)


@st.composite
def strategy_configs(draw: st.DrawFn) -> StrategyConfig:
    return StrategyConfig(
        enter_threshold=draw(st.sampled_from((0.6, 0.7))),
        min_confidence=draw(st.sampled_from((0.0, 0.3))),
        allow_short=draw(st.booleans()),
        hold_bars=draw(st.sampled_from((0, 2))),
        exit_on_opposite=draw(st.booleans()),
        position_notional=draw(st.sampled_from((10_000.0, 50.0))),  # 50: some sizing misses
        order_type=draw(st.sampled_from(("market", "limit"))),
    )


@st.composite
def signal_streams(draw: st.DrawFn) -> list[tuple[list[Signal], list[str]]]:
    """Batches of signals (a symbol may appear twice), each with what happens to its intents:
    fill, pend (an open order) or drop (refused)."""
    out = []
    for step in range(draw(st.integers(1, 30))):
        ts = T0 + timedelta(minutes=step)
        signals = [
            Signal(
                symbol=draw(st.sampled_from(SYMBOLS)),
                ts=ts,
                p_up=draw(st.sampled_from(P_UPS)),
                confidence=draw(st.sampled_from(CONFIDENCES)),
                scorer="test",
            )
            for _ in range(draw(st.integers(0, 4)))
        ]
        fates = draw(st.lists(st.sampled_from(("fill", "fill", "pend", "drop")), min_size=8))
        out.append((signals, fates))
    return out


def _book(held: Sequence[float]) -> Book:
    """A book with these positions in SYMBOLS (restored ones: the strategy has no entry for them)."""
    book = Book(starting_cash=1e6)
    book.mark_batch(
        [
            Bar(symbol=s, ts=T0, open=100.0, high=101.0, low=99.0, close=100.0, volume=1e3)
            for s in SYMBOLS
        ]
    )
    for symbol, quantity in zip(SYMBOLS, held, strict=True):
        if quantity:
            book.apply_fill(
                Fill(fill_id=f"R-{symbol}", client_order_id=f"R-{symbol}", symbol=symbol,
                     side=Side.BUY if quantity > 0 else Side.SELL, quantity=abs(quantity),
                     price=100.0, commission=0.0, ts=T0)
            )  # fmt: skip
    return book


def _carry_out(book: Book, intents: Sequence[OrderIntent], fates: Sequence[str], n: int) -> None:
    """What the venue does with the intents: fill them, leave them open, or nothing."""
    for k, (intent, fate) in enumerate(zip(intents, fates, strict=False)):
        coid = f"O{n}-{k}"
        if fate == "fill":
            book.apply_fill(
                Fill(fill_id=coid, client_order_id=coid, symbol=intent.symbol, side=intent.side,
                     quantity=intent.quantity, price=100.0, commission=1.0, ts=intent.ts)
            )  # fmt: skip
        elif fate == "pend":
            book.add_order(
                Order(client_order_id=coid, symbol=intent.symbol, side=intent.side,
                      quantity=intent.quantity, order_type=OrderType.MARKET, created_ts=intent.ts)
            )  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(
    config=strategy_configs(),
    held=st.lists(st.sampled_from((0.0, 0.0, 100.0, -100.0)), min_size=3, max_size=3),
    prices=st.lists(
        st.sampled_from((100.0, 100.0, 100.0, math.nan, math.inf, -math.inf, 0.0, -1.0)),
        min_size=3,
        max_size=3,
    ),
    stream=signal_streams(),
)
def test_on_signals_when_random_signals_and_fills_then_same_intents_and_entries_as_decide_for_each(
    config: StrategyConfig,
    held: list[float],
    prices: list[float],
    stream: list[tuple[list[Signal], list[str]]],
) -> None:
    fast, slow = TargetStrategy(config=config), TargetStrategy(config=config)
    fast_book, slow_book = _book(held), _book(held)
    for book in (fast_book, slow_book):  # some symbols without a usable price
        book.last_prices.update(zip(SYMBOLS, prices, strict=True))
    for n, (signals, fates) in enumerate(stream):
        got = fast.on_signals(signals, fast_book)
        want = reference_on_signals(slow, signals, slow_book)
        assert got == want
        assert {s: (e.direction, e.ts) for s, e in fast._entries.items()} == {
            s: (e.direction, e.ts) for s, e in slow._entries.items()
        }
        assert fast.sizing_misses == slow.sizing_misses
        _carry_out(fast_book, got, fates, n)
        _carry_out(slow_book, want, fates, n)


# ---- the book's marks -------------------------------------------------------------------------
@st.composite
def mark_streams(draw: st.DrawFn) -> list[tuple[list[Bar], list[tuple[str, float]]]]:
    """Batches of bars crossing midnight (one ts object per batch, a symbol maybe twice), each
    followed by fills (symbol, signed quantity) that open, grow, flatten and reverse positions."""
    out = []
    for step in range(draw(st.integers(1, 40))):
        ts = T0 + timedelta(minutes=draw(st.sampled_from((step, step * 7))))
        bars = []
        for symbol in draw(st.lists(st.sampled_from(SYMBOLS), max_size=5)):
            c = draw(st.floats(1.0, 500.0, allow_nan=False))
            bars.append(Bar(symbol=symbol, ts=ts, open=c, high=c, low=c, close=c, volume=1e3))
        fills = draw(
            st.lists(
                st.tuples(st.sampled_from(SYMBOLS), st.sampled_from((-7.0, -3.0, 3.0, 7.0, 0.5))),
                max_size=3,
            )
        )
        out.append((bars, fills))
    return out


def _state(book: Book) -> tuple[object, ...]:
    return (
        book._values,
        book._net_value,
        book._gross_value,
        book.peak_equity,
        book.day,
        book.day_start_equity,
        book.last_prices,
        book.cash,
    )


@settings(max_examples=300, deadline=None)
@given(stream=mark_streams())
def test_mark_batch_when_positions_move_and_day_rolls_then_same_floats_as_revalue_calls(
    stream: list[tuple[list[Bar], list[tuple[str, float]]]],
) -> None:
    fast, slow = Book(starting_cash=1e5), Book(starting_cash=1e5)
    for n, (bars, fills) in enumerate(stream):
        fast.mark_batch(bars)
        reference_mark_batch(slow, bars)
        assert repr(_state(fast)) == repr(_state(slow))  # repr: NaN-safe, exact floats
        for k, (symbol, quantity) in enumerate(fills):
            ts = bars[0].ts if bars else T0
            for book in (fast, slow):
                book.apply_fill(
                    Fill(fill_id=f"F{n}-{k}", client_order_id="X", symbol=symbol,
                         side=Side.BUY if quantity > 0 else Side.SELL, quantity=abs(quantity),
                         price=100.0, commission=1.0, ts=ts)
                )  # fmt: skip
        assert repr(_state(fast)) == repr(_state(slow))


# ---- the venue's collar --------------------------------------------------------------------------
@st.composite
def venue_streams(draw: st.DrawFn) -> list[tuple[list[Bar], int]]:
    """Batches of bars whose levels jump (a bad print, a confirmed move, back), stale and bad bars
    mixed in, each followed by a number of market orders to submit."""
    out = []
    level = dict.fromkeys(SYMBOLS, 100.0)
    for step in range(1, draw(st.integers(1, 40))):
        ts = T0 + timedelta(minutes=step)
        bars = []
        for symbol in draw(st.lists(st.sampled_from(SYMBOLS), max_size=4)):
            move = draw(st.sampled_from((1.0, 1.0, 1.01, 0.99, 2.5, 0.3, 1.6)))
            c = level[symbol] * move
            if draw(st.booleans()):
                level[symbol] = c
            at = ts - timedelta(minutes=draw(st.sampled_from((0, 0, 0, 2))))
            low = c * 0.999 if draw(st.integers(0, 9)) else math.nan
            bars.append(Bar(symbol=symbol, ts=at, open=c, high=c * 1.001, low=low, close=c,
                            volume=draw(st.sampled_from((0.0, 500.0, 1e4)))))  # fmt: skip
        out.append((bars, draw(st.integers(0, 2))))
    return out


@settings(max_examples=300, deadline=None)
@given(
    collar=st.sampled_from((0.0, 0.5, 0.05)),
    stream=venue_streams(),
)
def test_on_bars_when_levels_jump_and_confirm_then_same_events_fills_and_tapes_as_collar_calls(
    collar: float, stream: list[tuple[list[Bar], int]]
) -> None:
    config = SimBrokerConfig(price_collar=collar)
    fast, slow = SimBroker(config=config), ReferenceBroker(config=config)
    n = 0
    for step, (bars, orders) in enumerate(stream, start=1):
        got, want = fast.on_bars(bars), slow.on_bars(bars)
        assert got == want
        assert fast.state() == slow.state()
        assert fast._collared == slow._collared
        for k in range(orders):
            n += 1
            order = Order(client_order_id=f"O{n}", symbol=SYMBOLS[k], side=Side.BUY if n % 2 else
                          Side.SELL, quantity=40.0, order_type=OrderType.MARKET,
                          created_ts=T0 + timedelta(minutes=step))  # fmt: skip
            sent: list[OrderEvent] = fast.submit(order, order.created_ts)
            assert sent == slow.submit(order, order.created_ts)


# ---- the store's epoch ------------------------------------------------------------------------
@settings(max_examples=200, deadline=None)
@given(
    minutes=st.lists(st.integers(-3, 10**6), min_size=1, max_size=20),
    offset=st.sampled_from((0, 7)),
)
def test_epoch_when_bar_times_added_then_int_timestamp_of_any_time(
    minutes: list[int], offset: int
) -> None:
    store = BarStore(config=BarStoreConfig())
    for m in minutes:
        ts = T0 + timedelta(minutes=m, seconds=offset)  # offset 7: misaligned, refused
        store.add_batch([Bar(symbol="AAA", ts=ts, open=1.0, high=1.0, low=1.0, close=1.0,
                             volume=1.0)])  # fmt: skip
        assert store.epoch(ts) == int(ts.timestamp())
        other = ts + timedelta(seconds=1)
        assert store.epoch(other) == int(other.timestamp())


# ---- the store's full windows ------------------------------------------------------------------
@settings(max_examples=200, deadline=None)
@given(
    steps=st.lists(
        st.tuples(
            st.sampled_from((1,) * 12 + (2, 9, 0)),  # minutes on: 9 resets the window, 0 repeats
            st.sampled_from((SYMBOLS, SYMBOLS, SYMBOLS[:2], SYMBOLS[1:], ())),
            st.sampled_from((1.0,) * 12 + (math.nan, 50.0)),  # bad and jumping bars refused
        ),
        min_size=5,
        max_size=40,
    )
)
def test_full_windows_when_bars_gap_repeat_and_reset_then_windows_without_the_nones(
    steps: list[tuple[int, tuple[str, ...], float]],
) -> None:
    store = BarStore(config=BarStoreConfig(window=8))
    ts = T0
    asked = [*SYMBOLS, "ZZZ", *SYMBOLS[:1]]  # an unknown symbol, and one asked twice
    for minutes, symbols, move in steps:
        ts += timedelta(minutes=minutes)
        store.add_batch([Bar(symbol=s, ts=ts, open=100.0 * move, high=100.0 * move,
                             low=100.0 * move, close=100.0 * move, volume=1.0)
                         for s in symbols])  # fmt: skip
        got = store.full_windows(asked)
        want = [w for w in store.windows(asked) if w is not None]
        assert [w.symbol for w in got] == [w.symbol for w in want]
        for a, b in zip(got, want, strict=True):
            assert a.bar_seconds == b.bar_seconds
            for column in ("timestamps", "open", "high", "low", "close", "volume"):
                assert getattr(a, column).tolist() == getattr(b, column).tolist()


# ---- the store's epoch counted from the last whole UTC second --------------------------------------
ZONES = (UTC, UTC, UTC, timezone(timedelta(hours=2)), timezone(timedelta(0), "Z"))
BASES = (T0, datetime(1969, 12, 31, 23, 0, tzinfo=UTC), datetime(2099, 12, 31, 23, 50, tzinfo=UTC))


@settings(max_examples=300, deadline=None)
@given(
    base=st.sampled_from(BASES),
    times=st.lists(
        st.tuples(
            st.integers(-3_000, 3_000),  # minutes from the base, either way
            st.sampled_from((0, 0, 0, 7)),  # seconds: 7 is misaligned
            st.sampled_from((0, 0, 0, 500_000)),  # microseconds
            st.sampled_from(ZONES),  # UTC, or the same instant in another tzinfo
        ),
        min_size=1,
        max_size=30,
    ),
)
def test_add_batch_when_times_fractional_early_late_or_zoned_then_epochs_are_int_timestamps(
    base: datetime, times: list[tuple[int, int, int, timezone]]
) -> None:
    store = BarStore(config=BarStoreConfig(window=8))
    stored: list[int] = []
    for minutes, seconds, micros, zone in times:
        ts = (base + timedelta(minutes=minutes, seconds=seconds, microseconds=micros)).astimezone(
            zone
        )
        added = store.add_batch(
            [Bar(symbol="AAA", ts=ts, open=1.0, high=1.0, low=1.0, close=1.0, volume=1.0)]
        )
        assert store.epoch(ts) == int(ts.timestamp())  # ts is the time add_batch converted
        stored += [int(b.ts.timestamp()) for b in added.accepted]
        window = store.windows(["AAA"])[0]
        if window is not None:
            assert window.timestamps.tolist() == stored[-8:]
