"""The trading kernel: one bar batch's pure stages, shared by the live daemon and the backtest.

A batch goes through two calls with the scorer in between (the daemon awaits it off the event loop,
the backtest may look up precomputed scores):

    intake = kernel.intake(batch, events, fills)   # broker news -> book, bars -> windows, risk state
    signals = scorer.score(kernel.windows(intake.accepted))
    decision = kernel.decide(signals, intake.now)  # strategy -> intents -> risk -> orders
    journal.record_orders_ahead(**kernel.journal_rows(intake, signals, decision))
    venue.submit(decision.orders)

Everything here is a value in, a value out: no clock, no I/O, no logging (the caller logs).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from strategy.bars import BarStore, Window
from strategy.book import Book
from strategy.kernel_types import (
    BatchDecision as BatchDecision,
)
from strategy.kernel_types import (
    BatchIntake as BatchIntake,
)
from strategy.risk import RiskEngine
from strategy.target_strategy import TargetStrategy
from strategy.types import Bar, Fill, Order, OrderEvent, OrderIntent, RiskDecision, Signal


class TradingKernel:
    """Owns the book and the engines; both halves of a batch mutate only this state."""

    def __init__(
        self,
        *,
        store: BarStore,
        strategy: TargetStrategy,
        risk: RiskEngine,
        book: Book,
        next_order_id: Callable[[], str],
    ) -> None:
        self.store = store
        self.strategy = strategy
        self.risk = risk
        self.book = book
        self.next_order_id = next_order_id
        self.paused = False
        # journal_rows' last kv strings, with the float each was made from: cash moves only on
        # fills and the peak only on a new high, so most batches reuse both (compared by
        # identity: the same object gives the same repr, -0.0 and NaN included).
        self._cash: tuple[float, str] = (math.nan, "nan")
        self._peak: tuple[float, str] = (math.nan, "nan")

    def backfill(self, batch: Sequence[Bar]) -> None:
        """Store and mark bars without trading (warm-up before going live)."""
        self.book.mark_batch(self.store.add_batch(batch).accepted)

    def apply_updates(
        self, events: Sequence[OrderEvent], fills: Sequence[Fill]
    ) -> tuple[list[OrderEvent], list[Fill]]:
        """Fills first (they change positions), then the status events that may close their orders."""
        if not events and not fills:  # most batches: the broker had no news
            return [], []
        return list(events), self.book.apply_updates(events, fills)

    def intake(
        self,
        batch: Sequence[Bar],
        events: Sequence[OrderEvent],
        fills: Sequence[Fill],
        *,
        received: datetime | None = None,
    ) -> BatchIntake:
        """Apply the broker's news, validate and store the bars, and let risk see the new marks.

        received: when a live feed delivered the batch; bars closing far after it are refused."""
        now = batch[0].ts
        applied_events, new_fills = self.apply_updates(events, fills)
        book = self.book
        added = self.store.add_batch(batch, now=received)
        book.mark_batch(added.accepted)
        return BatchIntake(
            now=now,
            events=applied_events,
            fills=new_fills,
            rejected=added.rejected,
            accepted=added.symbols,
            state_change=self.risk.update(book, now),
        )

    def windows(self, symbols: Sequence[str]) -> list[Window]:
        """The full windows of these symbols, in order (a symbol still warming up has none)."""
        return self.store.full_windows(symbols)

    def decide(self, signals: Sequence[Signal], now: datetime) -> BatchDecision:
        """Signals -> the strategy's intents -> risk checks -> orders (nothing new while paused)."""
        intents = [] if self.paused else self.strategy.on_signals(signals, self.book)
        return self.check(intents, now)

    def check(self, intents: Sequence[OrderIntent], now: datetime) -> BatchDecision:
        """Risk-check intents (also operator ones, such as flatten) and turn accepted ones into orders."""
        if not intents:  # most batches: nothing to check
            return BatchDecision(decisions=[], orders=[], cancels=[])
        risk, book = self.risk, self.book
        decisions: list[RiskDecision] = []
        orders: list[Order] = []
        cancels: list[str] = []
        for intent in intents:
            decision = risk.check(intent, book, now)
            decisions.append(decision)
            if not decision.accepted:
                continue
            if intent.is_cancel:
                if intent.cancel_client_order_id is not None:
                    cancels.append(intent.cancel_client_order_id)
                continue
            order = Order(
                client_order_id=self.next_order_id(),
                symbol=intent.symbol,
                side=intent.side,
                quantity=intent.quantity,
                order_type=intent.order_type,
                limit_price=intent.limit_price,
                created_ts=now,
                reason=intent.reason,
            )
            book.add_order(order)
            orders.append(order)
        return BatchDecision(decisions=decisions, orders=orders, cancels=cancels)

    def journal_rows(
        self, intake: BatchIntake, signals: Sequence[Signal], decision: BatchDecision
    ) -> dict[str, Any]:
        """The keyword arguments of one Journal.record_orders_ahead call for this batch: its
        signals and kv always, every other table only when the batch has rows for it (most
        batches: none), so the journal walks two keywords per batch, not nine."""
        book = self.book
        cash, peak = book.cash, book.peak_equity
        if cash is not self._cash[0]:
            self._cash = (cash, repr(cash))
        if peak is not self._peak[0]:
            self._peak = (peak, repr(peak))
        kv: dict[str, object] = {
            "last_bar_ts": intake.now,  # the journal stores its isoformat(), made once per commit
            "cash": self._cash[1],
            "peak_equity": self._peak[1],
        }
        rows: dict[str, Any] = {"signals": [s for s in signals if s.confidence > 0], "kv": kv}
        if intake.rejected:
            rows["bars_rejected"] = intake.rejected
        if decision.decisions:
            rows["decisions"] = decision.decisions
        if decision.orders:
            rows["orders"] = decision.orders
        if intake.events:
            rows["order_events"] = intake.events
        fills = intake.fills
        if fills:
            rows["fills"] = fills
            positions = book.positions
            rows["positions"] = [positions[f.symbol] for f in fills]
        change = intake.state_change
        if change is not None:
            kv["trading_state"] = str(change.current)
            kv["trading_state_reason"] = change.reason
            rows["state_changes"] = [change]
        return rows


def journaled_signals(signals: Sequence[Signal]) -> list[Signal]:
    """The signals the journal keeps: those with an opinion (confidence above 0; journal_rows
    inlines the same filter)."""
    return [s for s in signals if s.confidence > 0]
