"""Signals in, order intents out: a target position per symbol, held for a number of bars."""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime, timedelta

from strategy.book import Book
from strategy.target_strategy_types import (
    SizingMiss as SizingMiss,
)
from strategy.target_strategy_types import (
    StrategyConfig as StrategyConfig,
)
from strategy.target_strategy_types import (
    _Entry as _Entry,
)
from strategy.types import OrderIntent, OrderType, Side, Signal

# Quantities closer to zero than this are treated as zero (fills in floats).
_EPSILON = 1e-9
_INF = math.inf


def sized_quantity(notional: float, price: float, *, step: float, max_quantity: float) -> float:
    """Whole `step` units that `notional` buys at `price`, at most max_quantity (0 when none)."""
    units = math.floor(min(notional / price, max_quantity) / step + _EPSILON)
    return round(units * step, 12) if units > 0 else 0.0


class TargetStrategy:
    """Keeps one target position per symbol and emits the intents that move the book toward it."""

    def __init__(self, *, config: StrategyConfig) -> None:
        self.config = config
        self._entries: dict[str, _Entry] = {}
        self.sizing_misses = 0
        self.last_sizing_miss: SizingMiss | None = None

    def reconfigure(self, config: StrategyConfig) -> None:
        """Apply a new config (SIGHUP); hold clocks of open positions are kept."""
        self.config = config

    def entry_ts(self, symbol: str) -> datetime | None:
        """When the hold clock of the symbol's position started, if one is held."""
        entry = self._entries.get(symbol)
        return entry.ts if entry is not None else None

    def on_signals(self, signals: Sequence[Signal], book: Book) -> list[OrderIntent]:
        """Intents that move each signalled symbol from position + pending orders to its target."""
        latest: dict[str, Signal] = {}
        for signal in signals:
            latest[signal.symbol] = signal
        # Read once per batch rather than through three Book calls per symbol: nothing here
        # changes the book.
        prices, positions = book.last_prices, book.positions
        pending = book.open_totals().signed
        cfg = self.config
        min_confidence, entries = cfg.min_confidence, self._entries
        high, allow_short = cfg.enter_threshold, cfg.allow_short
        low = 1.0 - high
        intents: list[OrderIntent] = []
        for symbol, signal in latest.items():
            price = prices.get(symbol)
            if price is None or not 0.0 < price < _INF:  # no usable price (NaN fails both)
                continue
            pos = positions.get(symbol)
            waiting = pending.get(symbol)
            if pos is None and waiting is None and not signal.confidence >= min_confidence:
                # Flat, nothing pending, no wish to enter (most signals of a batch): what
                # _decide does for it, without the call.
                entries.pop(symbol, None)
                continue
            # + 0 for nothing pending: what sum(()) added (-0.0 + 0 is 0.0).
            current = (pos.quantity if pos is not None else 0.0) + (
                sum(waiting) if waiting is not None else 0
            )
            # Held, and a confident signal for the side held (most signals of a batch once
            # positions are on): _decide restarts the hold and returns nothing; done here.
            if current > _EPSILON or current < -_EPSILON:
                entry = entries.get(symbol)
                if (
                    entry is not None
                    and signal.confidence >= min_confidence
                    and (
                        (current > 0 and entry.direction == 1 and signal.p_up >= high)
                        or (
                            current < 0
                            and entry.direction == -1
                            and allow_short
                            and signal.p_up <= low
                        )
                    )
                ):
                    entry.ts = signal.ts
                    continue
            intent = self._decide(signal, book, price, current)
            if intent is not None:
                intents.append(intent)
        return intents

    def _decide(
        self, signal: Signal, book: Book, price: float, current: float
    ) -> OrderIntent | None:
        """current: the symbol's position plus its pending orders, signed; price: its last price."""
        cfg = self.config
        symbol = signal.symbol
        held = _sign(current)
        confident = signal.confidence >= cfg.min_confidence
        wants = 0
        if confident and signal.p_up >= cfg.enter_threshold:
            wants = 1
        elif confident and signal.p_up <= 1.0 - cfg.enter_threshold:
            wants = -1

        entry = self._entries.get(symbol)
        if held == 0:
            self._entries.pop(symbol, None)
            if wants == 0 or (wants < 0 and not cfg.allow_short):
                return None
            reason = "enter_long" if wants > 0 else "enter_short"
            return self._move(signal, price, current, wants, reason, equity=book.equity())

        if entry is None or entry.direction != held:  # restored at start, or an entry was refused
            entry = self._entries[symbol] = _Entry(direction=held, ts=signal.ts)
        if held < 0 and not cfg.allow_short:
            return self._move(signal, price, current, 0, "exit_short_disabled", confidence=1.0)
        if wants == held:
            entry.ts = signal.ts  # a confirming signal restarts the hold
            return None
        if cfg.exit_on_opposite and confident and signal.direction == -held:
            if wants == -held and (wants > 0 or cfg.allow_short):
                return self._move(signal, price, current, wants, "reverse", equity=book.equity())
            return self._move(signal, price, current, 0, "exit_opposite")
        hold = timedelta(seconds=cfg.hold_bars * cfg.bar_seconds)
        if cfg.hold_bars and signal.ts - entry.ts >= hold:
            return self._move(signal, price, current, 0, "exit_hold", confidence=1.0)
        return None

    def _move(
        self,
        signal: Signal,
        price: float,
        current: float,
        direction: int,
        reason: str,
        *,
        equity: float = 0.0,
        confidence: float | None = None,
    ) -> OrderIntent | None:
        """The intent from current (position + pending) to a target of `direction` full positions."""
        cfg = self.config
        target = 0.0
        if direction:
            notional = (
                cfg.position_notional
                if cfg.position_fraction is None
                else cfg.position_fraction * equity
            )
            step = cfg.step(signal.symbol)
            quantity = sized_quantity(notional, price, step=step, max_quantity=cfg.max_quantity)
            if quantity <= 0:
                self.sizing_misses += 1
                self.last_sizing_miss = SizingMiss(
                    symbol=signal.symbol, ts=signal.ts, price=price, notional=notional, step=step
                )
                return None
            target = direction * quantity
        delta = target - current
        if abs(delta) < _EPSILON:
            return None
        if direction:  # exits keep the entry: if refused, the next bar tries again
            self._entries[signal.symbol] = _Entry(direction=direction, ts=signal.ts)
        side = Side.BUY if delta > 0 else Side.SELL
        limit_price = None
        order_type = OrderType.MARKET
        if cfg.order_type == "limit":
            order_type = OrderType.LIMIT
            offset = cfg.limit_offset_bps / 10_000.0 * side.sign
            limit_price = round(price * (1.0 + offset), cfg.price_decimals)
        return OrderIntent(
            symbol=signal.symbol,
            ts=signal.ts,
            side=side,
            quantity=abs(delta),
            order_type=order_type,
            limit_price=limit_price,
            reason=reason,
            confidence=signal.confidence if confidence is None else confidence,
        )


def _sign(quantity: float) -> int:
    if quantity > _EPSILON:
        return 1
    if quantity < -_EPSILON:
        return -1
    return 0
