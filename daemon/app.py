"""The daemon, wired in one file: feed -> pipeline -> broker, with control, telemetry and shutdown.

Start-up steps live in daemon/startup.py, a config reload in daemon/reload.py, and what operator
commands do in daemon/operator_actions.py; the Daemon here holds the running pieces and their
lifecycle."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog

import strategy
from daemon import operator_actions, trade_gate
from daemon.api.live import LiveHub
from daemon.api.metrics import Metrics
from daemon.bus.publisher import MqttBus
from daemon.config import AppConfig
from daemon.control import Controller
from daemon.errors import EXIT_CONFIG, EXIT_CRASH, EXIT_OK, ConfigError, InputError, StorageError
from daemon.explain.worker import Explainer
from daemon.feeds.feed import Feed
from daemon.journal import Journal
from daemon.log_setup import add_event_sink, remove_event_sink
from daemon.model.slot import ModelSlot, daemon_slot
from daemon.notify import Notifier, watchdog_interval_seconds
from daemon.pipeline import Pipeline
from daemon.reconcile import reconcile, restore_book
from daemon.reload import apply_reload
from daemon.reload_plan import ReloadReport
from daemon.runtime import OrderPathPriority, tune_gc
from daemon.startup import (
    halt_when_unreconciled,
    open_execution,
    open_feed,
    open_journal,
    restore_trading_state,
    warm_up,
)
from daemon.storage import first_cause, storage_failed
from daemon.supervisor import TaskHealth, describe
from strategy.bars import BarStore
from strategy.risk import RiskEngine
from strategy.target_strategy import TargetStrategy
from strategy.types import Bar, TradingState

log = structlog.get_logger("daemon.app")


class Daemon:
    """Holds the running pieces; implements daemon.control.DaemonControl for MQTT and HTTP."""

    def __init__(self, cfg: AppConfig, *, config_path: Path | None = None) -> None:
        self.cfg = cfg
        self.config_path = config_path
        self.stopping = asyncio.Event()
        self.notifier = Notifier()
        self.pipeline: Pipeline | None = None
        self.journal: Journal | None = None
        self.scorers: ModelSlot | None = None
        self.feed: Feed | None = None
        self._consumer: asyncio.Task[None] | None = None
        self._generation = 0
        self.ready = False
        self.health = TaskHealth()
        self._reload_lock = asyncio.Lock()
        self._reload_task: asyncio.Task[None] | None = None
        self.last_reload: ReloadReport | None = None
        self.live: LiveHub | None = None  # the dashboard's live view (with the HTTP API)

    # ---- lifecycle ----------------------------------------------------------------------------
    async def run(self) -> int:
        log.info("core.native", **strategy.NATIVE.fields())
        cfg = self.cfg
        state_dir = Path(cfg.state_dir)
        journal = open_journal(cfg)
        self.journal = journal
        metrics = Metrics()
        add_event_sink(metrics.on_event)
        try:
            async with contextlib.AsyncExitStack() as stack:
                return await self._run_with(stack, journal, state_dir, metrics)
        finally:
            remove_event_sink(metrics.on_event)
            journal.close()

    async def _run_with(
        self, stack: contextlib.AsyncExitStack, journal: Journal, state_dir: Path, metrics: Metrics
    ) -> int:
        cfg = self.cfg
        book = restore_book(journal, starting_cash=cfg.starting_cash)
        feed, warm_up_until = await stack.enter_async_context(open_feed(cfg, journal))
        self.feed = feed
        execution = await stack.enter_async_context(open_execution(cfg, feed, state_dir))
        view = await execution.broker_view()
        # A journal without trading history adopts the broker's state here, before any order.
        report = reconcile(journal, book, view, now=datetime.now(UTC), adopt=True)
        self._generation = getattr(execution, "generation", 0)

        scorers = self.scorers = daemon_slot(cfg)
        pipeline = Pipeline(
            store=BarStore(config=cfg.bars),
            scorer=self.scorers.current,
            strategy=TargetStrategy(config=cfg.strategy),
            risk=RiskEngine(config=cfg.risk),
            book=book,
            journal=journal,
            execution=execution,
            order_prefix=cfg.account.upper()[:8] or "VT",
        )
        pipeline.priority = OrderPathPriority(enabled=cfg.order_path_priority == "realtime")
        self.pipeline = pipeline
        if cfg.feed.kind in ("ib", "mqtt"):  # live bars: one stamped far in the future is refused
            pipeline.clock = lambda: datetime.now(UTC)
        self.scorers.attach(pipeline)
        pipeline.explainer = stack.enter_context(
            Explainer(
                config=cfg.explain,
                state_dir=state_dir,
                bundle_for=scorers.bundle_for,
                busy=lambda: pipeline.busy_since is not None,
            )
        )
        restore_trading_state(pipeline, journal)
        halt_when_unreconciled(pipeline, report)

        metrics.track_trading_state(lambda: pipeline.risk.state)  # from start, not first change
        metrics.track_shadow(self.scorers.shadow_stats)  # a shadow loads with the bundle (start)
        controller = Controller(control=self, max_command_bytes=cfg.mqtt.max_command_bytes)
        metrics.track_tasks(self.health)
        if cfg.mqtt.enabled:
            bus = await stack.enter_async_context(
                MqttBus(
                    config=cfg.mqtt,
                    account=cfg.account,
                    controller=controller,
                    status=self.status,
                    health=self.health,
                )
            )
            metrics.add_queue("mqtt", lambda: bus.queue_depth)
            metrics.track_bus(lambda: bus.stats, lambda: bus.connected)
        if cfg.api.enabled:
            # The HTTP API's modules (FastAPI, uvicorn: 0.2-0.3 s of imports) load only when it is on.
            from daemon.api.app import build_app
            from daemon.api.auth import token_from_env
            from daemon.api.server import ApiServer
            from daemon.model.predict import ModelPredictor
            from daemon.model.search import DaemonSearch

            predictor = ModelPredictor(slot=self.scorers, lock=pipeline.score_lock)
            if cfg.api.dashboard:
                self.live = LiveHub(
                    queue_size=cfg.api.events_queue,
                    max_clients=cfg.api.events_clients,
                    bars_per_symbol=cfg.api.chart_bars,
                    equity_points=cfg.api.equity_points,
                )
            app = build_app(
                controller=controller,
                metrics=metrics,
                predictor=predictor,
                token=token_from_env(cfg.api.token_env),
                config=cfg.api,
                state_dir=state_dir,
                analogs=scorers.analogs,
                searcher=DaemonSearch(
                    slot=self.scorers, store=pipeline.store, lock=pipeline.score_lock
                ),
                live=self.live,
                journal_path=journal.path,
            )
            await stack.enter_async_context(ApiServer(config=cfg.api, app=app, health=self.health))
            if self.live is not None:  # entered after the server: on stop, its streams end first
                await stack.enter_async_context(self.live)

        resume = await warm_up(cfg, pipeline, journal, feed, warm_up_until, view.clock)
        if self.live is not None:  # the charts start with the bars warm-up loaded
            self.live.seed(pipeline.store)
        await self.scorers.start(stack)
        self._install_signal_handlers()
        tune_gc()
        self.ready = True
        self.notifier.ready(status="trading")
        log.info(
            "daemon.ready",
            mode=cfg.mode,
            account=cfg.account,
            scorer=pipeline.scorer.name,
            resume_after=resume.isoformat(),
            open_orders=len(book.open_orders),
            positions={s: p.quantity for s, p in book.positions.items() if p.quantity},
        )
        async with asyncio.TaskGroup() as tg:
            watchdog = tg.create_task(self._watchdog())
            self._consumer = tg.create_task(self._consume(feed.closed_bars(resume_after=resume)))
            await self._wait_consumer()
            watchdog.cancel()
        await self._shutdown(pipeline)
        return EXIT_OK

    async def _consume(self, batches: AsyncIterator[list[Bar]]) -> None:
        assert self.pipeline is not None
        pipeline = self.pipeline
        # A broker feed's backfilled or old bars only warm the windows (daemon/trade_gate.py).
        gated = self._trade_gate()
        async for batch in batches:
            generation = getattr(pipeline.execution, "generation", 0)
            if generation != self._generation:
                # The broker connection was re-established: reconcile before trading on.
                self._generation = generation
                report = reconcile(
                    pipeline.journal,
                    pipeline.book,
                    await pipeline.execution.broker_view(),
                    now=datetime.now(UTC),
                )
                if report.position_mismatches:
                    await self.set_trading_state(
                        TradingState.HALTED, "position_mismatch_at_reconnect"
                    )
            if gated is None:
                await pipeline.on_bars(batch)
            else:
                gate, gateway_now = gated
                verdict = gate.split(batch, gateway_now())
                trade_gate.report(verdict, gate, pipeline.journal, batch[0].ts)
                await pipeline.on_warm_up_bars(verdict.warm)
                await pipeline.on_bars(verdict.trade)
            if self.live is not None:  # after the batch's orders are out
                self.live.on_batch(batch, equity=pipeline.book.equity())
            if self.stopping.is_set():
                break
        log.info("feed.ended")

    def _trade_gate(self) -> tuple[trade_gate.TradeGate, Callable[[], datetime | None]] | None:
        """The gate an IB feed's bars pass, with the gateway's clock it judges them by."""
        ib = self.cfg.ib
        if self.cfg.feed.kind != "ib" or ib is None:
            return None
        # Here only, like opening it: ib_async loads with an IB feed, not at every start.
        from daemon.ib.feed import IbFeed

        assert isinstance(self.feed, IbFeed)
        gate = trade_gate.TradeGate(bar_seconds=ib.bar_seconds, max_age_bars=ib.max_bar_age_bars)
        return gate, self.feed.gateway_now

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

    async def _shutdown(self, pipeline: Pipeline) -> None:
        self.notifier.stopping()
        pipeline.paused = True
        cancelled: int = 0
        unconfirmed: list[str] = []
        if self.cfg.shutdown.cancel_open_orders:
            # Waits (at most shutdown.timeout_seconds) for the broker's confirmations.
            cancelled, unconfirmed = await pipeline.cancel_open_orders(
                wait_seconds=self.cfg.shutdown.timeout_seconds
            )
        pipeline.flush_broker_updates()
        book = pipeline.book
        if book.day is not None:
            pipeline.record_daily_pnl(book.day, pipeline.stats.last_bar_ts or datetime.now(UTC))
        log.info(
            "daemon.stopped",
            cancelled_orders=cancelled,
            cancels_unconfirmed=unconfirmed,
            bars=pipeline.stats.bars,
            orders=pipeline.stats.orders_submitted,
            fills=pipeline.stats.fills,
            equity=round(book.equity(), 2),
        )

    # ---- signals ------------------------------------------------------------------------------
    def _install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop, sig.name)
        loop.add_signal_handler(signal.SIGHUP, self._reload_on_signal)

    def request_stop(self, reason: str = "request") -> None:
        """Stop taking new bars; a batch in flight finishes before shutdown."""
        if self.stopping.is_set():
            return
        log.info("daemon.stopping", reason=reason)
        self.stopping.set()
        if self._consumer is not None and (
            self.pipeline is None or self.pipeline.busy_since is None
        ):
            self._consumer.cancel()

    def _reload_on_signal(self) -> None:
        async def reload() -> None:
            try:
                await self.apply_config_reload()
            except ConfigError as e:
                log.error("config.reload_failed", error=str(e))

        self._reload_task = asyncio.get_running_loop().create_task(reload(), name="sighup-reload")

    async def apply_config_reload(self) -> ReloadReport:
        """Re-read the config file and apply what a running daemon can (daemon/reload_plan.py):
        strategy, risk, shutdown, log level and scorer settings; every key that needs a restart
        keeps its running value and is reported refused. An invalid file changes nothing
        (ConfigError)."""
        if self.config_path is None or self.pipeline is None or self.scorers is None:
            msg = "no config file to reload (started without --config)"
            raise ConfigError(msg)
        async with self._reload_lock:
            self.cfg, self.last_reload = await apply_reload(
                self.cfg, self.config_path, self.pipeline, self.scorers
            )
            return self.last_reload

    # ---- DaemonControl (MQTT and HTTP commands; daemon/operator_actions.py) ---------------------
    def _require_pipeline(self) -> Pipeline:
        if self.pipeline is None:
            msg = "the daemon is still starting"
            raise InputError(msg)
        return self.pipeline

    async def pause(self, reason: str) -> None:
        operator_actions.pause(self._require_pipeline(), reason)

    async def resume(self, reason: str) -> None:
        operator_actions.resume(self._require_pipeline(), reason)

    async def flatten(self, symbol: str | None, reason: str) -> int:
        return await operator_actions.flatten(self._require_pipeline(), symbol, reason)

    async def set_trading_state(self, state: TradingState, reason: str) -> None:
        operator_actions.set_trading_state(self._require_pipeline(), state, reason)

    async def reload_strategy(self) -> ReloadReport:
        return await self.apply_config_reload()

    async def reload_bundle(self, path: str | None) -> str:
        if self.scorers is None:
            msg = "the daemon is still starting"
            raise InputError(msg)
        return await self.scorers.reload(path)

    def status(self) -> dict[str, Any]:
        if self.pipeline is None:
            return {"state": "starting"}
        return operator_actions.status(
            self.pipeline,
            mode=self.cfg.mode,
            account=self.cfg.account,
            bundle_id=self.scorers.bundle_id if self.scorers else None,
            tasks_down=self.health.down_tasks(),
            last_reload=self.last_reload,
            native=strategy.NATIVE.fields(),
        )

    def readiness(self) -> dict[str, bool]:
        return {
            "started": self.ready,
            "feed_connected": self.feed is not None and self.feed.connected,
            "model_warm": self.scorers is not None and self.scorers.warm,
            "journal_writable": self.journal is not None and self.journal.writable(),
            "tasks_running": self.health.all_up(),
        }


def run(cfg: AppConfig, *, config_path: Path | None = None) -> int:
    """Run the daemon on uvloop until SIGTERM/SIGINT; returns the process exit code."""
    runner: Callable[[Coroutine[Any, Any, int]], int]
    try:  # imported here: uvloop is not installed on Windows (pyproject marker)
        import uvloop

        runner = uvloop.run
    except ImportError:  # pragma: no cover - uvloop is a hard dependency on Linux
        runner = asyncio.run
    daemon = Daemon(cfg, config_path=config_path)
    try:
        Path(cfg.state_dir).mkdir(parents=True, exist_ok=True)
    except OSError as e:
        return storage_failed(
            StorageError(f"state_dir {cfg.state_dir}: cannot be created ({e.strerror})")
        )
    try:
        return runner(daemon.run())
    except ConfigError as e:
        log.error("config.invalid", error=str(e))
        return EXIT_CONFIG
    except StorageError as e:
        return storage_failed(e)
    except Exception as e:
        cause = first_cause(e)
        if isinstance(cause, StorageError):
            return storage_failed(cause)
        if isinstance(cause, ConfigError):
            log.error("config.invalid", error=str(cause))
            return EXIT_CONFIG
        log.exception("daemon.crashed", error=describe(cause))
        return EXIT_CRASH
