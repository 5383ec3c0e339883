"""One batch of bars through the stages: store -> scorer -> strategy -> risk -> journal -> broker."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Sequence
from datetime import datetime

import msgspec
import structlog

from daemon.execution.base import BrokerUpdates, ExecutionClient
from daemon.journal import Journal
from daemon.latency import LatencyRecorder
from strategy.bars import BarRejected, BarStore
from strategy.book import Book
from strategy.risk import RiskEngine, TradingStateChange
from strategy.scoring import Scorer
from strategy.target_strategy import TargetStrategy
from strategy.types import Bar, Order, OrderEvent, OrderIntent, OrderStatus, RiskDecision, Signal

log = structlog.get_logger("daemon.pipeline")

# Fault injection for the crash tests: kill -9 ourselves right after the Nth order is journaled
# (before the broker sees it), or right after the Nth order reached the broker (before the broker's
# answer is journaled). Both are the worst moments for a crash-only daemon.
_CRASH_AFTER_JOURNALED = int(os.environ.get("VLMTRADER_CRASH_AFTER_ORDERS_JOURNALED", "0") or 0)
_CRASH_AFTER_SUBMITTED = int(os.environ.get("VLMTRADER_CRASH_AFTER_ORDERS_SUBMITTED", "0") or 0)


class PipelineStats(msgspec.Struct, kw_only=True):
    """Running counters for /status, metrics and the benchmark."""

    batches: int = 0
    bars: int = 0
    bars_rejected: int = 0
    signals: int = 0
    orders_submitted: int = 0
    risk_rejections: int = 0
    fills: int = 0
    last_bar_ts: datetime | None = None


class Pipeline:
    """Owns the book and the engines; the daemon calls on_bars() once per closed-bar batch."""

    def __init__(
        self,
        *,
        store: BarStore,
        scorer: Scorer,
        strategy: TargetStrategy,
        risk: RiskEngine,
        book: Book,
        journal: Journal,
        execution: ExecutionClient,
        order_prefix: str = "VT",
    ) -> None:
        self.store = store
        self.scorer = scorer
        self.strategy = strategy
        self.risk = risk
        self.book = book
        self.journal = journal
        self.execution = execution
        self.order_prefix = order_prefix
        self.stats = PipelineStats()
        self.latency = LatencyRecorder()
        self.paused = False
        self.busy_since: float | None = None
        self._orders_journaled = 0

    # ---- the hot path -----------------------------------------------------------------------
    async def on_bars(self, batch: Sequence[Bar]) -> list[Order]:
        """Process bars that closed at one timestamp; returns the orders sent to the broker."""
        arrived = time.perf_counter()
        self.busy_since = arrived
        try:
            return await self._on_bars(batch, arrived)
        finally:
            self.busy_since = None

    async def _on_bars(self, batch: Sequence[Bar], arrived: float) -> list[Order]:
        if not batch:
            return []
        now = batch[0].ts
        self.stats.batches += 1
        self.stats.bars += len(batch)
        self.stats.last_bar_ts = now

        self.execution.on_market_bars(batch)
        events, fills = self._apply_updates(self.execution.drain())

        rejected: list[BarRejected] = []
        accepted: list[str] = []
        for bar in batch:
            problem = self.store.add(bar)
            if problem is None:
                self.book.mark(bar)
                accepted.append(bar.symbol)
            else:
                rejected.append(problem)
                log.warning(
                    "bar.rejected",
                    symbol=problem.symbol,
                    bar_ts=_iso(problem.ts),
                    reason=problem.reason,
                    detail=problem.detail,
                )
        self.stats.bars_rejected += len(rejected)

        state_change = self.risk.update(self.book, now)
        if state_change is not None:
            log.warning(
                "trading_state.changed",
                previous=str(state_change.previous),
                current=str(state_change.current),
                reason=state_change.reason,
            )

        signals = await self._score(accepted)
        intents = [] if self.paused else self.strategy.on_signals(signals, self.book)
        decisions, orders, cancels = self._decide(intents, now)

        self.journal.record(
            bars_rejected=rejected,
            signals=[s for s in signals if s.confidence > 0],
            decisions=decisions,
            orders=orders,
            order_events=events,
            fills=fills,
            positions=[self.book.positions[f.symbol] for f in fills],
            state_changes=[state_change] if state_change is not None else [],
            kv=self._kv(now, state_change),
        )
        await self._send(orders, cancels, arrived)
        return orders

    async def submit_intents(self, intents: Sequence[OrderIntent], now: datetime) -> list[Order]:
        """Operator-driven intents (flatten): the same risk -> journal -> broker path as a bar's."""
        arrived = time.perf_counter()
        decisions, orders, cancels = self._decide(intents, now)
        self.journal.record(decisions=decisions, orders=orders)
        await self._send(orders, cancels, arrived)
        return orders

    def _kv(self, now: datetime, change: TradingStateChange | None) -> dict[str, str]:
        kv = {
            "last_bar_ts": now.isoformat(),
            "cash": repr(self.book.cash),
            "peak_equity": repr(self.book.peak_equity),
        }
        if change is not None:
            kv["trading_state"] = str(change.current)
            kv["trading_state_reason"] = change.reason
        return kv

    async def _send(self, orders: Sequence[Order], cancels: Sequence[str], arrived: float) -> None:
        for coid in cancels:
            await self.execution.cancel(coid)
            log.info("order.cancel_requested", client_order_id=coid)
        if not orders:
            return
        self._orders_journaled += len(orders)
        if _CRASH_AFTER_JOURNALED and self._orders_journaled >= _CRASH_AFTER_JOURNALED:
            os.kill(os.getpid(), signal.SIGKILL)
        await self.execution.submit(orders)
        if _CRASH_AFTER_SUBMITTED and self._orders_journaled >= _CRASH_AFTER_SUBMITTED:
            os.kill(os.getpid(), signal.SIGKILL)
        elapsed = time.perf_counter() - arrived
        for order in orders:
            self.latency.add(elapsed)
            log.info(
                "order.submitted",
                symbol=order.symbol,
                client_order_id=order.client_order_id,
                side=str(order.side),
                quantity=order.quantity,
                order_type=str(order.order_type),
                reason=order.reason,
                latency_ms=round(elapsed * 1000, 3),
            )
        self.stats.orders_submitted += len(orders)

    async def _score(self, symbols: Sequence[str]) -> list[Signal]:
        windows = [w for w in (self.store.window(s) for s in symbols) if w is not None]
        if not windows:
            return []
        if self.scorer.blocking:
            signals = await asyncio.to_thread(self.scorer.score, windows)
        else:
            signals = self.scorer.score(windows)
        self.stats.signals += len(signals)
        for s in signals:
            if s.confidence > 0:
                # Debug: every signal is in the journal; the info lines are the decisions it led to.
                log.debug(
                    "signal.scored",
                    symbol=s.symbol,
                    bar_ts=s.ts.isoformat(),
                    p_up=round(s.p_up, 4),
                    confidence=round(s.confidence, 4),
                    scorer=s.scorer,
                    reasons=list(s.reasons),
                )
        return signals

    def _decide(
        self, intents: Sequence[OrderIntent], now: datetime
    ) -> tuple[list[RiskDecision], list[Order], list[str]]:
        decisions: list[RiskDecision] = []
        orders: list[Order] = []
        cancels: list[str] = []
        for intent in intents:
            decision = self.risk.check(intent, self.book, now)
            decisions.append(decision)
            if not decision.accepted:
                self.stats.risk_rejections += 1
                log.info(
                    "risk.rejected",
                    symbol=intent.symbol,
                    reason=decision.reason,
                    detail=decision.detail,
                    side=str(intent.side),
                    quantity=intent.quantity,
                )
                continue
            if intent.is_cancel:
                if intent.cancel_client_order_id is not None:
                    cancels.append(intent.cancel_client_order_id)
                continue
            order = Order(
                client_order_id=f"{self.order_prefix}-{self.journal.next_order_sequence()}",
                symbol=intent.symbol,
                side=intent.side,
                quantity=intent.quantity,
                order_type=intent.order_type,
                limit_price=intent.limit_price,
                created_ts=now,
                reason=intent.reason,
            )
            self.book.add_order(order)
            orders.append(order)
        return decisions, orders, cancels

    # ---- broker updates -----------------------------------------------------------------------
    def _apply_updates(
        self, updates: BrokerUpdates
    ) -> tuple[list[OrderEvent], list[msgspec.Struct]]:
        events = list(updates.events)
        fills = []
        for fill in updates.fills:
            if self.book.apply_fill(fill) is not None:
                fills.append(fill)
                self.stats.fills += 1
                log.info(
                    "order.filled",
                    symbol=fill.symbol,
                    client_order_id=fill.client_order_id,
                    side=str(fill.side),
                    quantity=fill.quantity,
                    price=fill.price,
                    commission=fill.commission,
                    fill_id=fill.fill_id,
                )
        for event in events:
            order = self.book.apply_order_event(event)
            if event.status in (OrderStatus.REJECTED, OrderStatus.CANCELLED):
                log.info(
                    "order.status_changed",
                    client_order_id=event.client_order_id,
                    status=str(event.status),
                    reason=event.reason,
                    symbol=order.symbol if order else None,
                )
        return events, fills

    def flush_broker_updates(self) -> None:
        """Journal whatever the broker reported outside a bar batch (shutdown, cancels)."""
        events, fills = self._apply_updates(self.execution.drain())
        if events or fills:
            self.journal.record(
                order_events=events,
                fills=fills,
                positions=[self.book.positions[f.symbol] for f in fills],  # type: ignore[attr-defined]
                kv={"cash": repr(self.book.cash)},
            )


def _iso(ts: datetime | None) -> str | None:
    return ts.isoformat() if ts is not None else None
