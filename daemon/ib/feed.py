"""Bars from Interactive Brokers through IB Gateway (ib_async), reconnecting forever.

IbFeed qualifies the configured contracts, backfills history, keeps every symbol current with
reqHistoricalData(keepUpToDate=True) (or 5-second real-time bars for sizes under a minute), and
hands closed bars to the core in batches by close time, resubscribing with a backfill from the
last bar after any reconnect, 1101/1102, farm recovery or stale stream. The connection is an
IbSession (daemon/ib/session.py), history goes through PacedHistory (daemon/ib/history.py), and
IB's bars become ours in daemon/ib/bars.py. ib_async callbacks only enqueue; all work happens in
our tasks.

Over 400 lines: one state machine per connection; qualify, backfill, subscribe, batch and the
stale watchdog all read and write the same per-symbol streams.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from ib_async import IB, Contract, RequestError

from daemon.errors import ConfigError, FeedTimeout, TransientError
from daemon.ib.bars import BarBatcher, add_realtime, duration_for, to_bar
from daemon.ib.config import IbConfig
from daemon.ib.contracts import to_ib_contract
from daemon.ib.history import PacedHistory
from daemon.ib.hours import MarketHours
from daemon.ib.session import PACING_VIOLATION, IbSession, SessionChange
from strategy.types import Bar

log = structlog.get_logger("daemon.ib.feed")


class _Stream:
    """One symbol's live subscription."""

    def __init__(self, symbol: str, contract: Contract) -> None:
        self.symbol = symbol
        self.contract = contract
        self.subscription: Any = None
        self.req_id: int | None = None
        self.generation = 0  # the session generation the subscription was made in
        self.last_ts: datetime | None = None
        self.last_arrival = time.monotonic()
        self.partial: dict[datetime, list[Any]] = {}
        self.hours: MarketHours | None = None  # from the contract details; None = unknown
        self.closed = False  # the watchdog saw the market closed (logged once per change)


