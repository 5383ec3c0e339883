"""Shared test plumbing for adapters against the fake gateway: fast configs and bar collection."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from daemon.ib.config import IbBackoffConfig, IbConfig, IbContractConfig, IbPacingConfig
from strategy.types import Bar
from tests.ibgateway.server import FakeGateway


def fast_config(
    port: int, *, symbols: tuple[str, ...] = ("AAPL", "MSFT"), **overrides: Any
) -> IbConfig:
    """An IbConfig with short timeouts and backoff so fault tests finish in about a second."""
    fields: dict[str, Any] = {
        "port": port,
        "client_id": 11,
        "connect_timeout_seconds": 2.0,
        "request_timeout_seconds": 5.0,
        "batch_grace_seconds": 0.5,
        "pacing": IbPacingConfig(identical_seconds=0.2, violation_pause_seconds=0.2),
        "backoff": IbBackoffConfig(
            initial_seconds=0.05, max_seconds=0.2, jitter=0.1, refused_retry_seconds=0.1
        ),
        "contracts": tuple(IbContractConfig(symbol=s) for s in symbols),
    }
    fields.update(overrides)
    return IbConfig(**fields)


async def until(
    predicate: Callable[[], bool], *, timeout: float = 5.0, what: str = "condition"
) -> None:
    """Poll predicate on the loop until true or fail with what."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            msg = f"timed out after {timeout}s waiting for {what}"
            raise AssertionError(msg)
        await asyncio.sleep(0.01)


class Collector:
    """Runs feed.closed_bars() in a task and keeps every batch it yields."""

    def __init__(self, batches: AsyncIterator[list[Bar]]) -> None:
        self.batches: list[list[Bar]] = []
        self._task = asyncio.create_task(self._run(batches))

    async def _run(self, batches: AsyncIterator[list[Bar]]) -> None:
        async for batch in batches:
            self.batches.append(batch)

    def bars(self, symbol: str) -> list[Bar]:
        return [b for batch in self.batches for b in batch if b.symbol == symbol]

    async def wait_bars(self, symbol: str, n: int, timeout: float = 5.0) -> list[Bar]:
        await until(
            lambda: len(self.bars(symbol)) >= n, timeout=timeout, what=f"{n} bars of {symbol}"
        )
        return self.bars(symbol)

    async def close(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


async def advance_until(
    gw: FakeGateway,
    condition: Callable[[], bool] | Callable[[], Awaitable[bool]],
    *,
    seconds: int = 60,
    timeout: float = 5.0,
) -> None:
    """Advance the market one bar at a time until condition holds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() > deadline:
            msg = "condition not met while advancing the market"
            raise AssertionError(msg)
        await gw.advance(seconds)
        await asyncio.sleep(0.05)


class GatewayThread:
    """The fake gateway on its own event loop in a background thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.gateway = FakeGateway()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> FakeGateway:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.gateway.start(), self.loop).result(5)
        return self.gateway

    def call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(5)

    def __exit__(self, *exc: object) -> None:
        self.call(self.gateway.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)
