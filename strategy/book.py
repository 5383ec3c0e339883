"""The trading book: positions, open orders, cash and marks, updated only by fills, order events and bars."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import date, datetime

import msgspec

from strategy.types import Bar, Fill, Order, OrderEvent, OrderStatus, Position, Side


class OpenOrderTotals:
    """Per-symbol sums over the open orders, accumulated in the book's order (so each sum is the
    float a scan of open_orders gives): the strategy's pending and risk's open quantities for one
    intent in O(1) instead of a scan of every open order per symbol (O(symbols x orders) a batch).
    """

    __slots__ = ("buys", "exposure", "exposure_sum", "limits", "sells", "signed", "stale")

    def __init__(self, orders: Iterable[Order] = ()) -> None:
        self.signed: dict[str, list[float]] = {}  # signed remaining of each order, in book order
        self.buys: dict[str, float] = {}  # unsigned remaining of open buys
        self.sells: dict[str, float] = {}
        self.limits: dict[str, float] = {}  # the last open order's limit price, either side
        # strategy.risk's worst-case exposure term per symbol with orders and their sum: filled on
        # first use, dropped by the book when a price or position moves; `stale` names the symbols
        # whose orders changed since (an order added within a batch).
        self.exposure: dict[str, float] | None = None
        self.exposure_sum = 0.0
        self.stale: set[str] = set()
        for order in orders:
            self.add(order)

    def add(self, order: Order) -> None:
        """Count one more open order (it is last in the book's order)."""
        symbol = order.symbol
        remaining = order.remaining
        self.signed.setdefault(symbol, []).append(remaining * order.side.sign)
        side = self.buys if order.side is Side.BUY else self.sells
        side[symbol] = side.get(symbol, 0.0) + remaining
        if order.limit_price is not None:
            self.limits[symbol] = order.limit_price
        if self.exposure is not None:
            self.stale.add(symbol)

    def open_quantity(self, symbol: str, side: Side) -> float:
        """Unfilled quantity of the symbol's open orders on one side (unsigned)."""
        return (self.buys if side is Side.BUY else self.sells).get(symbol, 0.0)


class Book:
    """Mutable state owned by one loop; every update comes in as a value, time comes in on it."""

    def __init__(self, *, starting_cash: float) -> None:
        self.cash = starting_cash
        self.positions: dict[str, Position] = {}
        self.open_orders: dict[str, Order] = {}
        self.last_prices: dict[str, float] = {}
        self.last_exit_ts: dict[str, datetime] = {}
        self.seen_fill_ids: set[str] = set()
        self.day: date | None = None
        self.day_start_equity = starting_cash
        self.peak_equity = starting_cash
        # Running market values, so equity and exposure are O(1) per bar instead of O(symbols).
        self._values: dict[str, float] = {}
        self._net_value = 0.0
        self._gross_value = 0.0
        self._totals: OpenOrderTotals | None = None  # built on first read, see open_totals()

    # ---- updates -------------------------------------------------------------------------
    def mark(self, bar: Bar) -> None:
        """Record the last price of a symbol and roll the trading day when the date changes."""
        self.mark_batch((bar,))

    def mark_batch(self, bars: Iterable[Bar]) -> None:
        """mark() for each bar in order, in one loop.

        The result is the same floats as marking bar by bar: held symbols are revalued one after
        another in batch order, the day rolls at the first bar of a new date, and the peak sees
        the equity after every change (unchanged equity cannot move a max, so it is read only
        after the first bar, a revalue or a roll). The day is looked at once per distinct ts
        object (a batch shares one)."""
        if self._totals is not None:
            self._totals.exposure = None  # marks move the exposure terms, not the order sums
        prices, values, positions = self.last_prices, self._values, self.positions
        seen: datetime | None = None
        check = False  # the first bar checks: its ts is new, so the day is looked at
        for bar in bars:
            symbol = bar.symbol
            close = prices[symbol] = bar.close
            if symbol in values:  # held: _revalue(symbol) written out, the price being close
                pos = positions.get(symbol)
                new = pos.quantity * close if pos is not None else 0.0
                old = values[symbol]
                self._net_value += new - old
                self._gross_value += abs(new) - abs(old)
                if new == 0.0:
                    del values[symbol]
                else:
                    values[symbol] = new
                check = True
            ts = bar.ts
            if ts is not seen:
                seen = ts
                if ts.date() != self.day:
                    self.roll_day(ts)
                    values = self._values  # a roll re-sums the values into a new dict
                check = True
            if check:
                equity = self.cash + self._net_value
                if equity > self.peak_equity:  # max(peak, equity), as mark() always took it
                    self.peak_equity = equity
                check = False

    def set_price(self, symbol: str, price: float) -> None:
        """Set a last price without a bar (restoring from the journal)."""
        self.last_prices[symbol] = price
        if self._totals is not None:
            self._totals.exposure = None
        self._revalue(symbol)

    def roll_day(self, now: datetime) -> None:
        today = now.date()
        if self.day != today:
            self._resum()
            if self.day is not None:
                self.day_start_equity = self.equity()
            self.day = today

    def _revalue(self, symbol: str) -> None:
        pos = self.positions.get(symbol)
        price = self.last_prices.get(symbol)
        new = pos.quantity * price if pos is not None and price is not None else 0.0
        old = self._values.get(symbol, 0.0)
        self._net_value += new - old
        self._gross_value += abs(new) - abs(old)
        if new == 0.0:
            self._values.pop(symbol, None)
        else:
            self._values[symbol] = new

    def _resum(self) -> None:
        """Recompute the running sums exactly (clears accumulated float rounding)."""
        self._values = {s: v for s in self.positions if (v := self.market_value(s)) != 0.0}
        self._net_value = sum(self._values.values())
        self._gross_value = sum(abs(v) for v in self._values.values())

    def add_order(self, order: Order) -> None:
        known = order.client_order_id in self.open_orders
        self.open_orders[order.client_order_id] = order
        if self._totals is not None:
            if known:  # replaced in place: its old remaining is in the sums
                self._totals = None
            else:
                self._totals.add(order)

    def apply_order_event(self, event: OrderEvent) -> Order | None:
        """Apply a status change; returns the updated order, or None when the id is unknown."""
        order = self.open_orders.get(event.client_order_id)
        if order is None:
            return None
        self._totals = None
        updated = _with_status(order, event)
        if updated.status.is_terminal:
            del self.open_orders[order.client_order_id]
        else:
            self.open_orders[order.client_order_id] = updated
        return updated

    def apply_fill(self, fill: Fill) -> Position | None:
        """Apply one execution exactly once; returns the new position, or None for a duplicate."""
        if fill.fill_id in self.seen_fill_ids:
            return None
        self.seen_fill_ids.add(fill.fill_id)
        self._totals = None  # positions and an order's remaining change
        before = self.positions.get(fill.symbol, Position(symbol=fill.symbol))
        after = before.apply(fill)
        self.positions[fill.symbol] = after
        self.cash -= fill.signed_quantity * fill.price + fill.commission
        self.last_prices.setdefault(fill.symbol, fill.price)
        self._revalue(fill.symbol)
        if before.quantity != 0 and (
            after.quantity == 0 or (after.quantity > 0) != (before.quantity > 0)
        ):
            self.last_exit_ts[fill.symbol] = fill.ts
        order = self.open_orders.get(fill.client_order_id)
        if order is not None:
            filled = order.filled_quantity + fill.quantity
            avg = (
                order.average_fill_price * order.filled_quantity + fill.price * fill.quantity
            ) / filled
            self.open_orders[order.client_order_id] = _replace(
                order, filled_quantity=filled, average_fill_price=avg
            )
        self.peak_equity = max(self.peak_equity, self.equity())
        return after

    def apply_updates(self, events: Sequence[OrderEvent], fills: Sequence[Fill]) -> list[Fill]:
        """Fills first (they change positions), then the status events that may close their orders;
        returns the fills that were new."""
        new_fills = [f for f in fills if self.apply_fill(f) is not None]
        for event in events:
            self.apply_order_event(event)
        return new_fills

    # ---- reads ---------------------------------------------------------------------------
    def position(self, symbol: str) -> float:
        pos = self.positions.get(symbol)
        return pos.quantity if pos is not None else 0.0

    def pending(self, symbol: str) -> float:
        """Signed quantity of open orders in a symbol not yet filled."""
        return sum(self.open_totals().signed.get(symbol, ()))

    def open_totals(self) -> OpenOrderTotals:
        """Per-symbol sums of the open orders; kept until an order event or fill changes them."""
        totals = self._totals
        if totals is None:
            totals = self._totals = OpenOrderTotals(self.open_orders.values())
        return totals

    def price(self, symbol: str) -> float | None:
        return self.last_prices.get(symbol)

    def market_value(self, symbol: str) -> float:
        price = self.last_prices.get(symbol)
        pos = self.positions.get(symbol)
        if pos is None or price is None:
            return 0.0
        return pos.quantity * price

    def gross_exposure(self) -> float:
        return self._gross_value

    def equity(self) -> float:
        return self.cash + self._net_value

    def daily_pnl(self) -> float:
        return self.equity() - self.day_start_equity

    def drawdown(self) -> float:
        """Fractional drop of equity from its peak (0.1 = 10% below the peak)."""
        if self.peak_equity <= 0:
            return 0.0
        return max(0.0, 1.0 - self.equity() / self.peak_equity)


def _replace(order: Order, **changes: object) -> Order:
    return msgspec.structs.replace(order, **changes)


def _with_status(order: Order, event: OrderEvent) -> Order:
    # Filled quantity and average price come from fills only: an event may report a fill before the
    # fill itself arrives, and counting both would dilute the average price.
    status = event.status
    if status is OrderStatus.PARTIALLY_FILLED and event.filled_quantity >= order.quantity:
        status = OrderStatus.FILLED
    return _replace(
        order,
        status=status,
        broker_order_id=event.broker_order_id or order.broker_order_id,
        reason=event.reason or order.reason,
    )
