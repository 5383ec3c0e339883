"""Historical-data requests to IB Gateway, one at a time through IB's pacing rules."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

import structlog
from ib_async import Contract, RequestError

from daemon.errors import FeedTimeout, TransientError
from daemon.ib.config import IbConfig
from daemon.ib.pacing import PacedGate, RequestPacer
from daemon.ib.session import PACING_VIOLATION, IbSession

log = structlog.get_logger("daemon.ib.history")

PACING_RETRIES = 5  # 162 (pacing violation) answers in a row before a request gives up


class PacedHistory:
    """reqHistoricalData behind the pacer: 162 waits and retries, a timeout raises FeedTimeout."""

    def __init__(self, *, session: IbSession, config: IbConfig) -> None:
        self.session = session
        self.config = config
        self.gate = PacedGate(pacer=RequestPacer(config=config.pacing))
        self._requests = 0

    async def fetch(
        self,
        contract: Contract,
        symbol: str,
        *,
        end: datetime | None,
        duration: str | Callable[[], Awaitable[str]],
        keep_up_to_date: bool,
        bar_size: str | None = None,
    ) -> Any:
        """One paced historical request (ib_async's BarDataList).

        A callable duration is computed once the pacer lets the request go (a backfill's length
        depends on the gateway's clock at that moment, not before the pacing wait); such requests
        are never identical to one another."""
        cfg = self.config
        size = bar_size or cfg.bar_size
        self._requests += 1
        label = duration if isinstance(duration, str) else f"until-now#{self._requests}"
        key = f"{contract.conId}|{end}|{label}|{size}|{cfg.what_to_show}|{keep_up_to_date}"
        for _ in range(PACING_RETRIES):
            async with self.gate.slot(key, f"{contract.conId}|{cfg.what_to_show}"):
                length = duration if isinstance(duration, str) else await duration()
                try:
                    return await asyncio.wait_for(
                        self.session.ib.reqHistoricalDataAsync(
                            contract,
                            end or "",
                            length,
                            size,
                            cfg.what_to_show,
                            cfg.use_rth,
                            formatDate=2,
                            keepUpToDate=keep_up_to_date,
                            timeout=0,
                        ),
                        cfg.request_timeout_seconds,
                    )
                except RequestError as e:
                    if e.code != PACING_VIOLATION:
                        msg = f"historical data for {symbol}: error {e.code}: {e.message}"
                        raise TransientError(msg) from None
                    log.warning("feed.pacing_violation", symbol=symbol)
                    self.gate.violated()
                except TimeoutError:
                    msg = f"historical data for {symbol} timed out after {cfg.request_timeout_seconds}s"
                    raise FeedTimeout(msg) from None
        msg = f"historical data for {symbol}: pacing violations kept coming"
        raise TransientError(msg)
