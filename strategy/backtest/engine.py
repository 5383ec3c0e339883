"""The backtest: the live pipeline's stages (BarStore, Scorer, TargetStrategy, RiskEngine, SimBroker,
Book) driven by historical bars on a virtual clock, writing the same journal payloads.

`BacktestEngine.on_bars(batch)` is daemon/pipeline.py's `on_bars` without the asyncio, logging and
fault injection: the broker sees the bars first, its updates are applied to the book, bars are
stored and marked, the risk engine's state is updated, the scorer scores the windows that closed,
the strategy turns signals into intents, the risk engine checks each, accepted intents become
orders, everything is handed to the journal sink in one `record_orders_ahead(...)` call (the
daemon's write-ahead path: orders committed before the venue sees them, the rest group-committed
off the path), and the orders go to the simulated venue. With the daemon's Journal as the sink,
the rows are the daemon's rows.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Protocol

import msgspec

from strategy.backtest.engine_types import BacktestConfig as BacktestConfig
from strategy.backtest.engine_types import BacktestRun as BacktestRun
from strategy.bars import BarStore
from strategy.book import Book
from strategy.kernel import TradingKernel
from strategy.risk import RiskEngine
from strategy.scoring import Scorer
from strategy.sim_broker import SimBroker, SimBrokerConfig
from strategy.target_strategy import TargetStrategy
from strategy.types import Bar, Fill, Order, OrderEvent, Position, RiskDecision, Signal


class JournalSink(Protocol):
    """Receives one batch's rows; daemon.journal.Journal.record_orders_ahead has this signature."""

    def record_orders_ahead(
        self,
        *,
        bars_rejected: Iterable[msgspec.Struct] = (),
        signals: Iterable[Signal] = (),
        decisions: Iterable[RiskDecision] = (),
        orders: Iterable[Order] = (),
        order_events: Iterable[OrderEvent] = (),
        fills: Iterable[Fill] = (),
        positions: Iterable[Position] = (),
        state_changes: Iterable[msgspec.Struct] = (),
        kv: Mapping[str, str | datetime] | None = None,  # a datetime is stored as its isoformat()
    ) -> None: ...


class SimVenue:
    """An in-memory SimBroker behind the calls the pipeline makes; same event order as PaperExecution."""

    def __init__(self, *, config: SimBrokerConfig) -> None:
        self.broker = SimBroker(config=config)
        self._events: list[OrderEvent] = []
        self._fills: list[Fill] = []
        self._clock: datetime | None = None

    def submit(self, orders: Sequence[Order]) -> None:
        for order in orders:
            now = order.created_ts if self._clock is None else max(self._clock, order.created_ts)
            self._events.extend(self.broker.submit(order, now))
            events, fills = self.broker.flush()
            self._events.extend(events)
            self._fills.extend(fills)

    def on_market_bars(self, bars: Sequence[Bar]) -> tuple[Sequence[OrderEvent], Sequence[Fill]]:
        """Match the bars; returns the venue's news since the last call, submit's included
        (what PaperExecution's bars then drain give), in one call per batch."""
        matched = self.broker.on_bars(bars)
        latest = matched.latest
        if latest is not None and (self._clock is None or latest > self._clock):
            self._clock = latest
        events, fills = self._events, self._fills
        if not (events or fills or matched.events or matched.fills):  # most batches: no news
            return (), ()
        events.extend(matched.events)
        fills.extend(matched.fills)
        self._events, self._fills = [], []
        return events, fills


class LookupScorer(Protocol):
    """A scorer whose signals are already known by (symbol, bar close epoch seconds)."""

    name: str

    def lookup(self, symbol: str, ts: int) -> Signal | None: ...


