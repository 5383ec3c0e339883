"""The daemon, wired in one file: feed -> pipeline -> broker, with signals, watchdog and shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import structlog

from daemon.config import AppConfig, load_config
from daemon.errors import EXIT_CONFIG, EXIT_CRASH, EXIT_OK, ConfigError
from daemon.execution.paper import PaperExecution
from daemon.feeds.replay import ReplayFeed
from daemon.feeds.sim import SimFeed
from daemon.journal import Journal
from daemon.notify import Notifier, watchdog_interval_seconds
from daemon.pipeline import Pipeline
from daemon.reconcile import reconcile, restore_book
from strategy.bars import BarStore
from strategy.risk import RiskEngine
from strategy.rule_scorer import RuleScorer
from strategy.scoring import Scorer
from strategy.target_strategy import TargetStrategy
from strategy.types import Bar, TradingState

log = structlog.get_logger("daemon.app")


def build_scorer(cfg: AppConfig) -> Scorer:
    return RuleScorer(config=cfg.scorer.rules)


def _sim_start(cfg: AppConfig, journal: Journal) -> datetime:
    """First simulated bar close; stable across restarts so the market resumes where it stopped."""
    stored = journal.get("sim_start")
    if stored is not None:
        return datetime.fromisoformat(stored)
    if cfg.feed.sim.start is not None:
        start = cfg.feed.sim.start
    else:
        step = cfg.bars.bar_seconds
        now = int(time.time()) // step * step
        start = datetime.fromtimestamp(now, tz=UTC) - timedelta(seconds=step * (cfg.bars.window - 1))
    journal.record(kv={"sim_start": start.isoformat()})
    return start


class Daemon:
    """Holds the running pieces so signal handlers and the API can reach them."""

    def __init__(self, cfg: AppConfig, *, config_path: Path | None = None) -> None:
        self.cfg = cfg
        self.config_path = config_path
        self.stopping = asyncio.Event()
        self.notifier = Notifier()
        self.pipeline: Pipeline | None = None
        self._consumer: asyncio.Task[None] | None = None
        self.ready = False

    # ---- lifecycle ----------------------------------------------------------------------------
    async def run(self) -> int:
        cfg = self.cfg
        state_dir = Path(cfg.state_dir)
        state_dir.mkdir(parents=True, exist_ok=True)
        journal = Journal(cfg.state_path(cfg.journal.path), synchronous=cfg.journal.synchronous)
        journal.open()
        try:
            return await self._run_with(journal, state_dir)
        finally:
            journal.close()

    async def _run_with(self, journal: Journal, state_dir: Path) -> int:
        cfg = self.cfg
        book = restore_book(journal, starting_cash=cfg.starting_cash)
        execution = PaperExecution(config=cfg.broker, path=state_dir / "paper_venue.sqlite")
        with execution:
            report = reconcile(journal, book, await execution.broker_view(), now=datetime.now(UTC))
            pipeline = Pipeline(
                store=BarStore(config=cfg.bars),
                scorer=build_scorer(cfg),
                strategy=TargetStrategy(config=cfg.strategy),
                risk=RiskEngine(config=cfg.risk),
                book=book,
                journal=journal,
                execution=execution,
                order_prefix=cfg.account.upper()[:8] or "VT",
            )
            self.pipeline = pipeline
            if report.position_mismatches:
                pipeline.risk.set_state(TradingState.HALTED, "position_mismatch_at_start", datetime.now(UTC))
            last = journal.get("last_bar_ts")
            resume_after = datetime.fromisoformat(last) if last else None
            async with self._open_feed(journal) as (feed, warm_up_until):
                resume = resume_after or warm_up_until
                for batch in await feed.backfill(cfg.bars.window, before=resume):
                    for bar in batch:
                        if pipeline.store.add(bar) is None:
                            pipeline.book.mark(bar)
                self._install_signal_handlers()
                self.ready = True
                self.notifier.ready(status="trading")
                log.info("daemon.ready", mode=cfg.mode, account=cfg.account,
                         resume_after=resume.isoformat(), open_orders=len(book.open_orders),
                         positions={s: p.quantity for s, p in book.positions.items() if p.quantity})
                async with asyncio.TaskGroup() as tg:
                    watchdog = tg.create_task(self._watchdog())
                    self._consumer = tg.create_task(self._consume(feed.closed_bars(resume_after=resume)))
                    await self._wait_consumer()
                    watchdog.cancel()
            await self._shutdown(pipeline, journal)
        return EXIT_OK

    @contextlib.asynccontextmanager
    async def _open_feed(self, journal: Journal) -> AsyncIterator[tuple[SimFeed | ReplayFeed, datetime]]:
        cfg = self.cfg
        if cfg.feed.kind == "replay" and cfg.feed.replay is not None:
            feed: SimFeed | ReplayFeed = ReplayFeed(config=cfg.feed.replay)
            async with feed:
                yield feed, feed.first_ts() - timedelta(seconds=1)
            return
        start = _sim_start(cfg, journal)
        sim = SimFeed(config=cfg.feed.sim, start=start)
        async with sim:
            yield sim, start + timedelta(seconds=cfg.bars.bar_seconds * (cfg.bars.window - 1))

    async def _consume(self, batches: AsyncIterator[list[Bar]]) -> None:
        assert self.pipeline is not None
        async for batch in batches:
            await self.pipeline.on_bars(batch)
            if self.stopping.is_set():
                break
        log.info("feed.ended")

    async def _wait_consumer(self) -> None:
        assert self._consumer is not None
        with contextlib.suppress(asyncio.CancelledError):
            await self._consumer

    async def _watchdog(self) -> None:
        interval = watchdog_interval_seconds()
        if interval is None:
            return
        while True:
            busy = self.pipeline.busy_since if self.pipeline else None
            if busy is None or time.perf_counter() - busy < interval * 2:
                self.notifier.watchdog()
            else:
                log.error("daemon.unhealthy", busy_seconds=round(time.perf_counter() - busy, 3))
            await asyncio.sleep(interval)

    async def _shutdown(self, pipeline: Pipeline, journal: Journal) -> None:
        self.notifier.stopping()
        pipeline.paused = True
        cancelled = 0
        if self.cfg.shutdown.cancel_open_orders:
            for coid in list(pipeline.book.open_orders):
                await pipeline.execution.cancel(coid)
                cancelled += 1
        pipeline.flush_broker_updates()
        book = pipeline.book
        if book.day is not None:
            journal.record_daily_pnl(
                day=book.day, equity=book.equity(),
                realized=sum(p.realized_pnl for p in book.positions.values()),
                unrealized=sum(p.unrealized_pnl(book.last_prices.get(s, p.average_price))
                               for s, p in book.positions.items()),
                ts=pipeline.stats.last_bar_ts or datetime.now(UTC),
            )
        log.info("daemon.stopped", cancelled_orders=cancelled, bars=pipeline.stats.bars,
                 orders=pipeline.stats.orders_submitted, fills=pipeline.stats.fills,
                 equity=round(book.equity(), 2))

    # ---- signals ------------------------------------------------------------------------------
    def _install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop, sig.name)
        loop.add_signal_handler(signal.SIGHUP, self.reload_strategy)

    def request_stop(self, reason: str = "request") -> None:
        """Stop taking new bars; a batch in flight finishes before shutdown."""
        if self.stopping.is_set():
            return
        log.info("daemon.stopping", reason=reason)
        self.stopping.set()
        if self._consumer is not None and (self.pipeline is None or self.pipeline.busy_since is None):
            self._consumer.cancel()

    def reload_strategy(self) -> None:
        """SIGHUP: re-read the config file; apply strategy, risk and scorer settings if valid."""
        if self.config_path is None or self.pipeline is None:
            return
        try:
            new = load_config(self.config_path)
        except ConfigError as e:
            log.error("config.reload_failed", error=str(e))
            return
        p = self.pipeline
        p.strategy.reconfigure(new.strategy)
        p.risk.reconfigure(new.risk)
        p.scorer = build_scorer(new)
        self.cfg = new
        log.info("config.reloaded", path=str(self.config_path))


def run(cfg: AppConfig, *, config_path: Path | None = None) -> int:
    """Run the daemon on uvloop until SIGTERM/SIGINT; returns the process exit code."""
    try:
        import uvloop

        runner = uvloop.run
    except ImportError:  # pragma: no cover - uvloop is a hard dependency on Linux
        runner = asyncio.run
    daemon = Daemon(cfg, config_path=config_path)
    try:
        return runner(daemon.run())
    except ConfigError as e:
        log.error("config.invalid", error=str(e))
        return EXIT_CONFIG
    except Exception as e:
        log.exception("daemon.crashed", error=str(e))
        return EXIT_CRASH
