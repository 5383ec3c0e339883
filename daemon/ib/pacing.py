"""IB's historical-data pacing rules as a pure request pacer, plus a small async gate around it.

Rules (IB TWS API "Historical Data Limitations"): at most 50 requests open at once; no identical
request within 15 s; no more than 6 requests for the same contract, exchange and tick type within
2 s; no more than 60 requests in any 10 minutes. Error 162 (pacing violation) pauses everything.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import structlog

from daemon.ib.config import IbPacingConfig

log = structlog.get_logger("daemon.ib.pacing")


class RequestPacer:
    """Decides how long a request must wait; time comes in as `now` (monotonic seconds)."""

    def __init__(self, *, config: IbPacingConfig | None = None) -> None:
        self.config = config or IbPacingConfig()
        self._sent: deque[tuple[float, str, str]] = deque()  # (time, key, contract)
        self._open = 0
        self._paused_until = 0.0
        self._last_sent = float("-inf")

    @property
    def open_requests(self) -> int:
        return self._open

    def delay(self, key: str, contract: str, now: float) -> float:
        """Seconds to wait before sending this request (0 = send now)."""
        cfg = self.config
        self._forget(now)
        wait = max(0.0, self._paused_until - now, self._last_sent + cfg.min_spacing_seconds - now)
        if self._open >= cfg.max_open:
            wait = max(wait, 0.05)
        for t, k, _ in self._sent:
            if k == key:
                wait = max(wait, t + cfg.identical_seconds - now)
        same = [
            t for t, _, c in self._sent if c == contract and t > now - cfg.same_contract_seconds
        ]
        if len(same) >= cfg.same_contract_requests:
            wait = max(wait, same[-cfg.same_contract_requests] + cfg.same_contract_seconds - now)
        if len(self._sent) >= cfg.window_requests:
            wait = max(wait, self._sent[-cfg.window_requests][0] + cfg.window_seconds - now)
        return (
            wait + 1e-6 if wait > 0 else 0.0
        )  # a hair past the edge, so float rounding never lands inside

    def started(self, key: str, contract: str, now: float) -> None:
        self._sent.append((now, key, contract))
        self._last_sent = now
        self._open += 1

    def finished(self) -> None:
        self._open = max(0, self._open - 1)

    def violated(self, now: float) -> None:
        """Error 162: stop sending for violation_pause_seconds."""
        self._paused_until = max(self._paused_until, now + self.config.violation_pause_seconds)

    def _forget(self, now: float) -> None:
        horizon = max(
            self.config.window_seconds,
            self.config.identical_seconds,
            self.config.same_contract_seconds,
        )
        while self._sent and self._sent[0][0] <= now - horizon:
            self._sent.popleft()


class PacedGate:
    """`async with gate.slot(key, contract):` waits until the pacer allows the request."""

    def __init__(self, *, pacer: RequestPacer, clock: Callable[[], float] = time.monotonic) -> None:
        self.pacer = pacer
        self.clock = clock
        self.waited_seconds = 0.0
        self._lock = asyncio.Lock()

    @asynccontextmanager
    async def slot(self, key: str, contract: str) -> AsyncIterator[None]:
        async with self._lock:
            while (wait := self.pacer.delay(key, contract, self.clock())) > 0:
                log.debug("pacing.waited", key=key, seconds=round(wait, 3))
                self.waited_seconds += wait
                await asyncio.sleep(wait)
            self.pacer.started(key, contract, self.clock())
        try:
            yield
        finally:
            self.pacer.finished()

    def violated(self) -> None:
        self.pacer.violated(self.clock())
