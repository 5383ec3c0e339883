"""The simulated market as a feed: bars of strategy.market_sim released on a real or accelerated clock."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from types import TracebackType
from typing import Annotated

import msgspec
import structlog

from strategy.market_sim import MarketSimulator, SimMarketConfig
from strategy.types import Bar

log = structlog.get_logger("daemon.feeds.sim")


class SimFeedConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """speed: simulated seconds per real second (0 = no waiting); start: first bar close (None: the journal decides)."""

    speed: Annotated[float, msgspec.Meta(ge=0)] = 60.0
    start: Annotated[datetime, msgspec.Meta(tz=True)] | None = None
    max_bars: Annotated[int, msgspec.Meta(gt=0)] | None = None
    market: SimMarketConfig = msgspec.field(default_factory=SimMarketConfig)

    def __post_init__(self) -> None:
        step = self.market.bar_seconds
        if self.start is not None and (
            self.start.microsecond or int(self.start.timestamp()) % step
        ):
            msg = f"start {self.start.isoformat()} is not a multiple of market.bar_seconds ({step})"
            raise ValueError(msg)


def _first_index(sim: MarketSimulator, after: datetime | None) -> int:
    """Index of the first bar closing strictly after `after` (0 when None or before start)."""
    if after is None or after < sim.start:
        return 0
    step = timedelta(seconds=sim.config.bar_seconds)
    return (after - sim.start) // step + 1


class SimFeed:
    """Async context manager streaming batches of simulated bars; reusable, not re-entrant."""

    def __init__(self, *, config: SimFeedConfig, start: datetime) -> None:
        self.config = config
        self._sim = MarketSimulator(config=config.market, start=start)
        self._history = MarketSimulator(config=config.market, start=start)
        self._entered = False
        self._next_index = 0

    @property
    def start(self) -> datetime:
        return self._sim.start

    @property
    def connected(self) -> bool:
        """A local source is always connected (the Feed protocol)."""
        return True

    async def __aenter__(self) -> SimFeed:
        if self._entered:
            msg = "SimFeed is already open; it can be reused but not re-entered"
            raise RuntimeError(msg)
        self._entered = True
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._entered = False

    async def closed_bars(self, resume_after: datetime | None = None) -> AsyncIterator[list[Bar]]:
        """Yield one batch per bar close after resume_after, one every bar_seconds / speed seconds."""
        cfg = self.config
        sim = self._sim
        first = _first_index(sim, resume_after)
        sim.skip_to(sim.ts_at(first))
        interval = cfg.market.bar_seconds / cfg.speed if cfg.speed > 0 else 0.0
        loop = asyncio.get_running_loop()
        started = loop.time()
        log.info(
            "feed.started",
            kind="sim",
            first_ts=sim.ts_at(first).isoformat(),
            speed=cfg.speed,
            symbols=len(sim.symbols),
        )
        count = 0
        while cfg.max_bars is None or count < cfg.max_bars:
            # the deadline is counted from the start, so a slow consumer never makes the clock drift
            delay = started + (count + 1) * interval - loop.time()
            await asyncio.sleep(max(delay, 0.0))
            batch = sim.next_batch()
            self._next_index = sim.position
            count += 1
            yield batch
        log.info(
            "feed.exhausted",
            kind="sim",
            batches=count,
            last_ts=sim.ts_at(sim.position - 1).isoformat(),
        )

    async def backfill(self, n: int, before: datetime | None = None) -> list[list[Bar]]:
        """The last n batches closing at or before `before` (None: the last batch yielded), oldest first."""
        history = self._history
        end = self._next_index if before is None else _first_index(history, before)
        return [history.batch_at(i) for i in range(max(end - n, 0), end)]
