"""A micro-batcher: concurrent requests collected for up to max_wait_ms or max_items, scored in one
threaded call, each request's future resolved with its own result (or exception)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Annotated, Generic, NamedTuple, TypeVar

import msgspec
import structlog

from daemon.errors import InvariantError, TransientError

log = structlog.get_logger("daemon.model")

PositiveInt = Annotated[int, msgspec.Meta(gt=0)]
NonNegativeFloat = Annotated[float, msgspec.Meta(ge=0)]
T = TypeVar("T")
R = TypeVar("R")


class BatchConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """max_items per model call; max_wait_ms a request may wait for company; queue_size before 503."""

    max_items: PositiveInt = 32
    max_wait_ms: NonNegativeFloat = 5.0
    queue_size: PositiveInt = 1_024
    drain_seconds: NonNegativeFloat = 10.0


class Overloaded(TransientError):
    """The prediction queue is full, or the service is stopping: retry later."""


class BatchStats(msgspec.Struct, kw_only=True):
    """Counters of the micro-batcher."""

    submitted: int = 0
    scored: int = 0
    batches: int = 0
    largest: int = 0
    abandoned: int = 0
    rejected: int = 0


class _Pending(NamedTuple, Generic[T, R]):
    item: T
    future: asyncio.Future[R]
    arrived: float


class MicroBatcher(Generic[T, R]):
    """Collects submit() calls for up to max_wait_ms or max_items and scores them in one threaded call.

    score(items) returns one result per item, in order; an Exception in a slot fails only that
    item's request, an exception raised by score() fails every request of the batch.
    """

    def __init__(
        self,
        *,
        score: Callable[[list[T]], Sequence[R | Exception]],
        config: BatchConfig | None = None,
        on_batch: Callable[[int, float], None] | None = None,
    ) -> None:
        self.config = config or BatchConfig()
        self.stats = BatchStats()
        self._score = score
        self._on_batch = on_batch
        self._pending: deque[_Pending[T, R]] = deque()
        self._arrived = asyncio.Event()
        self._filled = asyncio.Event()
        self._closing = False
        self._worker: asyncio.Task[None] | None = None

    @property
    def depth(self) -> int:
        return len(self._pending)

    @property
    def accepting(self) -> bool:
        return self._worker is not None and not self._closing

    async def __aenter__(self) -> MicroBatcher[T, R]:
        if self._worker is not None:
            msg = "MicroBatcher is not reentrant"
            raise RuntimeError(msg)
        self._closing = False
        self._arrived = asyncio.Event()
        self._filled = asyncio.Event()
        self._worker = asyncio.create_task(self._run(), name="micro-batcher")
        return self

    async def __aexit__(self, *exc: object) -> None:
        """Stop taking requests, score those already queued (up to drain_seconds), then stop."""
        worker = self._worker
        if worker is None:
            return
        self._closing = True
        self._arrived.set()
        self._filled.set()
        try:
            await asyncio.wait_for(asyncio.shield(worker), self.config.drain_seconds or None)
        except TimeoutError:
            worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await worker
            log.warning("predict.drain_timed_out", abandoned=len(self._pending))
        while self._pending:
            self._fail(self._pending.popleft(), Overloaded("the prediction service is stopping"))
        self._worker = None

    async def submit(self, item: T) -> R:
        """Queue one item and wait for its result (or its exception); Overloaded when full or stopping."""
        if not self.accepting:
            msg = "the prediction service is not running (starting or stopping): retry"
            raise Overloaded(msg)
        if len(self._pending) >= self.config.queue_size:
            self.stats.rejected += 1
            msg = f"{len(self._pending)} predictions are queued (batch.queue_size): retry shortly"
            raise Overloaded(msg)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[R] = loop.create_future()
        self._pending.append(_Pending(item, future, loop.time()))
        self.stats.submitted += 1
        self._arrived.set()
        if len(self._pending) >= self.config.max_items:
            self._filled.set()
        return await future

    async def _run(self) -> None:
        cfg = self.config
        loop = asyncio.get_running_loop()
        while True:
            if not self._pending:
                if self._closing:
                    return
                self._arrived.clear()
                await self._arrived.wait()
                continue
            wait = self._pending[0].arrived + cfg.max_wait_ms / 1000.0 - loop.time()
            if len(self._pending) < cfg.max_items and wait > 0 and not self._closing:
                self._filled.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._filled.wait(), wait)
            take = min(cfg.max_items, len(self._pending))
            await self._score_batch([self._pending.popleft() for _ in range(take)])

    async def _score_batch(self, batch: list[_Pending[T, R]]) -> None:
        live = [p for p in batch if not p.future.done()]  # a request whose client left is skipped
        self.stats.abandoned += len(batch) - len(live)
        if not live:
            return
        started = time.perf_counter()
        try:
            results = await asyncio.to_thread(self._score, [p.item for p in live])
        except (
            Exception
        ) as e:  # handed to every waiting request, which raises it; the worker lives on
            for p in live:
                self._fail(p, e)
            return
        seconds = time.perf_counter() - started
        if len(results) != len(live):
            error = InvariantError(f"scorer returned {len(results)} results for {len(live)} items")
            for p in live:
                self._fail(p, error)
            return
        for p, result in zip(live, results, strict=True):
            if p.future.done():
                continue
            if isinstance(result, Exception):
                p.future.set_exception(result)
            else:
                p.future.set_result(result)
        self.stats.batches += 1
        self.stats.scored += len(live)
        self.stats.largest = max(self.stats.largest, len(live))
        if self._on_batch is not None:
            self._on_batch(len(live), seconds)

    @staticmethod
    def _fail(pending: _Pending[T, R], error: BaseException) -> None:
        if not pending.future.done():
            pending.future.set_exception(error)
