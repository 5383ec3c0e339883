"""SimBroker keeps each symbol's tape as its bar plus, apart, the volume filled against that bar
(no SymbolTape per bar): it gives what the broker with a SymbolTape per tape gave (kept here as
the reference: the methods that touched the tapes, as they were), on random streams of bars,
market and limit orders (filled at once or on the next bar), cancels and restores, compared
value by value, snapshot bytes included.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from strategy.native import pure_module
from strategy.sim_broker import (
    _INF,
    BarsMatched,
    SimBroker,
    SimBrokerConfig,
    SimBrokerState,
    SymbolTape,
)
from strategy.types import Bar, Fill, Order, OrderEvent, OrderStatus, OrderType, Side

T0 = datetime(2024, 3, 1, 14, 0, tzinfo=UTC)
SYMBOLS = ("AAA", "BBB", "CCC")


class ReferenceBroker(pure_module("strategy.sim_broker").SimBroker):  # type: ignore[misc]
    """SimBroker with a SymbolTape per tape, as before (submit, on_bars, _match and the reads).

    It subclasses the Python source of SimBroker (the compiled class takes no Python subclass).
    """

    def __init__(self, *, config: SimBrokerConfig) -> None:
        super().__init__(config=config)
        self._tapes: dict[str, SymbolTape] = {}

    def submit(self, order: Order, now: datetime) -> list[OrderEvent]:
        coid = order.client_order_id
        if coid in self._orders:
            existing = self._orders[coid].order
            return [
                OrderEvent(client_order_id=coid, ts=now, status=OrderStatus.REJECTED,
                           filled_quantity=existing.filled_quantity,
                           reason="duplicate_client_order_id",
                           broker_order_id=existing.broker_order_id)
            ]  # fmt: skip
        latency = self.config.latency_bars
        self.config = msgspec.structs.replace(self.config, latency_bars=1)  # no match in super()
        try:
            events = super().submit(order, now)
        finally:
            self.config = msgspec.structs.replace(self.config, latency_bars=latency)
        if events[0].status is OrderStatus.REJECTED:
            return events
        if latency == 0 and order.order_type is OrderType.MARKET:
            tape = self._tapes.get(order.symbol)
            if tape is not None and tape.bar.ts <= now:
                more, fills = self._ref_match(tape, [coid], at_open=False, now=now)
                self._pending_events.extend(more)
                self._pending_fills.extend(fills)
        return events

    def on_bars(self, bars: Sequence[Bar]) -> BarsMatched:  # type: ignore[override]
        events, fills = self.flush()
        tapes, working = self._tapes, self._open
        collar = self.config.price_collar
        latest: datetime | None = None
        for bar in bars:
            symbol = bar.symbol
            previous = tapes.get(symbol)
            o, h, low, c, v = bar.open, bar.high, bar.low, bar.close, bar.volume
            if 0.0 < low <= o <= h < _INF and low <= c <= h and 0.0 <= v < _INF:
                if previous is None:
                    take = True
                elif bar.ts <= previous.bar.ts:
                    take = False
                else:
                    take = not collar or not self._outside_collar(bar, previous.bar.close, collar)
            else:
                take = False
            if take:
                tape = tapes[symbol] = SymbolTape(bar=bar)
                if working.get(symbol):
                    more_events, more_fills = self._ref_match(
                        tape, list(working[symbol]), at_open=True
                    )
                    events.extend(more_events)
                    fills.extend(more_fills)
            elif previous is None:
                continue
            else:
                tape = previous
            ts = tape.bar.ts
            if latest is None or ts > latest:
                latest = ts
        return BarsMatched(events, fills, latest)

    def _ref_match(
        self, tape: SymbolTape, coids: list[str], *, at_open: bool, now: datetime | None = None
    ) -> tuple[list[OrderEvent], list[Fill]]:
        bar = tape.bar
        cfg = self.config
        cap = cfg.max_volume_fraction * bar.volume
        used = tape.volume_used
        events: list[OrderEvent] = []
        fills: list[Fill] = []
        for coid in coids:
            venue = self._orders[coid]
            order = venue.order
            if at_open:
                if bar.ts <= venue.submitted_ts:
                    continue
                price = self._price_at_open(order, bar)
            else:
                if order.order_type is not OrderType.MARKET:
                    continue
                cost_bps = cfg.spread_bps / 2 + cfg.slippage_bps
                price = bar.close * (1 + order.side.sign * cost_bps / 10_000)
            if price is None:
                continue
            available = cap - used
            if float(order.quantity).is_integer():
                available = float(math.floor(available + 1e-9))
            quantity = min(order.remaining, available)
            if quantity <= 1e-9:
                continue
            used += quantity
            ts = bar.ts if now is None else now
            event, fill = self._execute(venue, quantity, price, ts)
            events.append(event)
            fills.append(fill)
        self._tapes[bar.symbol] = SymbolTape(bar=bar, volume_used=used)
        return events, fills

    def tape(self, symbol: str) -> SymbolTape | None:
        return self._tapes.get(symbol)

    def state(self) -> SimBrokerState:
        return msgspec.structs.replace(super().state(), tapes=dict(self._tapes))


@st.composite
def venue_streams(draw: st.DrawFn) -> list[tuple[list[Bar], list[tuple[str, str, str]]]]:
    """Batches of bars (jumps, stale and bad bars mixed in), each followed by actions: an order
    (market or limit, buy or sell, in a symbol) or a cancel of an earlier order."""
    out = []
    level = dict.fromkeys(SYMBOLS, 100.0)
    for step in range(1, draw(st.integers(1, 40))):
        ts = T0 + timedelta(minutes=step)
        bars = []
        for symbol in draw(st.lists(st.sampled_from(SYMBOLS), max_size=4)):
            move = draw(st.sampled_from((1.0, 1.0, 1.01, 0.99, 2.5, 0.3)))
            c = level[symbol] * move
            if draw(st.booleans()):
                level[symbol] = c
            at = ts - timedelta(minutes=draw(st.sampled_from((0, 0, 0, 2))))
            low = c * 0.995 if draw(st.integers(0, 9)) else math.nan
            bars.append(Bar(symbol=symbol, ts=at, open=c, high=c * 1.005, low=low, close=c,
                            volume=draw(st.sampled_from((0.0, 300.0, 1e4)))))  # fmt: skip
        actions = draw(
            st.lists(
                st.tuples(
                    st.sampled_from(("market", "market", "limit", "cancel")),
                    st.sampled_from(SYMBOLS),
                    st.sampled_from(("buy", "sell")),
                ),
                max_size=3,
            )
        )
        out.append((bars, actions))
    return out


@settings(max_examples=300, deadline=None)
@given(
    latency=st.sampled_from((0, 1)),
    collar=st.sampled_from((0.0, 0.5)),
    restore_at=st.integers(0, 40),
    stream=venue_streams(),
)
def test_tape_bars_when_orders_fill_on_shared_volume_then_same_as_a_symbol_tape_per_bar(
    latency: int,
    collar: float,
    restore_at: int,
    stream: list[tuple[list[Bar], list[tuple[str, str, str]]]],
) -> None:
    config = SimBrokerConfig(latency_bars=latency, price_collar=collar)
    fast, slow = SimBroker(config=config), ReferenceBroker(config=config)
    n = 0
    for step, (bars, actions) in enumerate(stream, start=1):
        if step == restore_at:  # a restored broker pairs each tape bar with its volume
            restored = SimBroker.from_state(fast.state(), config=config)
            restored._collared = fast._collared  # not in the state: a collar suspect is kept apart
            fast = restored
        assert fast.on_bars(bars) == slow.on_bars(bars)
        now = T0 + timedelta(minutes=step, seconds=30)
        for kind, symbol, side in actions:
            n += 1
            if kind == "cancel":
                coid = f"O{n // 2}"
                assert fast.cancel(coid, now) == slow.cancel(coid, now)
                continue
            tape = slow.tape(symbol)
            limit = tape.bar.close if tape is not None and kind == "limit" else None
            order = Order(client_order_id=f"O{n}", symbol=symbol, side=Side(side), quantity=400.0,
                          order_type=OrderType(kind), limit_price=limit, created_ts=now)  # fmt: skip
            assert fast.submit(order, now) == slow.submit(order, now)
        assert fast.flush() == slow.flush()
        for symbol in SYMBOLS:
            assert fast.tape(symbol) == slow.tape(symbol)
        assert fast.state() == slow.state()
        assert fast.snapshot() == slow.snapshot()
