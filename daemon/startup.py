"""The daemon's start-up, in the order daemon/app.py runs it: the journal, the feed and the venue
opened, the broker's state reconciled (a refusal halts), a halt or pause restored, the windows
warmed up before the first live bar."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import structlog

from daemon.adoption import RECOVER, RECOVER_MISMATCH
from daemon.config import AppConfig
from daemon.execution.base import ExecutionClient
from daemon.execution.paper import PaperExecution
from daemon.feeds.feed import Feed
from daemon.feeds.mqtt import MqttBarFeed
from daemon.feeds.sim import SimFeed
from daemon.journal import Journal
from daemon.operator_actions import PAUSED_KEY, PAUSED_REASON_KEY
from daemon.pipeline import Pipeline
from daemon.reconcile import ReconcileReport
from strategy.types import TradingState

log = structlog.get_logger("daemon.startup")


def open_journal(cfg: AppConfig) -> Journal:
    """The journal under state_dir, opened (and migrated) with the configured durability."""
    journal = Journal(
        cfg.state_path(cfg.journal.path),
        synchronous=cfg.journal.synchronous,
        checkpoint_seconds=cfg.journal.checkpoint_seconds,
        writer=cfg.journal.writer,
    )
    journal.open()
    return journal


def sim_start(cfg: AppConfig, journal: Journal) -> datetime:
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


@contextlib.asynccontextmanager
async def open_feed(
    cfg: AppConfig, journal: Journal
) -> AsyncIterator[tuple[Feed, datetime | None]]:
    """The configured feed, and the bar close its warm-up runs up to (None: the latest window)."""
    if cfg.feed.kind == "mqtt":
        # Another process publishes the bars: everything after the journal's last bar counts.
        async with MqttBarFeed(config=cfg.mqtt, account=cfg.account) as mqtt_feed:
            yield mqtt_feed, datetime.fromtimestamp(0, tz=UTC)
        return
    if cfg.feed.kind == "ib":
        assert cfg.ib is not None  # validated in config
        from daemon.ib.feed import IbFeed  # ib_async loads only for an IB feed (start-up time)

        async with IbFeed(config=cfg.ib) as ib_feed:
            yield ib_feed, None
        return
    if cfg.feed.kind == "replay" and cfg.feed.replay is not None:
        from daemon.feeds.replay import ReplayFeed  # pandas and pyarrow load only for a replay

        async with ReplayFeed(config=cfg.feed.replay) as replay:
            yield replay, replay.first_ts() - timedelta(seconds=1)
        return
    start = sim_start(cfg, journal)
    async with SimFeed(config=cfg.feed.sim, start=start) as sim:
        yield sim, start + timedelta(seconds=cfg.bars.bar_seconds * (cfg.bars.window - 1))


@contextlib.asynccontextmanager
async def open_execution(
    cfg: AppConfig, feed: Feed, state_dir: Path
) -> AsyncIterator[ExecutionClient]:
    """The venue orders go to: IB Gateway in the ib-* modes, else the paper venue under state_dir."""
    if cfg.mode in ("ib-paper", "ib-live"):
        assert cfg.ib is not None
        from daemon.ib.execution import IbExecution  # ib_async loads only in the IB modes
        from daemon.ib.feed import IbFeed

        # Orders share the feed's IB connection unless they have a client id of their own.
        shared = None
        if cfg.ib.order_client_id is None and isinstance(feed, IbFeed):
            shared = feed.session
        async with IbExecution(config=cfg.ib, session=shared) as ib_execution:
            yield ib_execution
        return
    with PaperExecution(config=cfg.broker, path=state_dir / "paper_venue.sqlite") as paper:
        yield paper


def halt_when_unreconciled(pipeline: Pipeline, report: ReconcileReport) -> None:
    """A refused adoption or a position mismatch at start halts trading until an operator acts."""
    if not (report.refused or report.position_mismatches):
        return
    reason = "adoption_refused" if report.refused else "position_mismatch_at_start"
    pipeline.risk.set_state(TradingState.HALTED, reason, datetime.now(UTC))
    recover = RECOVER if report.refused else RECOVER_MISMATCH
    detail = report.refused or f"positions differ: {', '.join(report.position_mismatches)}"
    log.error("trading.refused", reason=reason, detail=detail, recover=recover)


def restore_trading_state(pipeline: Pipeline, journal: Journal) -> None:
    """A halt and a pause survive a restart: only an operator lifts them."""
    if journal.get(PAUSED_KEY) == "true":
        pipeline.paused = True
        log.warning("daemon.pause_restored", reason=journal.get(PAUSED_REASON_KEY) or "")
    stored = journal.get("trading_state")
    if stored and stored != TradingState.ACTIVE:
        reason = journal.get("trading_state_reason") or "restored"
        pipeline.risk.set_state(TradingState(stored), f"restored:{reason}", datetime.now(UTC))
        log.warning("trading_state.restored", state=stored, reason=reason)


async def warm_up(
    cfg: AppConfig,
    pipeline: Pipeline,
    journal: Journal,
    feed: Feed,
    warm_up_until: datetime | None,
    venue_clock: datetime | None = None,
) -> datetime:
    """Fill every window before trading; returns the bar close after which live bars start
    (never at or before a simulated venue's clock: those bars were traded already)."""
    last = journal.get("last_bar_ts")
    resume_after = datetime.fromisoformat(last) if last else warm_up_until
    if venue_clock is not None and (resume_after is None or venue_clock > resume_after):
        resume_after = venue_clock
    if cfg.feed.kind == "ib":
        # A broker feed never replays the past into the strategy: warm up on the latest window.
        batches = await feed.backfill(cfg.bars.window)
    else:
        batches = await feed.backfill(cfg.bars.window, before=resume_after)
    for batch in batches:
        pipeline.kernel.backfill(batch)  # the kernel's batch call: store and mark, no trading
    if batches:
        return batches[-1][0].ts
    assert resume_after is not None  # a journaled last bar, the venue's clock or warm_up_until
    return resume_after
