"""The gateway's clock as far as the daemon knows it (bars are judged by it, not by our own clock)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from datetime import UTC, datetime, timedelta

from ib_async import IB

from daemon.errors import FeedTimeout, TransientError


class GatewayClock:
    """The gateway's last reported time carried forward on our monotonic clock, never before the
    latest live bar's close (a bar is only sent once it has closed)."""

    def __init__(self, *, ib: IB, timeout_seconds: float) -> None:
        self._ib = ib
        self._timeout = timeout_seconds
        self._reading: tuple[datetime, float] | None = None  # (gateway time, monotonic when read)
        self._latest_live: datetime | None = None
        self._lock = asyncio.Lock()

    def now(self) -> datetime | None:
        """The gateway's time now (None before the first reading or live bar)."""
        now: datetime | None = None
        if self._reading is not None:
            at, read = self._reading
            now = at + timedelta(seconds=time.monotonic() - read)
        latest = self._latest_live
        if latest is not None and (now is None or latest > now):
            now = latest
        return now

    def saw_live(self, close: datetime) -> None:
        """A live bar closed at `close`: the gateway's time is at least that."""
        if self._latest_live is None or close > self._latest_live:
            self._latest_live = close

    async def ask(self) -> datetime:
        """Ask the gateway for its clock. One request at a time: ib_async keeps a single future
        for reqCurrentTime, so a second caller would orphan the first one's for ever."""
        async with self._lock:
            try:
                answer = await asyncio.wait_for(self._ib.reqCurrentTimeAsync(), self._timeout)
            except TimeoutError:
                msg = f"the gateway's time did not come within {self._timeout}s"
                raise FeedTimeout(msg) from None
        now = answer.astimezone(UTC)
        self._reading = (now, time.monotonic())
        return now

    async def sync(self) -> None:
        """ask(), where a failure only leaves the last reading standing."""
        with contextlib.suppress(TransientError, ConnectionError):
            await self.ask()
