"""Bars published by another process over MQTT as a feed: one JSON message, one batch closed at one time.

A message on `<prefix>/<account>/<bar_source.topic>` is a JSON list of bar objects
{symbol, ts, open, high, low, close, volume}, all closing at the same ts (ISO 8601 with a
timezone). It is validated at the edge with msgspec; an oversized, malformed or inconsistent
message, one closing more than max_future_seconds ahead of this machine's clock, or one not
after the last accepted batch, is dropped with one `feed.message_rejected`
line and nothing else changes. A background task subscribes (QoS 1, persistent session, so
batches published while the link was down arrive after the reconnect) and reconnects with
exponential backoff; accepted batches wait in a bounded queue whose oldest batch is dropped,
and counted, when the consumer falls behind.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime
from types import TracebackType
from typing import Annotated, Any

import aiomqtt
import msgspec
import structlog

from daemon.bus.config import (
    MqttBarSourceConfig,
    MqttConfig,
    Topics,
    check,
    credentials,
    tls_context,
    topics,
)
from daemon.errors import ConfigError
from daemon.supervisor import Backoff, describe
from strategy.types import Bar

log = structlog.get_logger("daemon.feeds.mqtt")

Symbol = Annotated[str, msgspec.Meta(min_length=1, max_length=32, pattern=r"^[A-Za-z0-9._/-]+$")]
Price = Annotated[float, msgspec.Meta(gt=0)]
MAX_BARS_PER_MESSAGE = 10_000
_ERROR_CHARS = 300


class BarMessage(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One bar as published on the bars topic; ts is the bar close with a timezone."""

    symbol: Symbol
    ts: Annotated[datetime, msgspec.Meta(tz=True)]
    open: Price
    high: Price
    low: Price
    close: Price
    volume: Annotated[float, msgspec.Meta(ge=0)]


BatchMessage = Annotated[
    list[BarMessage], msgspec.Meta(min_length=1, max_length=MAX_BARS_PER_MESSAGE)
]
_decoder = msgspec.json.Decoder(BatchMessage)


class MessageRejected(Exception):
    """Why one bars message was refused: reason is a stable code, the message a sentence."""

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class BarFeedStats(msgspec.Struct, kw_only=True):
    """Counters of the MQTT bar source."""

    messages: int = 0
    batches: int = 0
    rejected: int = 0
    dropped: int = 0
    skipped: int = 0
    connects: int = 0
    reconnects: int = 0


def decode_batch(raw: bytes, *, max_bytes: int) -> list[Bar]:
    """One message -> one batch of Bars closed at one ts; MessageRejected names what is wrong."""
    if len(raw) > max_bytes:
        msg = f"message of {len(raw)} bytes is over max_message_bytes ({max_bytes})"
        raise MessageRejected(msg, reason="too_large")
    try:
        rows = _decoder.decode(raw)
    except msgspec.ValidationError as e:
        raise MessageRejected(_one_line(e), reason="invalid") from None
    except msgspec.DecodeError as e:
        msg = f"not valid JSON: {_one_line(e)}"
        raise MessageRejected(msg, reason="malformed") from None
    ts = rows[0].ts
    seen: set[str] = set()
    bars: list[Bar] = []
    for i, r in enumerate(rows):
        where = f"$[{i}]"
        if r.ts != ts:
            msg = f"{where}.ts {r.ts.isoformat()} differs from $[0].ts {ts.isoformat()}: one message, one bar close"
            raise MessageRejected(msg, reason="mixed_ts")
        if r.symbol in seen:
            msg = f"{where}.symbol {r.symbol!r} appears twice in one batch"
            raise MessageRejected(msg, reason="duplicate_symbol")
        seen.add(r.symbol)
        if r.high < max(r.open, r.close, r.low) or r.low > min(r.open, r.close):
            msg = f"{where}: high/low do not contain open and close ({r.symbol})"
            raise MessageRejected(msg, reason="invalid")
        bars.append(
            Bar(
                symbol=r.symbol,
                ts=r.ts.astimezone(UTC),
                open=r.open,
                high=r.high,
                low=r.low,
                close=r.close,
                volume=r.volume,
            )
        )
    return bars


