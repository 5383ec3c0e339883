"""One batch of bars through the stages: store -> scorer -> strategy -> risk -> journal -> broker.

The decisions themselves live in strategy/kernel.py (shared with the backtest); this file adds what
only a live process has: the broker adapter, the journal, awaiting the scorer off the event loop,
log lines, latency figures and the crash-test failpoints.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Callable, Sequence
from datetime import date, datetime
from typing import TYPE_CHECKING

import msgspec
import structlog

from daemon.execution.base import ExecutionClient
from daemon.journal import Journal
from daemon.latency import LatencyRecorder, StageClock
from daemon.model.scoring import ScoredBatch, finish_off_loop, log_scored, score_off_loop
from daemon.model.shadow import ShadowRunner
from daemon.runtime import OrderPathPriority
from strategy.bars import BarStore, Window
from strategy.book import Book
from strategy.kernel import BatchDecision, BatchIntake, TradingKernel, journaled_signals
from strategy.risk import RiskEngine
from strategy.scoring import Scorer, rejection
from strategy.target_strategy import TargetStrategy
from strategy.types import Bar, Fill, Order, OrderEvent, OrderIntent, OrderStatus, Signal

if TYPE_CHECKING:
    from daemon.explain.worker import Explainer

log = structlog.get_logger("daemon.pipeline")

# Fault injection for the crash tests: kill -9 ourselves right after the Nth order is journaled
# (before the broker sees it), or right after the Nth order reached the broker (before the broker's
# answer is journaled). Both are the worst moments for a crash-only daemon.
_CRASH_AFTER_JOURNALED = int(os.environ.get("VLMTRADER_CRASH_AFTER_ORDERS_JOURNALED", "0") or 0)
_CRASH_AFTER_SUBMITTED = int(os.environ.get("VLMTRADER_CRASH_AFTER_ORDERS_SUBMITTED", "0") or 0)
_LOGGED_STATUSES = (OrderStatus.REJECTED, OrderStatus.CANCELLED)
# The laps of one batch (Pipeline.stage_clock): the order path up to the broker, then "after": what
# follows once the orders are out (deferred reasons, explanations, log lines).
ORDER_PATH_STAGES = ("venue", "intake", "windows", "score", "decide", "journal", "submit", "after")


class PipelineStats(msgspec.Struct, kw_only=True):
    """Running counters for /status, metrics and the benchmark."""

    batches: int = 0
    bars: int = 0
    bars_rejected: int = 0
    warm_up_bars: int = 0
    window_resets: int = 0
    signals: int = 0
    orders_submitted: int = 0
    risk_rejections: int = 0
    fills: int = 0
    last_bar_ts: datetime | None = None


class Pipeline:
    """The kernel plus the live adapters; the daemon calls on_bars() once per closed-bar batch."""

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
        self.kernel = TradingKernel(
            store=store,
            strategy=strategy,
            risk=risk,
            book=book,
            next_order_id=lambda: f"{order_prefix}-{journal.next_order_sequence()}",
        )
        self.scorer = scorer
        self.journal = journal
        self.execution = execution
        self.stats = PipelineStats()
        self.latency = LatencyRecorder()
        self.stage_clock = StageClock(ORDER_PATH_STAGES)
        self.busy_since: float | None = None
        # A scorer is not thread-safe (fusion and drift monitors hold state): /predict takes this too.
        self.score_lock = asyncio.Lock()
        # A live feed's receiving clock (bars far in its future are refused); None for replays.
        self.clock: Callable[[], datetime] | None = None
        self.shadow: ShadowRunner | None = None  # scores after the orders are out; never trades
        self.explainer: Explainer | None = None  # explains each order once it is at the broker
        # Real-time scheduling from a batch's arrival until its orders are out: off unless the
        # daemon enables it (see daemon/runtime.py for why, and what it needs).
        self.priority = OrderPathPriority(enabled=False)
        self._orders_journaled = 0

    # The kernel owns the state; these names are what the daemon, API and tests reach for.
    @property
    def store(self) -> BarStore:
        return self.kernel.store

    @property
    def strategy(self) -> TargetStrategy:
        return self.kernel.strategy

    @property
    def risk(self) -> RiskEngine:
        return self.kernel.risk

    @property
    def book(self) -> Book:
        return self.kernel.book

    @property
    def paused(self) -> bool:
        return self.kernel.paused

    @paused.setter
    def paused(self, value: bool) -> None:
        self.kernel.paused = value

    # ---- the hot path -----------------------------------------------------------------------
    async def on_bars(self, batch: Sequence[Bar]) -> list[Order]:
        """Process bars that closed at one timestamp; returns the orders sent to the broker."""
        arrived = time.perf_counter()
        self.busy_since = arrived
        self.priority.enter()
        try:
            return await self._on_bars(batch, arrived)
        finally:
            self.priority.leave()  # a no-op once the orders are out (left there already)
            self.busy_since = None

    async def _on_bars(self, batch: Sequence[Bar], arrived: float) -> list[Order]:
        if not batch:
            return []
        kernel, clock = self.kernel, self.stage_clock
        clock.start(arrived)
        intake = self._intake(batch, clock)
        windows = kernel.windows(intake.accepted)
        clock.lap("windows")
        scorer = self.scorer  # read once: a hot-swap lands between batches, never inside one
        scored = await self._score(scorer, windows)
        signals = scored.signals
        clock.lap("score")
        decision = kernel.decide(signals, intake.now)
        clock.lap("decide")
        # Write-ahead: the orders are committed before the broker sees them; the rest of the
        # batch is group-committed off the order path.
        deferred = scored.deferred is not None
        # deferred: the signals are journaled below, with their reasons, once the orders are out
        rows = kernel.journal_rows(intake, [] if deferred else signals, decision)
        journaled = False
        try:
            with self.journal.order_path():  # the journal's writer waits until the orders are out
                self.journal.record_orders_ahead(**rows)
                journaled = True
                clock.lap("journal")
                elapsed = await self._send(decision, arrived)
                clock.lap("submit")
                self.priority.leave()  # what follows waits for nothing the orders need
        except Exception:
            # The venue refused or failed: the batch's signals still reach the journal and the
            # monitors (drift, fusion's outcomes); the error goes on to the caller. A failed
            # journal write is not retried here: it raises as it is.
            if deferred and journaled:
                await self._finish_deferred(scorer, scored)
            raise
        self._log_sent(decision, elapsed)  # the orders are out (and the clock has lapped)
        if deferred:  # the top reasons and the drift update: nothing the orders wait for
            signals = await self._finish_deferred(scorer, scored)
        if self.explainer is not None:  # a put_nowait: the explaining runs in its own thread
            self.explainer.submit(
                scorer=scorer, evidence=scored.evidence, signals=signals, decision=decision
            )
        # Log lines are not on the order path: written once the orders are at the broker.
        self._log_intake(intake)
        self._log_signals(signals)
        self._log_rejections(decision)
        if windows:  # model.inferred (and charts.rendered) timings, then any drift crossing
            log_scored(scorer, scored)
        clock.lap("after")
        if self.shadow is not None and windows:
            await self._run_shadow(self.shadow, windows, signals)
        return decision.orders

    async def on_warm_up_bars(self, batch: Sequence[Bar]) -> None:
        """Bars that must not trade (backfilled, or too old): into the windows and marks, broker
        news applied and journaled like any batch, but nothing scored or decided."""
        if not batch:
            return
        self.stats.warm_up_bars += len(batch)
        intake = self._intake(batch)
        nothing = BatchDecision(decisions=[], orders=[], cancels=[])
        self.journal.record_orders_ahead(**self.kernel.journal_rows(intake, [], nothing))
        self._log_intake(intake)

    def _intake(self, batch: Sequence[Bar], clock: StageClock | None = None) -> BatchIntake:
        """The first half of any batch: broker news and bars into the book and windows."""
        kernel, stats = self.kernel, self.stats
        stats.batches += 1
        stats.bars += len(batch)
        stats.last_bar_ts = batch[0].ts
        self.execution.on_market_bars(batch)
        updates = self.execution.drain()
        if clock is not None:
            clock.lap("venue")
        day_before = kernel.book.day
        received = self.clock() if self.clock is not None else None
        intake = kernel.intake(batch, updates.events, updates.fills, received=received)
        if day_before is not None and kernel.book.day != day_before:
            self.record_daily_pnl(day_before, intake.now, equity=kernel.book.day_start_equity)
        if clock is not None:
            clock.lap("intake")
        return intake

    async def submit_intents(self, intents: Sequence[OrderIntent], now: datetime) -> list[Order]:
        """Operator-driven intents (flatten): the same risk -> journal -> broker path as a bar's."""
        arrived = time.perf_counter()
        decision = self.kernel.check(intents, now)
        self._log_rejections(decision)
        self.journal.record_orders_ahead(decisions=decision.decisions, orders=decision.orders)
        self._log_sent(decision, await self._send(decision, arrived))
        return decision.orders

    async def _finish_deferred(self, scorer: Scorer, scored: ScoredBatch) -> list[Signal]:
        """The deferred part of a batch's scoring (top reasons, monitor updates), journaled."""
        signals = await finish_off_loop(scorer, scored, self.score_lock)
        self.journal.record_orders_ahead(signals=journaled_signals(signals))
        return signals

    async def _score(self, scorer: Scorer, windows: Sequence[Window]) -> ScoredBatch:
        if not windows:
            return ScoredBatch(signals=[], scorer=scorer.name, seconds=0.0)
        # The top reasons (a second pass over the trees) and the drift update come after the orders.
        scored = await score_off_loop(
            scorer, windows, self.score_lock, defer_reasons=True, priority=self.priority
        )
        self.stats.signals += len(scored.signals)
        return scored

    async def _run_shadow(
        self, shadow: ShadowRunner, windows: Sequence[Window], live: Sequence[Signal]
    ) -> None:
        """The shadow scores the same windows; its signals are journaled and compared, never traded."""
        try:
            signals = await asyncio.to_thread(shadow.compare, windows, live)
            self.journal.record_orders_ahead(signals=journaled_signals(signals))
        except Exception as e:  # a shadow never stops trading
            shadow.failed()
            log.warning("shadow.failed", scorer=shadow.name, error=f"{type(e).__name__}: {e}"[:300])
            return
        log.debug(
            "shadow.scored",
            scorer=shadow.name,
            batch_signals=len(signals),
            **shadow.stats.summary(),
        )

    def _log_signals(self, signals: Sequence[Signal]) -> None:
        """Actionable signals (confident enough for the strategy) are decisions: one info line each.
        The rest are in the journal, and on the debug log."""
        threshold = self.kernel.strategy.config.min_confidence
        for s in signals:
            if s.confidence <= 0:
                if (why := rejection(s)) is not None:  # refused before any model: one line
                    log.warning("signal.rejected", symbol=s.symbol, bar_ts=s.ts.isoformat(),
                                scorer=s.scorer, reason=why)  # fmt: skip
                continue
            emit = log.info if s.confidence >= threshold else log.debug
            emit(
                "signal.scored",
                symbol=s.symbol,
                bar_ts=s.ts.isoformat(),
                p_up=round(s.p_up, 4),
                confidence=round(s.confidence, 4),
                scorer=s.scorer,
                reasons=list(s.reasons),
            )

    async def _send(self, decision: BatchDecision, arrived: float) -> float:
        """Cancels and orders to the broker; returns the orders' latency (seconds since the batch
        arrived). Their log lines are _log_sent's, once the caller's clock has lapped."""
        for coid in decision.cancels:
            await self.execution.cancel(coid)
        orders = decision.orders
        if not orders:
            return 0.0
        self._orders_journaled += len(orders)
        if _CRASH_AFTER_JOURNALED and self._orders_journaled >= _CRASH_AFTER_JOURNALED:
            os.kill(os.getpid(), signal.SIGKILL)
        await self.execution.submit(orders)
        if _CRASH_AFTER_SUBMITTED and self._orders_journaled >= _CRASH_AFTER_SUBMITTED:
            os.kill(os.getpid(), signal.SIGKILL)
        elapsed = time.perf_counter() - arrived
        for _ in orders:
            self.latency.add(elapsed)
        self.stats.orders_submitted += len(orders)
        return elapsed

    # ---- log lines: one per decision ------------------------------------------------------------
    def _log_sent(self, decision: BatchDecision, elapsed: float) -> None:
        """The cancel requests and one order.submitted line per order (latency_ms: _send's)."""
        self._log_cancels(decision)
        for order in decision.orders:
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

    def _log_cancels(self, decision: BatchDecision) -> None:
        for coid in decision.cancels:
            log.info("order.cancel_requested", client_order_id=coid)

    def _log_intake(self, intake: BatchIntake) -> None:
        self._log_updates(intake.events, intake.fills)
        self.stats.bars_rejected += len(intake.rejected)
        for problem in intake.rejected:
            log.warning(
                "bar.rejected",
                symbol=problem.symbol,
                bar_ts=problem.ts.isoformat(),
                reason=problem.reason,
                detail=problem.detail,
            )
        for reset in self.store.pop_resets():
            self.stats.window_resets += 1
            log.warning(
                "window.reset",
                symbol=reset.symbol,
                bar_ts=reset.ts.isoformat(),
                after=reset.after.isoformat() if reset.after else None,
                gap_bars=reset.missing_bars,
                policy=reset.policy,
            )
        change = intake.state_change
        if change is not None:
            log.warning(
                "trading_state.changed",
                previous=str(change.previous),
                current=str(change.current),
                reason=change.reason,
            )

    def _log_updates(self, events: Sequence[OrderEvent], fills: Sequence[Fill]) -> None:
        self.stats.fills += len(fills)
        for fill in fills:
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
            if event.status in _LOGGED_STATUSES:
                log.info(
                    "order.status_changed",
                    client_order_id=event.client_order_id,
                    status=str(event.status),
                    reason=event.reason,
                )

    def _log_rejections(self, decision: BatchDecision) -> None:
        for d in decision.rejections:
            self.stats.risk_rejections += 1
            intent = d.intent
            log.info(
                "risk.rejected",
                symbol=intent.symbol,
                reason=d.reason,
                detail=d.detail,
                side=str(intent.side),
                quantity=intent.quantity,
                confidence=round(intent.confidence, 4),
            )

    def record_daily_pnl(self, day: date, ts: datetime, *, equity: float | None = None) -> None:
        """Journal one trading day's P&L (at the day roll, and at shutdown for the day so far)."""
        book = self.book
        realized = sum(p.realized_pnl for p in book.positions.values())
        unrealized = sum(
            p.unrealized_pnl(book.last_prices.get(s, p.average_price))
            for s, p in book.positions.items()
        )
        value = book.equity() if equity is None else equity
        self.journal.record_daily_pnl(
            day=day, equity=value, realized=realized, unrealized=unrealized, ts=ts
        )
        log.info(
            "pnl.recorded",
            day=day.isoformat(),
            equity=round(value, 2),
            realized=round(realized, 2),
            unrealized=round(unrealized, 2),
        )

    # ---- broker updates outside a batch ---------------------------------------------------------
    async def cancel_open_orders(self, *, wait_seconds: float) -> tuple[int, list[str]]:
        """Cancel every working order and wait, at most wait_seconds, until the broker confirms
        each; journal what it reported. Returns (cancels requested, orders still unconfirmed)."""
        coids = list(self.book.open_orders)
        for coid in coids:
            await self.execution.cancel(coid)
            log.info("order.cancel_requested", client_order_id=coid, reason="shutdown")
        wait_for_updates = getattr(self.execution, "wait_for_updates", None)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_seconds
        news = True
        while True:
            self.flush_broker_updates()
            pending = [c for c in coids if c in self.book.open_orders]
            left = deadline - loop.time()
            if not (pending and news and left > 0 and wait_for_updates is not None):
                return len(coids), pending
            news = await wait_for_updates(left)  # False: timed out, or the broker is gone

    def flush_broker_updates(self) -> None:
        """Journal whatever the broker reported outside a bar batch (shutdown, cancels)."""
        updates = self.execution.drain()
        events, fills = self.kernel.apply_updates(updates.events, updates.fills)
        self._log_updates(events, fills)
        if events or fills:
            self.journal.record_orders_ahead(
                order_events=events,
                fills=fills,
                positions=[self.book.positions[f.symbol] for f in fills],
                kv={"cash": repr(self.book.cash)},
            )