class IbFeed:
    """Closed bars from IB for the configured contracts; reuse is fine, re-entry is not."""

    def __init__(
        self,
        *,
        config: IbConfig,
        session: IbSession | None = None,
        connect_attempts: int | None = None,
    ) -> None:
        """connect_attempts: give up (GatewayUnreachable) after that many failed connection
        attempts in a row; None reconnects for ever (the daemon)."""
        if not config.contracts:
            msg = "ib.contracts is empty: list at least one contract"
            raise ConfigError(msg)
        self.config = config
        self.bar_seconds = config.bar_seconds
        self._control: asyncio.Queue[SessionChange | str] = asyncio.Queue()
        self.session = session or IbSession(
            config=config, client_ids=(config.client_id, *config.fallback_client_ids), name="data"
        )
        self.session.listener = self._control.put_nowait
        self.requests = PacedHistory(session=self.session, config=config)
        self.streams: dict[str, _Stream] = {}
        self.skipped: dict[str, str] = {}
        self.batcher = BarBatcher(grace_seconds=config.batch_grace_seconds)
        self.resubscriptions = 0
        self._raw: asyncio.Queue[tuple[str, Any, Any]] = asyncio.Queue()
        self._streaming = False
        self._resume: datetime | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._entered = False
        self._qualified_generation = -1
        self._fatal: Exception | None = None
        self._clock: tuple[datetime, float] | None = None  # (gateway time, monotonic when read)
        self._latest_live: datetime | None = None
        self._time_lock = asyncio.Lock()
        self._connect_attempts = connect_attempts

    @property
    def ib(self) -> IB:
        return self.session.ib

    @property
    def connected(self) -> bool:
        return self.session.ready

    def gateway_now(self) -> datetime | None:
        """The gateway's clock as far as we know it: its last reported time plus the time since,
        and never before the latest live bar's close (a bar is only sent once it has closed)."""
        now: datetime | None = None
        if self._clock is not None:
            at, read = self._clock
            now = at + timedelta(seconds=time.monotonic() - read)
        latest = self._latest_live
        if latest is not None and (now is None or latest > now):
            now = latest
        return now

    async def _gateway_time(self) -> datetime:
        """Ask the gateway for its clock. One request at a time: ib_async keeps a single future
        for reqCurrentTime, so a second caller would orphan the first one's for ever."""
        async with self._time_lock:
            try:
                answer = await asyncio.wait_for(
                    self.ib.reqCurrentTimeAsync(), self.config.request_timeout_seconds
                )
            except TimeoutError:
                msg = (
                    f"the gateway's time did not come within {self.config.request_timeout_seconds}s"
                )
                raise FeedTimeout(msg) from None
        now = answer.astimezone(UTC)
        self._clock = (now, time.monotonic())
        return now

    async def _sync_clock(self) -> None:
        with contextlib.suppress(TransientError, ConnectionError):
            await self._gateway_time()

    # ---- lifecycle ----------------------------------------------------------------------------
    async def __aenter__(self) -> IbFeed:
        if self._entered:
            msg = "IbFeed is already entered"
            raise RuntimeError(msg)
        self._entered = True
        self.ib.barUpdateEvent += self._on_bar_update
        self._tasks = [
            asyncio.create_task(
                self.session.run(max_attempts=self._connect_attempts), name="ib-session"
            ),
            asyncio.create_task(self._supervise(), name="ib-feed-supervisor"),
            asyncio.create_task(self._watchdog(), name="ib-feed-watchdog"),
        ]
        try:
            await self._ready()
        except BaseException:
            await self.__aexit__(None, None, None)
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self.ib.barUpdateEvent -= self._on_bar_update
        self._tasks = []
        self._entered = False
        self._streaming = False

    async def _ready(self) -> None:
        """Wait until connected and the contracts are qualified (reconnecting meanwhile)."""
        session_task = self._tasks[0] if self._tasks else None
        while True:
            if not self.session.connected.is_set():
                connected = asyncio.ensure_future(self.session.connected.wait())
                waits: set[asyncio.Future[Any]] = {connected}
                if session_task is not None:
                    waits.add(session_task)
                await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
                connected.cancel()
                if session_task is not None and session_task.done():
                    raise session_task.exception() or TransientError("IB session ended")
                continue
            if self._fatal is not None:
                raise self._fatal
            if self._qualified_generation == self.session.generation and self.streams:
                return
            await asyncio.sleep(0.01)

    # ---- ib_async callback: enqueue only ---------------------------------------------------------
    def _on_bar_update(self, bars: Any, has_new_bar: bool) -> None:
        if has_new_bar and len(bars) >= 2 and getattr(bars, "keepUpToDate", False):
            self._raw.put_nowait(("hist", bars.reqId, bars[-2]))
        elif has_new_bar and bars and not hasattr(bars, "keepUpToDate"):
            self._raw.put_nowait(("rt", bars.reqId, bars[-1]))

    # ---- supervision ------------------------------------------------------------------------
    async def _supervise(self) -> None:
        while True:
            change = await self._control.get()
            if isinstance(change, str):
                if change == "subscribe_all" and self.session.connected.is_set():
                    await self._subscribe_all()
                elif change.startswith("resubscribe:") and self.session.ready:
                    symbol = change.split(":", 1)[1]
                    if symbol in self.streams:
                        await self._resubscribe(self.streams[symbol])
                continue
            if change.kind == "connected":
                try:
                    await self._qualify()
                except ConfigError as e:
                    self._fatal = e
                    return
                if self._streaming:
                    await self._subscribe_all()
            elif change.kind == "lost":
                # Updates during an outage are unreliable; ignore them until the backfilled resubscription.
                for stream in self.streams.values():
                    stream.req_id = None
                log.warning("feed.paused", reason="link_lost", code=change.code)
            elif change.kind == "restored" or (change.kind == "farm_ok" and self._farm_was_broken):
                self._farm_was_broken = False
                if self._streaming:
                    await self._subscribe_all()
            elif change.kind == "farm_broken":
                self._farm_was_broken = True
            elif change.kind == "error":
                await self._on_request_error(change)

    _farm_was_broken = False

    async def _on_request_error(self, change: SessionChange) -> None:
        stream = next((s for s in self.streams.values() if s.req_id == change.req_id), None)
        if stream is None:
            return
        log.warning(
            "feed.stream_error", symbol=stream.symbol, code=change.code, detail=change.message[:200]
        )
        if change.code == PACING_VIOLATION:
            self.requests.gate.violated()
        asyncio.get_running_loop().call_later(
            0.5 if change.code != PACING_VIOLATION else self.config.pacing.violation_pause_seconds,
            self._control.put_nowait,
            f"resubscribe:{stream.symbol}",
        )

    async def _qualify(self) -> None:
        """Qualify new contracts; for known ones, refresh the trading hours (a few days long)."""
        generation = self.session.generation
        for c in self.config.contracts:
            if c.symbol in self.skipped:
                continue
            known = self.streams.get(c.symbol)
            try:
                details = await asyncio.wait_for(
                    self.ib.reqContractDetailsAsync(to_ib_contract(c)),
                    self.config.request_timeout_seconds,
                )
            except RequestError as e:
                details, reason = [], f"{e.code}: {e.message}"
            except TimeoutError:
                details, reason = [], "timeout"
            else:
                reason = "no match" if not details else "ambiguous"
            if known is not None:  # already streaming: only the hours are new; keep it either way
                if len(details) == 1:
                    known.hours = self._hours(details[0])
                else:
                    log.warning("contract.hours_not_refreshed", symbol=c.symbol, reason=reason)
                continue
            if len(details) != 1:
                self.skipped[c.symbol] = reason
                log.error(
                    "contract.unqualified", symbol=c.symbol, sec_type=c.sec_type, reason=reason
                )
                continue
            contract = details[0].contract
            if contract is None:
                self.skipped[c.symbol] = "no contract in details"
                continue
            stream = self.streams[c.symbol] = _Stream(c.symbol, contract)
            stream.hours = self._hours(details[0])
            log.info(
                "contract.qualified",
                symbol=c.symbol,
                con_id=contract.conId,
                hours_known=stream.hours is not None,
            )
        if not self.streams:
            msg = f"no contract qualified: {self.skipped}"
            raise ConfigError(msg)
        self._qualified_generation = generation

    def _hours(self, details: Any) -> MarketHours | None:
        """Regular hours when the bars are RTH-only, else the full trading hours."""
        text = details.liquidHours if self.config.use_rth else details.tradingHours
        return MarketHours.parse(text or "", details.timeZoneId or "")

    # ---- history ------------------------------------------------------------------------------
    async def backfill(self, n: int, before: datetime | None = None) -> list[list[Bar]]:
        """The last n closed bars per symbol with ts <= before (None = now), as batches by ts."""
        await self._ready()
        by_ts: dict[datetime, list[Bar]] = {}
        for stream in list(self.streams.values()):
            end = before.astimezone(UTC) if before is not None else None
            bars = await self.requests.fetch(
                stream.contract,
                stream.symbol,
                end=end,
                duration=duration_for(n * self.bar_seconds * 1.5),
                keep_up_to_date=False,
            )
            closed = [
                to_bar(stream.symbol, b, bar_seconds=self.bar_seconds, origin="backfill")
                for b in bars
            ]
            if end is None and closed:
                closed = closed[:-1]  # the last bar is still forming
            closed = [b for b in closed if before is None or b.ts <= before][-n:]
            for bar in closed:
                by_ts.setdefault(bar.ts, []).append(bar)
        return [sorted(by_ts[ts], key=lambda b: b.symbol) for ts in sorted(by_ts)]

    async def history(self, symbol: str, *, end: datetime, seconds: int) -> list[Bar]:
        """Closed bars of one symbol with close in (end - seconds, end], paced (for downloads)."""
        await self._ready()
        stream = self.streams[symbol]
        bars = await self.requests.fetch(
            stream.contract,
            symbol,
            end=end.astimezone(UTC),
            duration=duration_for(seconds),
            keep_up_to_date=False,
        )
        out = [to_bar(symbol, b, bar_seconds=self.bar_seconds, origin="backfill") for b in bars]
        return [b for b in out if end - timedelta(seconds=seconds) < b.ts <= end]

    async def server_time(self) -> datetime:
        """The gateway's clock."""
        await self._ready()
        return await self._gateway_time()

    # ---- live -------------------------------------------------------------------------------
    async def _subscribe_all(self) -> None:
        for stream in list(self.streams.values()):
            if not self.session.connected.is_set():
                return
            await self._resubscribe(stream)

    async def _resubscribe(self, stream: _Stream) -> None:
        """_subscribe, and on a transient failure try again a second later (never raises those)."""
        try:
            await self._subscribe(stream)
        except (TransientError, ConnectionError) as e:
            log.warning("feed.resubscribe_failed", symbol=stream.symbol, error=str(e)[:200])
            asyncio.get_running_loop().call_later(
                1.0, self._control.put_nowait, f"resubscribe:{stream.symbol}"
            )

    async def _subscribe(self, stream: _Stream) -> None:
        """(Re)subscribe one symbol, backfilling from its last bar (or the resume point)."""
        if stream.subscription is not None and stream.generation == self.session.generation:
            # Only a subscription of this connection: after a reconnect the old one is gone and
            # its request id may already belong to another symbol's new subscription.
            with contextlib.suppress(Exception):
                if self.config.uses_realtime_bars:
                    self.ib.cancelRealTimeBars(stream.subscription)
                else:
                    self.ib.cancelHistoricalData(stream.subscription)
        stream.subscription = None
        stream.req_id = None
        stream.generation = self.session.generation
        since: datetime | None = None
        gap_bars = 0

        async def until_now() -> str:
            # Read when the request goes out, after any pacing wait: the gap as it is now.
            nonlocal since, gap_bars
            since = self.batcher.last_ts.get(stream.symbol) or self._resume
            now = await self._gateway_time()
            gap = (now - since).total_seconds() if since else self.bar_seconds * 2
            gap_bars = max(0, int(gap // self.bar_seconds))
            return duration_for(gap + self.bar_seconds * 2)

        if self.config.uses_realtime_bars:
            rt = self.ib.reqRealTimeBars(
                stream.contract, 5, self.config.what_to_show, self.config.use_rth
            )
            stream.subscription, stream.req_id = rt, rt.reqId
            history = await self.requests.fetch(
                stream.contract, stream.symbol, end=None, duration=until_now, keep_up_to_date=False
            )
            items = list(history)[:-1]
        else:
            bars = await self.requests.fetch(
                stream.contract, stream.symbol, end=None, duration=until_now, keep_up_to_date=True
            )
            stream.subscription, stream.req_id = bars, bars.reqId
            items = list(bars)[:-1]
        closed = [
            to_bar(stream.symbol, b, bar_seconds=self.bar_seconds, origin="backfill") for b in items
        ]
        stream.last_arrival = time.monotonic()
        fresh = [b for b in closed if since is None or b.ts > since]
        self._raw.put_nowait(("bars", stream.symbol, fresh))
        self.resubscriptions += 1
        log.info(
            "feed.resubscribed",
            symbol=stream.symbol,
            backfilled=len(fresh),
            gap_bars=gap_bars,
            since=since.isoformat() if since else None,
        )

    def _convert(self, kind: str, req_id: Any, payload: Any) -> list[Bar]:
        if kind == "bars":
            return list(payload)
        stream = next((s for s in self.streams.values() if s.req_id == req_id), None)
        if stream is None:
            return []
        stream.last_arrival = time.monotonic()
        if kind == "hist":
            bar: Bar | None = to_bar(stream.symbol, payload, bar_seconds=self.bar_seconds)
        else:  # a 5-second real-time bar, summed into bar_seconds buckets
            bar = add_realtime(stream.partial, stream.symbol, payload, bar_seconds=self.bar_seconds)
        if bar is None:
            return []
        self._saw_live(bar)
        return [bar]

    def _saw_live(self, bar: Bar) -> None:
        if self._latest_live is None or bar.ts > self._latest_live:
            self._latest_live = bar.ts

    async def closed_bars(self, resume_after: datetime | None = None) -> AsyncIterator[list[Bar]]:
        """Batches of bars closed at one timestamp, strictly after resume_after, forever."""
        self._resume = resume_after
        if resume_after is not None:
            for symbol in self.streams:
                self.batcher.last_ts.setdefault(symbol, resume_after)
        self._streaming = True
        self._control.put_nowait("subscribe_all")
        while True:
            now = time.monotonic()
            deadline = self.batcher.next_deadline(now)
            try:
                item = await asyncio.wait_for(self._raw.get(), deadline)
            except TimeoutError:
                item = None
            items = [item] if item is not None else []
            while not self._raw.empty():
                items.append(self._raw.get_nowait())
            now = time.monotonic()
            for kind, key, payload in items:
                for bar in self._convert(kind, key, payload):
                    self.batcher.add(bar, now)
            for batch in self.batcher.pop_ready(set(self.streams), now):
                yield batch

    async def _watchdog(self) -> None:
        """A stream silent for stale_factor bar intervals is resubscribed (feed.stale event).

        Not while its market is closed by the contract's trading hours: silence is expected then,
        and resubscribing all night would only spend IB's pacing budget. The silence clock
        restarts at the open. Unknown hours count as open."""
        limit = self.config.stale_factor * self.bar_seconds
        while True:
            await asyncio.sleep(min(limit / 4, 5.0))
            if not (self._streaming and self.session.ready):
                continue
            await self._sync_clock()
            now = time.monotonic()
            wall = datetime.now(UTC)
            for stream in self.streams.values():
                closed = stream.hours is not None and stream.hours.is_open(wall) is False
                if closed != stream.closed:
                    stream.closed = closed
                    log.info(
                        "feed.market_closed" if closed else "feed.market_open", symbol=stream.symbol
                    )
                if closed:
                    stream.last_arrival = now
                    continue
                if stream.subscription is not None and now - stream.last_arrival > limit:
                    log.warning(
                        "feed.stale",
                        symbol=stream.symbol,
                        silent_seconds=round(now - stream.last_arrival, 1),
                    )
                    stream.last_arrival = now
                    self._control.put_nowait(f"resubscribe:{stream.symbol}")
