"""The daemon, wired in one file: feed -> pipeline -> broker, with control, telemetry and shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
import structlog

from daemon import trade_gate
from daemon.adoption import RECOVER, RECOVER_MISMATCH
from daemon.api.app import build_app
from daemon.api.auth import token_from_env
from daemon.api.metrics import Metrics
from daemon.api.server import ApiServer
from daemon.bus.publisher import MqttBus
from daemon.config import AppConfig, reload_config
from daemon.control import Controller
from daemon.errors import EXIT_CONFIG, EXIT_CRASH, EXIT_OK, ConfigError, InputError, StorageError
from daemon.execution.base import ExecutionClient
from daemon.execution.paper import PaperExecution
from daemon.feeds.feed import Feed
from daemon.feeds.mqtt import MqttBarFeed
from daemon.feeds.replay import ReplayFeed
from daemon.feeds.sim import SimFeed
from daemon.ib.execution import IbExecution
from daemon.ib.feed import IbFeed
from daemon.journal import Journal
from daemon.log_setup import add_event_sink, remove_event_sink, set_log_level
from daemon.model.predict import ModelPredictor
from daemon.model.slot import ModelSlot, daemon_slot, describe_scorer
from daemon.notify import Notifier, watchdog_interval_seconds
from daemon.pipeline import Pipeline
from daemon.reconcile import reconcile, restore_book
from daemon.reload_plan import ReloadReport, plan_reload
from daemon.runtime import tune_gc
from daemon.storage import first_cause, storage_failed
from daemon.supervisor import TaskHealth, describe
from strategy.bars import BarStore
from strategy.risk import RiskEngine
from strategy.target_strategy import TargetStrategy
from strategy.types import Bar, OrderIntent, Side, TradingState

log = structlog.get_logger("daemon.app")

PAUSED_KEY = "paused"  # journal kv: "true" while an operator pause holds
PAUSED_REASON_KEY = "paused_reason"


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
        start = datetime.fromtimestamp(now, tz=UTC) - timedelta(
            seconds=step * (cfg.bars.window - 1)
        )
    journal.record(kv={"sim_start": start.isoformat()})
    return start


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

    # ---- lifecycle ----------------------------------------------------------------------------
    async def run(self) -> int:
        cfg = self.cfg
        state_dir = Path(cfg.state_dir)
        journal = Journal(
            cfg.state_path(cfg.journal.path),
            synchronous=cfg.journal.synchronous,
            checkpoint_seconds=cfg.journal.checkpoint_seconds,
        )
        journal.open()
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
        feed, warm_up_until = await stack.enter_async_context(self._open_feed(journal))
        self.feed = feed
        execution = await stack.enter_async_context(self._open_execution(feed, state_dir))
        view = await execution.broker_view()
        # A journal without trading history adopts the broker's state here, before any order.
        report = reconcile(journal, book, view, now=datetime.now(UTC), adopt=True)
        self._generation = getattr(execution, "generation", 0)

        self.scorers = daemon_slot(cfg)
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
        self.pipeline = pipeline
        if cfg.feed.kind in ("ib", "mqtt"):  # live bars: one stamped far in the future is refused
            pipeline.clock = lambda: datetime.now(UTC)
        self.scorers.attach(pipeline)
        self._restore_trading_state(pipeline, journal)
        if report.refused or report.position_mismatches:
            reason = "adoption_refused" if report.refused else "position_mismatch_at_start"
            pipeline.risk.set_state(TradingState.HALTED, reason, datetime.now(UTC))
            recover = RECOVER if report.refused else RECOVER_MISMATCH
            detail = report.refused or f"positions differ: {', '.join(report.position_mismatches)}"
            log.error("trading.refused", reason=reason, detail=detail, recover=recover)

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
            predictor = ModelPredictor(slot=self.scorers, lock=pipeline.score_lock)
            app = build_app(
                controller=controller,
                metrics=metrics,
                predictor=predictor,
                token=token_from_env(cfg.api.token_env),
                config=cfg.api,
            )
            await stack.enter_async_context(ApiServer(config=cfg.api, app=app, health=self.health))

        resume = await self._warm_up(pipeline, journal, feed, warm_up_until, view.clock)
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

    async def _warm_up(
        self,
        pipeline: Pipeline,
        journal: Journal,
        feed: Feed,
        warm_up_until: datetime | None,
        venue_clock: datetime | None = None,
    ) -> datetime:
        """Fill every window before trading; returns the bar close after which live bars start
        (never at or before a simulated venue's clock: those bars were traded already)."""
        cfg = self.cfg
        last = journal.get("last_bar_ts")
        resume_after = datetime.fromisoformat(last) if last else warm_up_until
        if venue_clock is not None and (resume_after is None or venue_clock > resume_after):
            resume_after = venue_clock
            last = venue_clock.isoformat()
        if cfg.feed.kind == "ib":
            # A broker feed never replays the past into the strategy: warm up on the latest window.
            batches = await feed.backfill(cfg.bars.window)
        else:
            batches = await feed.backfill(cfg.bars.window, before=resume_after)
        for batch in batches:
            for bar in batch:
                if pipeline.store.add(bar) is None:
                    pipeline.book.mark(bar)
        if batches:
            return batches[-1][0].ts
        if last:
            return datetime.fromisoformat(last)
        assert warm_up_until is not None
        return warm_up_until

    @contextlib.asynccontextmanager
    async def _open_feed(self, journal: Journal) -> AsyncIterator[tuple[Feed, datetime | None]]:
        cfg = self.cfg
        if cfg.feed.kind == "mqtt":
            # Another process publishes the bars: everything after the journal's last bar counts.
            async with MqttBarFeed(config=cfg.mqtt, account=cfg.account) as mqtt_feed:
                yield mqtt_feed, datetime.fromtimestamp(0, tz=UTC)
            return
        if cfg.feed.kind == "ib":
            assert cfg.ib is not None  # validated in config
            async with IbFeed(config=cfg.ib) as ib_feed:
                yield ib_feed, None
            return
        if cfg.feed.kind == "replay" and cfg.feed.replay is not None:
            async with ReplayFeed(config=cfg.feed.replay) as replay:
                yield replay, replay.first_ts() - timedelta(seconds=1)
            return
        start = _sim_start(cfg, journal)
        async with SimFeed(config=cfg.feed.sim, start=start) as sim:
            yield sim, start + timedelta(seconds=cfg.bars.bar_seconds * (cfg.bars.window - 1))

    @contextlib.asynccontextmanager
    async def _open_execution(self, feed: Feed, state_dir: Path) -> AsyncIterator[ExecutionClient]:
        cfg = self.cfg
        if cfg.mode in ("ib-paper", "ib-live"):
            assert cfg.ib is not None
            # Orders share the feed's IB connection unless they have a client id of their own.
            shared = None
            if cfg.ib.order_client_id is None and isinstance(feed, IbFeed):
                shared = feed.session
            async with IbExecution(config=cfg.ib, session=shared) as ib_execution:
                yield ib_execution
            return
        with PaperExecution(config=cfg.broker, path=state_dir / "paper_venue.sqlite") as paper:
            yield paper

    async def _consume(self, batches: AsyncIterator[list[Bar]]) -> None:
        assert self.pipeline is not None
        pipeline = self.pipeline
        # A broker feed's backfilled or old bars only warm the windows (daemon/trade_gate.py).
        gate = self._trade_gate()
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
            if gate is None:
                await pipeline.on_bars(batch)
            else:
                now = self.feed.gateway_now() if isinstance(self.feed, IbFeed) else None
                verdict = gate.split(batch, now)
                trade_gate.report(verdict, gate, pipeline.journal, batch[0].ts)
                await pipeline.on_warm_up_bars(verdict.warm)
                await pipeline.on_bars(verdict.trade)
            if self.stopping.is_set():
                break
        log.info("feed.ended")

    def _trade_gate(self) -> trade_gate.TradeGate | None:
        ib = self.cfg.ib
        if self.cfg.feed.kind != "ib" or ib is None:
            return None
        return trade_gate.TradeGate(bar_seconds=ib.bar_seconds, max_age_bars=ib.max_bar_age_bars)

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

    def _restore_trading_state(self, pipeline: Pipeline, journal: Journal) -> None:
        """A halt and a pause survive a restart: only an operator lifts them."""
        if journal.get(PAUSED_KEY) == "true":
            pipeline.paused = True
            log.warning("daemon.pause_restored", reason=journal.get(PAUSED_REASON_KEY) or "")
        stored = journal.get("trading_state")
        if stored and stored != TradingState.ACTIVE:
            reason = journal.get("trading_state_reason") or "restored"
            pipeline.risk.set_state(TradingState(stored), f"restored:{reason}", datetime.now(UTC))
            log.warning("trading_state.restored", state=stored, reason=reason)

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
            new, changed = reload_config(self.config_path, self.cfg)
            plan = plan_reload(self.cfg, new, changed, source=str(self.config_path))
            cfg, refused = plan.config, dict(plan.refused)
            p = self.pipeline
            p.strategy.reconfigure(cfg.strategy)
            p.risk.reconfigure(cfg.risk)
            set_log_level(cfg.log.level)
            self.scorers.apply_settings(cfg.scorer)
            bundle_id = None
            pending, self.scorers.settings_reload = self.scorers.settings_reload, None
            if pending is not None:
                try:
                    bundle_id = await pending
                except InputError as e:
                    why = f"the bundle did not load under it, the running one serves on ({e})"
                    for key in plan.applied:
                        if key.startswith(("scorer.mode", "scorer.fusion", "scorer.bundle",
                                           "scorer.spec_hash")):  # fmt: skip
                            refused[key] = why
                    cfg = msgspec.structs.replace(cfg, scorer=self.scorers.settings)
            self.cfg = cfg
            report = ReloadReport(
                applied=tuple(k for k in plan.applied if k not in refused),
                refused=refused,
                bundle_id=bundle_id,
            )
            self.last_reload = report
            (log.warning if refused else log.info)(
                "config.reloaded",
                path=str(self.config_path),
                applied=list(report.applied),
                refused=report.refused,
                bundle_id=bundle_id,
            )
            return report

    # ---- DaemonControl (MQTT and HTTP commands) --------------------------------------------------
    def _require_pipeline(self) -> Pipeline:
        if self.pipeline is None:
            msg = "the daemon is still starting"
            raise InputError(msg)
        return self.pipeline

    async def pause(self, reason: str) -> None:
        """Stop opening orders; journaled first, so a restart comes back paused."""
        p = self._require_pipeline()
        p.journal.record(kv={PAUSED_KEY: "true", PAUSED_REASON_KEY: reason})
        p.paused = True
        log.warning("daemon.paused", reason=reason)

    async def resume(self, reason: str) -> None:
        p = self._require_pipeline()
        p.journal.record(kv={PAUSED_KEY: "false", PAUSED_REASON_KEY: reason})
        p.paused = False
        log.info("daemon.resumed", reason=reason)

    async def flatten(self, symbol: str | None, reason: str) -> int:
        """Cancel working orders and close positions, through risk and the journal like any order."""
        p = self._require_pipeline()
        now = p.stats.last_bar_ts or datetime.now(UTC)
        symbols = (
            [symbol]
            if symbol is not None
            else [s for s, pos in p.book.positions.items() if pos.quantity]
        )
        if (
            symbol is not None
            and symbol not in p.book.positions
            and symbol not in p.book.last_prices
        ):
            msg = f"unknown symbol {symbol!r}"
            raise InputError(msg)
        intents: list[OrderIntent] = []
        for coid, order in list(p.book.open_orders.items()):
            if order.symbol in symbols or symbol is None:
                intents.append(
                    OrderIntent(
                        symbol=order.symbol,
                        ts=now,
                        side=order.side,
                        quantity=0.0,
                        is_cancel=True,
                        cancel_client_order_id=coid,
                        reason="flatten",
                    )
                )
        for s in symbols:
            qty = p.book.position(s)
            if qty:
                intents.append(
                    OrderIntent(
                        symbol=s,
                        ts=now,
                        side=Side.SELL if qty > 0 else Side.BUY,
                        quantity=abs(qty),
                        reason=f"flatten:{reason}",
                        confidence=1.0,
                    )
                )
        orders = await p.submit_intents(intents, now)
        log.warning("daemon.flattened", symbol=symbol, orders=len(orders), reason=reason)
        return len(orders)

    async def set_trading_state(self, state: TradingState, reason: str) -> None:
        p = self._require_pipeline()
        change = p.risk.set_state(state, reason, p.stats.last_bar_ts or datetime.now(UTC))
        if change is not None:
            p.journal.record(
                state_changes=[change],
                kv={"trading_state": str(state), "trading_state_reason": reason},
            )
            log.warning(
                "trading_state.changed",
                previous=str(change.previous),
                current=str(change.current),
                reason=reason,
            )

    async def reload_strategy(self) -> ReloadReport:
        return await self.apply_config_reload()

    async def reload_bundle(self, path: str | None) -> str:
        if self.scorers is None:
            msg = "the daemon is still starting"
            raise InputError(msg)
        return await self.scorers.reload(path)

    def status(self) -> dict[str, Any]:
        p = self.pipeline
        if p is None:
            return {"state": "starting"}
        book = p.book
        return {
            "mode": self.cfg.mode,
            "account": self.cfg.account,
            "trading_state": str(p.risk.state),
            "paused": p.paused,
            "scorer": p.scorer.name,
            "bundle_id": self.scorers.bundle_id if self.scorers else None,
            "signal": describe_scorer(p.scorer),
            "shadow": p.shadow.stats.summary() if p.shadow is not None else None,
            "cash": round(book.cash, 2),
            "equity": round(book.equity(), 2),
            "pnl_today": round(book.daily_pnl(), 2),
            "drawdown": round(book.drawdown(), 6),
            "positions": {
                s: {
                    "quantity": pos.quantity,
                    "average_price": pos.average_price,
                    "realized_pnl": round(pos.realized_pnl, 2),
                }
                for s, pos in book.positions.items()
                if pos.quantity
            },
            "open_orders": [
                {
                    "client_order_id": o.client_order_id,
                    "symbol": o.symbol,
                    "side": str(o.side),
                    "quantity": o.quantity,
                    "filled_quantity": o.filled_quantity,
                    "status": str(o.status),
                }
                for o in book.open_orders.values()
            ],
            "last_bar_ts": p.stats.last_bar_ts.isoformat() if p.stats.last_bar_ts else None,
            "bars": p.stats.bars,
            "orders_submitted": p.stats.orders_submitted,
            "fills": p.stats.fills,
            "tasks_down": self.health.down_tasks(),
            "last_reload": msgspec.to_builtins(self.last_reload) if self.last_reload else None,
        }

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
