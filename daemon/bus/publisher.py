"""MqttBus: log events out to MQTT through a bounded queue, a retained status, and control commands in.

The trading path only ever calls `on_event` (a log sink), which filters, copies and enqueues with
put_nowait; when the queue is full the oldest event is dropped and counted. One background task
connects with backoff (the aiomqtt reconnection loop), publishes, and feeds control messages to the
Controller. The journal, not MQTT, is the record: nothing here can stop or slow trading.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import os
import re
import threading
from collections.abc import Callable, Mapping, MutableMapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import aiomqtt
import msgspec
import structlog

from daemon.bus.config import MqttConfig, Topics, check, credentials, tls_context, topics
from daemon.errors import ConfigError
from daemon.log_setup import add_event_sink, remove_event_sink
from daemon.supervisor import Backoff, TaskHealth, describe

if TYPE_CHECKING:
    from daemon.control import Controller

log = structlog.get_logger("daemon.bus")

TASK_NAME = "mqtt"

StatusSource = Callable[[], Mapping[str, Any]]


class BusStats(msgspec.Struct, kw_only=True):
    """Counters for /metrics and the status message."""

    queued: int = 0
    published: int = 0
    dropped: int = 0
    dropped_unreported: int = 0
    connects: int = 0
    reconnects: int = 0
    publish_errors: int = 0
    commands: int = 0


class _Outbound(msgspec.Struct, frozen=True, kw_only=True):
    topic: str
    fields: dict[str, Any]
    qos: int
    retain: bool = False


def _patterns(globs: tuple[str, ...]) -> re.Pattern[str]:
    if not globs:
        return re.compile(r"(?!)")
    return re.compile("|".join(fnmatch.translate(g) for g in globs))


def _fallback(value: Any) -> Any:
    """Encode what msgspec does not know (exceptions, paths, numpy scalars) as text."""
    item = getattr(value, "item", None)
    if callable(item):
        with contextlib.suppress(Exception):
            return item()
    return str(value)


_encoder = msgspec.json.Encoder(enc_hook=_fallback)


def encode_event(fields: Mapping[str, Any]) -> bytes:
    """JSON for one event; values msgspec cannot encode become strings."""
    return _encoder.encode(dict(fields))


class MqttBus:
    """Async context manager: registers the log sink, runs the connection task, says offline on exit."""

    def __init__(
        self,
        *,
        config: MqttConfig,
        account: str,
        controller: Controller | None = None,
        status: StatusSource | None = None,
        env: Mapping[str, str] | None = None,
        health: TaskHealth | None = None,
    ) -> None:
        problem = check(config)
        if problem:
            raise ConfigError(problem)
        self.config = config
        self.account = account
        self.topics: Topics = topics(config, account)
        self.username, self._password = credentials(config, env)
        self.controller = controller
        self._status_source = status
        self.stats = BusStats()
        self.health = health if health is not None else TaskHealth()
        self.connected = False
        self._send = _patterns(config.events)
        self._qos1 = _patterns(config.qos1_events)
        self._decisions: dict[str, int | None] = {}
        self._queue: asyncio.Queue[_Outbound] = asyncio.Queue(maxsize=config.queue_size)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._entered = False

    # ---- lifecycle ----------------------------------------------------------------------------
    async def __aenter__(self) -> MqttBus:
        if self._entered:
            msg = "MqttBus is not reentrant"
            raise RuntimeError(msg)
        self._entered = True
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._stopping = asyncio.Event()
        add_event_sink(self.on_event)
        self._task = asyncio.create_task(self._run(), name="mqtt-bus")
        return self

    async def __aexit__(self, *exc: object) -> None:
        remove_event_sink(self.on_event)
        self._stopping.set()
        task, self._task = self._task, None
        if task is not None:
            try:
                await asyncio.wait_for(task, self.config.stop_timeout_seconds)
            except TimeoutError:
                log.warning("mqtt.stop_timed_out", queued=self._queue.qsize())
        self._entered = False
        self._loop = None

    @property
    def queue_depth(self) -> int:
        return self._queue.qsize()

    # ---- the trading side: never blocks -------------------------------------------------------
    def on_event(self, name: str, event_dict: MutableMapping[str, Any]) -> None:
        """Log sink: enqueue events an operator cares about; drop the oldest when the queue is full."""
        qos = self._decisions.get(name, -1)
        if qos == -1:
            qos = (1 if self._qos1.match(name) else 0) if self._send.match(name) else None
            if len(self._decisions) < 10_000:
                self._decisions[name] = qos
        if qos is None or self._loop is None:
            return
        item = _Outbound(topic=self.topics.event(name), fields=dict(event_dict), qos=qos)
        if threading.get_ident() == self._loop_thread:
            self._offer(item)
        else:
            with contextlib.suppress(RuntimeError):  # loop closed while a thread was logging
                self._loop.call_soon_threadsafe(self._offer, item)

    def _offer(self, item: _Outbound) -> None:
        if self._queue.full():
            with contextlib.suppress(asyncio.QueueEmpty):
                self._queue.get_nowait()
                self.stats.dropped += 1
                self.stats.dropped_unreported += 1
        self._queue.put_nowait(item)
        self.stats.queued += 1

    # ---- the connection task ------------------------------------------------------------------
    def _client(self) -> aiomqtt.Client:
        cfg = self.config
        offline = encode_event(
            {"state": "offline", "account": self.account, "reason": "connection_lost"}
        )
        return aiomqtt.Client(
            cfg.host,
            cfg.port,
            username=self.username,
            password=self._password,
            identifier=cfg.client_id or f"vlmtrader-{self.account}",
            will=aiomqtt.Will(self.topics.status, offline, qos=1, retain=True),
            keepalive=cfg.keepalive_seconds,
            timeout=cfg.publish_timeout_seconds,
            tls_context=tls_context(cfg),
            tls_insecure=cfg.tls.insecure if cfg.tls is not None else None,
            max_queued_incoming_messages=1_000,
        )

    async def _run(self) -> None:
        """Connect, serve, and on failure wait with jittered exponential backoff; stop when asked.

        Supervised: an unexpected exception (a bug, a library error) is logged as task.failed,
        marks the task down for /readyz and /metrics, and the session starts again."""
        cfg = self.config
        backoff = Backoff(minimum=cfg.reconnect_min_seconds, maximum=cfg.reconnect_max_seconds)
        while not self._stopping.is_set():
            delay = backoff.next_delay()
            try:
                async with self._client() as client:
                    backoff.reset()
                    await self._session(client)
                    return
            except aiomqtt.MqttError as e:
                if self.connected:
                    log.warning("mqtt.disconnected", error=str(e), queued=self._queue.qsize())
                else:
                    log.warning(
                        "mqtt.connect_failed",
                        host=cfg.host,
                        port=cfg.port,
                        error=str(e),
                        retry_seconds=round(delay, 3),
                    )
                self.connected = False
            except Exception as e:  # supervision: the MQTT task never ends quietly
                self.connected = False
                self.health.down(TASK_NAME, describe(e))
                log.error(
                    "task.failed",
                    task=TASK_NAME,
                    error=describe(e),
                    restarts=self.health.restarts[TASK_NAME],
                    retry_seconds=round(delay, 3),
                )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay)

    async def _session(self, client: aiomqtt.Client) -> None:
        self.connected = True
        self.health.up(TASK_NAME)
        self.stats.connects += 1
        if self.stats.connects > 1:
            self.stats.reconnects += 1
        log.info(
            "mqtt.connected",
            host=self.config.host,
            port=self.config.port,
            reconnects=self.stats.reconnects,
        )
        await self._publish_status(client, "online")
        if self.controller is not None and self.config.control:
            await client.subscribe(self.topics.control, qos=1)
        self._report_dropped()
        tasks = [
            asyncio.create_task(self._pump(client)),
            asyncio.create_task(self._listen(client)),
            asyncio.create_task(self._status_loop(client)),
        ]
        stop = asyncio.create_task(self._stopping.wait())
        try:
            done, _ = await asyncio.wait([*tasks, stop], return_when=asyncio.FIRST_COMPLETED)
        finally:
            await _cancel_all([*tasks, stop])
        for t in tasks:
            error = t.exception() if t in done else None
            if error is not None:
                if not isinstance(error, aiomqtt.MqttError):
                    # A clean disconnect sends no last will: say so before the session restarts.
                    with contextlib.suppress(aiomqtt.MqttError):
                        await self._publish_status(
                            client, "degraded", reason=f"task_failed: {describe(error)}"
                        )
                raise error
        await self._flush(client)
        await self._publish_status(client, "offline", reason="stopped")
        self.connected = False
        log.info("mqtt.stopped", published=self.stats.published, dropped=self.stats.dropped)

    async def _pump(self, client: aiomqtt.Client) -> None:
        while True:
            item = await self._queue.get()
            await self._publish(client, item)

    async def _publish(self, client: aiomqtt.Client, item: _Outbound) -> None:
        try:
            await client.publish(
                item.topic, encode_event(item.fields), qos=item.qos, retain=item.retain
            )
        except aiomqtt.MqttError:
            self.stats.publish_errors += 1
            self.stats.dropped += 1
            self.stats.dropped_unreported += 1
            raise
        self.stats.published += 1

    async def _flush(self, client: aiomqtt.Client) -> None:
        """On stop: publish what is queued (bounded by the stop timeout of __aexit__)."""
        with contextlib.suppress(aiomqtt.MqttError):
            while not self._queue.empty():
                await self._publish(client, self._queue.get_nowait())

    def _report_dropped(self) -> None:
        if self.stats.dropped_unreported:
            count, self.stats.dropped_unreported = self.stats.dropped_unreported, 0
            log.warning("telemetry.dropped", dropped=count, dropped_total=self.stats.dropped)

    async def _listen(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            self.stats.commands += 1
            raw = _payload_bytes(message.payload)
            if self.controller is None:
                continue
            if not message.topic.matches(self.topics.control):
                self.controller.reject(
                    source="mqtt",
                    reason="topic",
                    error=f"commands are only taken on {self.topics.control}, "
                    f"not {message.topic.value}",
                )
                continue
            await self.controller.handle(raw, source="mqtt")
            await self._publish_status(client, "online")

    async def _status_loop(self, client: aiomqtt.Client) -> None:
        interval = self.config.status_interval_seconds
        if interval <= 0:
            await asyncio.Event().wait()
        while True:
            await asyncio.sleep(interval)
            await self._publish_status(client, "online")
            self._report_dropped()

    async def _publish_status(
        self, client: aiomqtt.Client, state: str, *, reason: str = ""
    ) -> None:
        fields: dict[str, Any] = {
            "state": state,
            "account": self.account,
            "pid": os.getpid(),
            "ts": datetime.now(UTC),
            "telemetry_dropped": self.stats.dropped,
            "reconnects": self.stats.reconnects,
        }
        if reason:
            fields["reason"] = reason
        if self._status_source is not None and state == "online":
            fields["daemon"] = dict(self._status_source())
        await self._publish(
            client, _Outbound(topic=self.topics.status, fields=fields, qos=1, retain=True)
        )


async def _cancel_all(tasks: list[asyncio.Task[Any]]) -> None:
    """Cancel until done: 3.11's wait_for (in aiomqtt.publish) can swallow a cancel racing a PUBACK."""
    pending = [t for t in tasks if not t.done()]
    while pending:
        for t in pending:
            t.cancel()
        await asyncio.wait(pending, timeout=0.1)
        pending = [t for t in pending if not t.done()]


def _payload_bytes(payload: Any) -> bytes:
    if isinstance(payload, bytes | bytearray):
        return bytes(payload)
    if payload is None:
        return b""
    return str(payload).encode()
