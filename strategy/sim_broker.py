"""A simulated broker: market and limit orders matched against bars, with costs and volume-limited fills.

Over 400 lines: one matching engine; submit, cancel, matching on each bar and the state snapshot
share the venue's order book and its invariants, so SimBroker stays one class in one file.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from datetime import datetime

import msgspec

from strategy.errors import InvariantError
from strategy.sim_broker_types import (
    BarsMatched as BarsMatched,
)
from strategy.sim_broker_types import (
    SimBrokerConfig as SimBrokerConfig,
)
from strategy.sim_broker_types import (
    SimBrokerState as SimBrokerState,
)
from strategy.sim_broker_types import (
    SymbolTape as SymbolTape,
)
from strategy.sim_broker_types import (
    VenueOrder as VenueOrder,
)
from strategy.types import Bar, Fill, Order, OrderEvent, OrderStatus, OrderType, Position, Side

_EPSILON = 1e-9
_INF = math.inf

DUPLICATE_CLIENT_ORDER_ID = "duplicate_client_order_id"
UNKNOWN_CLIENT_ORDER_ID = "unknown_client_order_id"
INVALID_QUANTITY = "invalid_quantity"
INVALID_LIMIT_PRICE = "invalid_limit_price"
INVALID_SYMBOL = "invalid_symbol"


_STATE_DECODER = msgspec.json.Decoder(SimBrokerState)


class SimBroker:
    """Deterministic broker simulator; time comes in as `now` and on the bars, never from a clock."""

    def __init__(self, *, config: SimBrokerConfig) -> None:
        self.config = config
        self._orders: dict[str, VenueOrder] = {}
        self._open: dict[str, dict[str, None]] = {}
        self._fills: list[Fill] = []
        self._positions: dict[str, Position] = {}
        # Each symbol's tape, kept as its bar and, apart, the volume filled against a bar: a
        # SymbolTape per bar cost more than the rest of on_bars' step for a bar without orders.
        # A (bar, volume) pair counts only while that bar (the same object) is the tape.
        self._tape_bars: dict[str, Bar] = {}
        self._volume_used: dict[str, tuple[Bar, float]] = {}
        self._sequence = 0
        self._pending_events: list[OrderEvent] = []
        self._pending_fills: list[Fill] = []
        self._collared: dict[str, float] = {}  # close of a collared bar, by symbol

    # ---- orders ------------------------------------------------------------------------------
    def submit(self, order: Order, now: datetime) -> list[OrderEvent]:
        """Accept or reject one order; a known client order id is rejected and never ordered twice."""
        coid = order.client_order_id
        if coid in self._orders:
            existing = self._orders[coid].order
            return [
                OrderEvent(
                    client_order_id=coid,
                    ts=now,
                    status=OrderStatus.REJECTED,
                    filled_quantity=existing.filled_quantity,
                    reason=DUPLICATE_CLIENT_ORDER_ID,
                    broker_order_id=existing.broker_order_id,
                )
            ]
        self._sequence += 1
        reason = _invalid_reason(order)
        status = OrderStatus.REJECTED if reason else OrderStatus.ACCEPTED
        accepted = msgspec.structs.replace(
            order,
            quantity=float(order.quantity),
            limit_price=None if order.limit_price is None else float(order.limit_price),
            status=status,
            filled_quantity=0.0,
            average_fill_price=0.0,
            broker_order_id=f"SIM-{self._sequence}",
            reason=reason or order.reason,
        )
        self._orders[coid] = VenueOrder(order=accepted, sequence=self._sequence, submitted_ts=now)
        event = OrderEvent(
            client_order_id=coid,
            ts=now,
            status=status,
            reason=reason,
            broker_order_id=accepted.broker_order_id,
        )
        if reason:
            return [event]
        self._open.setdefault(order.symbol, {})[coid] = None
        if self.config.latency_bars == 0 and order.order_type is OrderType.MARKET:
            bar = self._tape_bars.get(order.symbol)
            if bar is not None and bar.ts <= now:
                events, fills = self._match(bar, [coid], at_open=False, now=now)
                self._pending_events.extend(events)
                self._pending_fills.extend(fills)
        return [event]

    def cancel(self, client_order_id: str, now: datetime) -> list[OrderEvent]:
        """Cancel an open order (keeping its fills); an unknown id gets a rejection, a closed one nothing."""
        venue = self._orders.get(client_order_id)
        if venue is None:
            return [
                OrderEvent(
                    client_order_id=client_order_id,
                    ts=now,
                    status=OrderStatus.REJECTED,
                    reason=UNKNOWN_CLIENT_ORDER_ID,
                )
            ]
        order = venue.order
        if order.status.is_terminal:
            return []
        cancelled = msgspec.structs.replace(order, status=OrderStatus.CANCELLED)
        self._orders[client_order_id] = msgspec.structs.replace(venue, order=cancelled)
        self._close(cancelled)
        return [
            OrderEvent(
                client_order_id=client_order_id,
                ts=now,
                status=OrderStatus.CANCELLED,
                filled_quantity=order.filled_quantity,
                reason="cancelled",
                broker_order_id=order.broker_order_id,
            )
        ]

    # ---- market data ---------------------------------------------------------------------------
    def on_bar(self, bar: Bar) -> tuple[list[OrderEvent], list[Fill]]:
        """Match the symbol's resting orders against one bar; a bad or stale bar is ignored."""
        matched = self.on_bars((bar,))
        return matched.events, matched.fills

    def on_bars(self, bars: Iterable[Bar]) -> BarsMatched:
        """on_bar() for each bar in order, in one loop; also the latest tape time among them.

        Every usable bar becomes its symbol's tape (the reference of the next collar check and of
        immediate fills); only symbols with working orders are matched. Written out, with the
        settings read once: it runs for every bar of every symbol."""
        events, fills = self.flush()  # two new empty lists when nothing is pending
        tapes, working, collared = self._tape_bars, self._open, self._collared
        collar = self.config.price_collar
        latest: datetime | None = None
        for bar in bars:
            symbol = bar.symbol
            previous = tapes.get(symbol)
            o, h, low, c, v = bar.open, bar.high, bar.low, bar.close, bar.volume
            # Usable: finite, positive prices around the body and a finite volume >= 0, in one
            # chained comparison (NaN fails every comparison; low > 0 and h < inf bound the rest).
            if 0.0 < low <= o <= h < _INF and low <= c <= h and 0.0 <= v < _INF:
                if previous is None:
                    take = True
                elif bar.ts <= previous.ts:  # stale: the tape stays
                    take = False
                elif not collar:
                    take = True
                else:
                    # Within the collar of the last close (the usual bar): _outside_collar's
                    # first test, written out; it forgets a suspect only when one is held.
                    reference = previous.close
                    up, down = h - reference, reference - low
                    if (up if up > down else down) <= collar * reference:
                        take = True
                        if collared:
                            collared.pop(symbol, None)
                    else:
                        take = not self._outside_collar(bar, reference, collar)
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
            # A batch's bars share one ts object: the comparison only for another one.
            if ts is not latest and (latest is None or ts > latest):
                latest = ts
        return BarsMatched(events, fills, latest)

    def _outside_collar(self, bar: Bar, reference: float, collar: float) -> bool:
        """True for a bar too far from the last close to trade on (remembered to confirm later)."""
        up, down = bar.high - reference, reference - bar.low
        if (up if up > down else down) <= collar * reference:  # max(|h - ref|, |l - ref|)
            self._collared.pop(bar.symbol, None)
            return False
        suspect = self._collared.pop(bar.symbol, None)
        if suspect is not None and max(abs(bar.high - suspect), abs(bar.low - suspect)) <= (
            collar * suspect
        ):
            return False  # two bars at the new level: a real move
        self._collared[bar.symbol] = bar.close
        return True

    def flush(self) -> tuple[list[OrderEvent], list[Fill]]:
        """Take events and fills produced outside on_bar (immediate fills when latency_bars=0)."""
        events, fills = self._pending_events, self._pending_fills
        if not events and not fills:  # the usual case: two new empty lists, the pending ones kept
            return [], []
        self._pending_events, self._pending_fills = [], []
        return events, fills

    # ---- reads -----------------------------------------------------------------------------------
    def open_orders(self) -> list[Order]:
        """Orders still working, in submission order."""
        return [v.order for v in self._orders.values() if not v.order.status.is_terminal]

    def orders(self) -> dict[str, Order]:
        """Every order the broker ever saw, terminal ones included."""
        return {coid: v.order for coid, v in self._orders.items()}

    def order(self, client_order_id: str) -> Order | None:
        venue = self._orders.get(client_order_id)
        return venue.order if venue is not None else None

    def venue_order(self, client_order_id: str) -> VenueOrder | None:
        return self._orders.get(client_order_id)

    def tape(self, symbol: str) -> SymbolTape | None:
        bar = self._tape_bars.get(symbol)
        return self._tape(symbol, bar) if bar is not None else None

    def _tape(self, symbol: str, bar: Bar) -> SymbolTape:
        return SymbolTape(bar=bar, volume_used=self._volume_used_on(symbol, bar))

    def _volume_used_on(self, symbol: str, bar: Bar) -> float:
        """The volume already filled against this tape bar (0 once another bar is the tape)."""
        used = self._volume_used.get(symbol)
        return used[1] if used is not None and used[0] is bar else 0.0

    def knows(self, client_order_id: str) -> bool:
        return client_order_id in self._orders

    def positions(self) -> dict[str, Position]:
        return dict(self._positions)

    def fills(self) -> tuple[Fill, ...]:
        return tuple(self._fills)

    # ---- persistence -----------------------------------------------------------------------------
    def state(self) -> SimBrokerState:
        return SimBrokerState(
            orders=tuple(self._orders.values()),
            fills=tuple(self._fills),
            tapes={s: self._tape(s, bar) for s, bar in self._tape_bars.items()},
            sequence=self._sequence,
            pending_events=tuple(self._pending_events),
            pending_fills=tuple(self._pending_fills),
        )

    def snapshot(self) -> bytes:
        """The whole state as JSON bytes; SimBroker.restore() turns it back into an equal broker."""
        return msgspec.json.encode(self.state())

    @classmethod
    def restore(cls, data: bytes, config: SimBrokerConfig) -> SimBroker:
        try:
            state = _STATE_DECODER.decode(data)
        except msgspec.DecodeError as e:
            msg = f"sim broker snapshot is unreadable: {e}"
            raise InvariantError(msg) from e
        return cls.from_state(state, config=config)

    @classmethod
    def from_state(cls, state: SimBrokerState, *, config: SimBrokerConfig) -> SimBroker:
        """Rebuild a broker from its parts; positions are replayed from the fills in order."""
        broker = cls(config=config)
        for venue in sorted(state.orders, key=lambda v: v.sequence):
            order = venue.order
            broker._orders[order.client_order_id] = venue
            if not order.status.is_terminal:
                broker._open.setdefault(order.symbol, {})[order.client_order_id] = None
        for fill in state.fills:
            broker._record_fill(fill)
        broker._tape_bars = {s: t.bar for s, t in state.tapes.items()}
        broker._volume_used = {s: (t.bar, t.volume_used) for s, t in state.tapes.items()}
        broker._sequence = max([state.sequence, *(v.sequence for v in state.orders)])
        broker._pending_events = list(state.pending_events)
        broker._pending_fills = list(state.pending_fills)
        return broker

    # ---- matching --------------------------------------------------------------------------------
    def _match(
        self, bar: Bar, coids: list[str], *, at_open: bool, now: datetime | None = None
    ) -> tuple[list[OrderEvent], list[Fill]]:
        """Fill eligible orders of one symbol in submission order, sharing the tape bar's volume cap."""
        cfg = self.config
        cap = cfg.max_volume_fraction * bar.volume
        used = self._volume_used_on(bar.symbol, bar)
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
                price = _market_price(bar.close, order.side, cfg)
            if price is None:
                continue
            available = cap - used
            if float(order.quantity).is_integer():
                available = float(math.floor(available + _EPSILON))
            quantity = min(order.remaining, available)
            if quantity <= _EPSILON:
                continue
            used += quantity
            ts = bar.ts if now is None else now
            event, fill = self._execute(venue, quantity, price, ts)
            events.append(event)
            fills.append(fill)
        self._volume_used[bar.symbol] = (bar, used)
        return events, fills

    def _price_at_open(self, order: Order, bar: Bar) -> float | None:
        if order.order_type is OrderType.MARKET:
            return _market_price(bar.open, order.side, self.config)
        limit = order.limit_price
        if limit is None:
            return None
        if order.side is Side.BUY:
            return min(limit, bar.open) if bar.low <= limit else None
        return max(limit, bar.open) if bar.high >= limit else None

    def _execute(
        self, venue: VenueOrder, quantity: float, price: float, ts: datetime
    ) -> tuple[OrderEvent, Fill]:
        order = venue.order
        filled = order.filled_quantity + quantity
        notional = order.average_fill_price * order.filled_quantity + price * quantity
        if order.quantity - filled <= _EPSILON:
            filled = order.quantity
        commission_total = self._commission(filled, notional)
        commission = max(commission_total - venue.commission, 0.0)
        status = OrderStatus.FILLED if filled >= order.quantity else OrderStatus.PARTIALLY_FILLED
        updated = msgspec.structs.replace(
            order, status=status, filled_quantity=filled, average_fill_price=notional / filled
        )
        count = venue.fill_count + 1
        self._orders[order.client_order_id] = msgspec.structs.replace(
            venue, order=updated, commission=venue.commission + commission, fill_count=count
        )
        if status.is_terminal:
            self._close(updated)
        fill = Fill(
            fill_id=f"{order.client_order_id}-F{count}",
            client_order_id=order.client_order_id,
            symbol=order.symbol,
            side=order.side,
            quantity=quantity,
            price=price,
            commission=commission,
            ts=ts,
        )
        self._record_fill(fill)
        event = OrderEvent(
            client_order_id=order.client_order_id,
            ts=ts,
            status=status,
            filled_quantity=filled,
            broker_order_id=order.broker_order_id,
        )
        return event, fill

    def _commission(self, shares: float, notional: float) -> float:
        cfg = self.config
        fee = max(cfg.min_commission, cfg.commission_per_share * shares)
        return min(fee, cfg.max_commission_fraction * abs(notional))

    def _record_fill(self, fill: Fill) -> None:
        self._fills.append(fill)
        position = self._positions.get(fill.symbol, Position(symbol=fill.symbol))
        self._positions[fill.symbol] = position.apply(fill)

    def _close(self, order: Order) -> None:
        working = self._open.get(order.symbol)
        if working is not None:
            working.pop(order.client_order_id, None)
            if not working:
                del self._open[order.symbol]


def _market_price(reference: float, side: Side, config: SimBrokerConfig) -> float:
    """Reference price moved against us by half the spread plus slippage."""
    cost_bps = config.spread_bps / 2 + config.slippage_bps
    return reference * (1 + side.sign * cost_bps / 10_000)


def _invalid_reason(order: Order) -> str:
    if not order.symbol:
        return INVALID_SYMBOL
    if not math.isfinite(order.quantity) or order.quantity <= 0:
        return INVALID_QUANTITY
    if order.order_type is OrderType.LIMIT:
        limit = order.limit_price
        if limit is None or not math.isfinite(limit) or limit <= 0:
            return INVALID_LIMIT_PRICE
    return ""