class BacktestEngine:
    """Runs the live stages over bar batches; one instance per run."""

    def __init__(
        self,
        *,
        config: BacktestConfig,
        scorer: Scorer | LookupScorer,
        journal: JournalSink | None = None,
        name: str | None = None,
    ) -> None:
        self.config = config
        self.scorer = scorer
        self.journal = journal
        self._sequence = 0
        self.kernel = TradingKernel(
            store=BarStore(config=config.bars),
            strategy=TargetStrategy(config=config.strategy),
            risk=RiskEngine(config=config.risk),
            book=Book(starting_cash=config.starting_cash),
            next_order_id=self._next_order_id,
        )
        self.store = self.kernel.store
        self.book = self.kernel.book
        self.strategy = self.kernel.strategy
        self.risk = self.kernel.risk
        self.venue = SimVenue(config=config.broker)
        self.run = BacktestRun(name=name or scorer.name)
        self._window = config.bars.window
        strategy = config.strategy  # its entry rule: p_up at or over high / under low, confident
        self._entry_rule = (
            strategy.enter_threshold,
            1.0 - strategy.enter_threshold,
            strategy.min_confidence,
        )
        self._lookup: Callable[[str, int], Signal | None] | None = getattr(scorer, "lookup", None)

    def _next_order_id(self) -> str:
        self._sequence += 1
        return f"{self.config.order_prefix}-{self._sequence}"

    # ---- warm-up ----------------------------------------------------------------------------
    def backfill(self, batch: Sequence[Bar]) -> None:
        """Store and mark bars without trading (the daemon's backfill before it goes live)."""
        self.kernel.backfill(batch)

    # ---- one batch: the same kernel calls as daemon.pipeline.Pipeline._on_bars ----------------
    def on_bars(self, batch: Sequence[Bar]) -> list[Order]:
        """Process bars that closed at one timestamp; returns the orders sent to the venue."""
        if not batch:
            return []
        kernel, run = self.kernel, self.run
        events, fills = self.venue.on_market_bars(batch)
        intake = kernel.intake(batch, events, fills)
        if intake.fills:
            run.fills.extend(intake.fills)
        if intake.rejected:
            run.bars_rejected += len(intake.rejected)
        if intake.state_change is not None:
            run.state_changes.append(intake.state_change)
        signals = self._score(intake.accepted, intake.now)
        decision = kernel.decide(signals, intake.now)
        if decision.decisions:
            run.decisions += len(decision.decisions)
            rejections = decision.rejections
            run.risk_rejections += len(rejections)
            for rejected in rejections:
                run.rejections[rejected.reason] = run.rejections.get(rejected.reason, 0) + 1
        if self.journal is not None:
            self.journal.record_orders_ahead(**kernel.journal_rows(intake, signals, decision))
        if decision.orders:
            self.venue.submit(decision.orders)
            run.orders.extend(decision.orders)
        book = self.book
        run.ts.append(self.store.epoch(intake.now))
        run.equity.append(book.equity())
        run.exposure.append(book.gross_exposure())
        return decision.orders

    def _score(self, symbols: Sequence[str], now: datetime) -> list[Signal]:
        lookup = self._lookup
        if lookup is not None:
            ts = int(now.timestamp())
            found = [lookup(s, ts) for s in symbols if self.store.count(s) >= self._window]
            signals = [s for s in found if s is not None]
        else:
            windows = self.store.full_windows(symbols)
            if not windows:
                return []
            signals = self.scorer.score(windows)  # type: ignore[union-attr]
        run = self.run
        run.signals += len(signals)
        high, low, confident = self._entry_rule
        max_edge, max_confidence, cleared = run.max_edge, run.max_confidence, 0
        for s in signals:
            p, c = s.p_up, s.confidence
            edge = abs(2.0 * p - 1.0)
            if edge > max_edge:
                max_edge = edge
            if c > max_confidence:
                max_confidence = c
            if c >= confident and (p >= high or p <= low):
                cleared += 1
        run.max_edge, run.max_confidence = max_edge, max_confidence
        run.signals_cleared += cleared
        return signals

    # ---- a whole run --------------------------------------------------------------------------
    def run_batches(
        self,
        batches: Iterable[Sequence[Bar]],
        *,
        trade_from: datetime | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> BacktestRun:
        """Backfill batches before trade_from, trade the rest; progress(n_bars) after each batch."""
        for batch in batches:
            if trade_from is not None and batch and batch[0].ts < trade_from:
                self.backfill(batch)
            else:
                self.on_bars(batch)
            if progress is not None:
                progress(len(batch))
        self.run.sizing_misses = self.strategy.sizing_misses
        self.run.last_sizing_miss = self.strategy.last_sizing_miss
        self.run.last_prices = dict(self.book.last_prices)
        return self.run