def _one_line(text: object) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= _ERROR_CHARS else line[: _ERROR_CHARS - 3] + "..."


class MqttBarFeed:
    """Async context manager streaming batches of bars from MQTT; reusable, not re-entrant."""

    def __init__(
        self,
        *,
        config: MqttConfig,
        account: str,
        env: Mapping[str, str] | None = None,
        history: int = 1_000,
    ) -> None:
        problem = check(config)
        if problem:
            raise ConfigError(problem)
        self.config = config
        self.source: MqttBarSourceConfig = config.bar_source or MqttBarSourceConfig()
        self.account = account
        self.topics: Topics = topics(config, account)
        self.username, self._password = credentials(config, env)
        self.client_id = f"{config.client_id or f'vlmtrader-{account}'}-bars"
        self.stats = BarFeedStats()
        self._connected = False
        self._history: deque[list[Bar]] = deque(maxlen=max(history, 1))
        self._queue: asyncio.Queue[list[Bar] | None] = asyncio.Queue(maxsize=self.source.queue_size)
        self._last_ts: datetime | None = None
        self._task: asyncio.Task[None] | None = None
        self._entered = False

    @property
    def connected(self) -> bool:
        """True while subscribed to the bars topic."""
        return self._connected

    @property
    def queue_depth(self) -> int:
        return self._queue.qsize()

    async def __aenter__(self) -> MqttBarFeed:
        if self._entered:
            msg = "MqttBarFeed is already open; it can be reused but not re-entered"
            raise RuntimeError(msg)
        self._entered = True
        self._queue = asyncio.Queue(maxsize=self.source.queue_size)
        self._task = asyncio.create_task(self._run(), name="mqtt-bar-feed")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._connected = False
        self._offer(None)  # wakes a consumer still waiting in closed_bars
        self._entered = False

    # ---- the consumer side --------------------------------------------------------------------
    async def closed_bars(self, resume_after: datetime | None = None) -> AsyncIterator[list[Bar]]:
        """Yield each accepted batch closing after resume_after, in arrival order, until the feed closes."""
        if not self._entered:
            msg = "MqttBarFeed.closed_bars needs the feed open (async with MqttBarFeed(...))"
            raise RuntimeError(msg)
        log.info(
            "feed.started",
            kind="mqtt",
            topic=self.topics.bars,
            resume_after=resume_after.isoformat() if resume_after else None,
        )
        last = resume_after
        while True:
            batch = await self._queue.get()
            if batch is None:
                break
            ts = batch[0].ts
            if last is not None and ts <= last:
                self.stats.skipped += 1
                log.debug("feed.batch_skipped", kind="mqtt", bar_ts=ts.isoformat())
                continue
            last = ts
            yield batch
        log.info("feed.exhausted", kind="mqtt", batches=self.stats.batches)

    async def backfill(self, n: int, before: datetime | None = None) -> list[list[Bar]]:
        """The last n batches received closing at or before `before` (None: any), oldest first; may be empty."""
        batches = [b for b in self._history if before is None or b[0].ts <= before]
        return batches[-n:] if n > 0 else []

    # ---- the connection task ------------------------------------------------------------------
    def _client(self) -> aiomqtt.Client:
        cfg = self.config
        return aiomqtt.Client(
            cfg.host,
            cfg.port,
            username=self.username,
            password=self._password,
            identifier=self.client_id,
            clean_session=False,
            keepalive=cfg.keepalive_seconds,
            timeout=cfg.publish_timeout_seconds,
            tls_context=tls_context(cfg),
            tls_insecure=cfg.tls.insecure if cfg.tls is not None else None,
            max_queued_incoming_messages=max(self.source.queue_size, 1_000),
        )

    async def _run(self) -> None:
        """Connect, subscribe and read; on a lost link wait with jittered exponential backoff
        (capped at reconnect_max_seconds) and try again. Supervised: an unexpected exception is
        logged as task.failed and the session starts again."""
        cfg = self.config
        backoff = Backoff(minimum=cfg.reconnect_min_seconds, maximum=cfg.reconnect_max_seconds)
        while True:
            delay = backoff.next_delay()
            try:
                async with self._client() as client:
                    backoff.reset()
                    await self._session(client)
            except aiomqtt.MqttError as e:
                was_connected, self._connected = self._connected, False
                log.warning(
                    "feed.reconnecting",
                    kind="mqtt",
                    host=cfg.host,
                    port=cfg.port,
                    error=_one_line(e),
                    was_connected=was_connected,
                    retry_seconds=round(delay, 3),
                )
            except Exception as e:  # supervision: the bar feed never ends quietly
                self._connected = False
                log.error(
                    "task.failed",
                    task="mqtt_feed",
                    error=describe(e),
                    retry_seconds=round(delay, 3),
                )
            await asyncio.sleep(delay)

    async def _session(self, client: aiomqtt.Client) -> None:
        await client.subscribe(self.topics.bars, qos=1)
        self._connected = True
        self.stats.connects += 1
        if self.stats.connects > 1:
            self.stats.reconnects += 1
        log.info(
            "feed.connected",
            kind="mqtt",
            host=self.config.host,
            port=self.config.port,
            topic=self.topics.bars,
            reconnects=self.stats.reconnects,
        )
        async for message in client.messages:
            self.accept(_payload_bytes(message.payload), topic=message.topic.value)
        msg = "message stream ended"
        raise aiomqtt.MqttError(msg)

    def accept(self, raw: bytes, *, topic: str = "") -> list[Bar] | None:
        """Validate one message and queue its batch; returns the batch, or None when it was rejected."""
        self.stats.messages += 1
        try:
            batch = decode_batch(raw, max_bytes=self.source.max_message_bytes)
            self._check_not_future(batch[0].ts)
            self._check_after_last(batch[0].ts)
        except MessageRejected as e:
            self.stats.rejected += 1
            log.warning(
                "feed.message_rejected",
                kind="mqtt",
                topic=topic or self.topics.bars,
                reason=e.reason,
                error=str(e),
                size=len(raw),
            )
            return None
        self._last_ts = batch[0].ts
        self.stats.batches += 1
        self._history.append(batch)
        self._offer(batch)
        return batch

    def _check_not_future(self, ts: datetime) -> None:
        ahead = (ts - datetime.now(UTC)).total_seconds()
        if ahead > self.source.max_future_seconds:
            msg = (
                f"batch at {ts.isoformat()} closes {ahead:.0f} s after this machine's clock "
                f"(max_future_seconds {self.source.max_future_seconds:g}): check the publisher's clock"
            )
            raise MessageRejected(msg, reason="future")

    def _check_after_last(self, ts: datetime) -> None:
        last = self._last_ts
        if last is not None and ts <= last:
            msg = f"batch at {ts.isoformat()} is not after the last accepted batch ({last.isoformat()})"
            raise MessageRejected(msg, reason="out_of_order")

    def _offer(self, item: list[Bar] | None) -> None:
        if self._queue.full():
            with contextlib.suppress(asyncio.QueueEmpty):
                dropped = self._queue.get_nowait()
                if dropped is not None:
                    self.stats.dropped += 1
                    log.warning(
                        "feed.batch_dropped",
                        kind="mqtt",
                        reason="queue_full",
                        bar_ts=dropped[0].ts.isoformat(),
                        dropped_total=self.stats.dropped,
                    )
        self._queue.put_nowait(item)


def _payload_bytes(payload: Any) -> bytes:
    if isinstance(payload, bytes | bytearray):
        return bytes(payload)
    if payload is None:
        return b""
    return str(payload).encode()
