"""LiveHub: what the dashboard shows live, taken from the daemon's own event flow.

Orders, fills and operator events arrive through the log sink (as MqttBus gets them); bars and the
equity after each batch arrive from Daemon._consume once the batch's orders are out. Each /events
stream has its own bounded queue: a client that falls behind is dropped (one log line), so nothing
here can stop or slow trading. Bars and equity are kept in small rings for the page's first paint.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping, MutableMapping, Sequence
from datetime import datetime
from typing import Any

import msgspec
import structlog

from daemon.bus.publisher import encode_event
from daemon.log_setup import add_event_sink, remove_event_sink
from strategy.bars import BarStore, bar_at
from strategy.types import Bar

log = structlog.get_logger("daemon.api.live")

# Log events a dashboard shows, by the SSE event type the page listens for.
EVENT_KINDS: dict[str, str] = {
    "order.submitted": "order",
    "order.status_changed": "order",
    "order.cancel_requested": "order",
    "order.filled": "fill",
    "risk.rejected": "notice",
    "daemon.paused": "notice",
    "daemon.resumed": "notice",
    "daemon.flattened": "notice",
    "trading_state.changed": "notice",
    "bundle.loaded": "notice",
    "scorer.swapped": "notice",
    "model.drift_detected": "notice",
    "control.rejected": "notice",
}
_CLOSE = ("", "")  # the sentinel that ends one stream


class LiveStats(msgspec.Struct, kw_only=True):
    """Counters for tests, the bench and the dashboard's own footer."""

    clients: int = 0
    events: int = 0
    dropped_clients: int = 0
    refused_clients: int = 0


class EventStream:
    """One /events client: a bounded queue of (kind, json) the hub fills and the response drains."""

    def __init__(self, size: int) -> None:
        self.queue: asyncio.Queue[tuple[str, str]] = asyncio.Queue(maxsize=size)
        self.dropped = False

    async def items(self, *, status_seconds: float) -> AsyncIterator[tuple[str, str] | None]:
        """Each queued item, and None every status_seconds (time for a status snapshot), busy or
        idle."""
        loop = asyncio.get_running_loop()
        due = loop.time() + status_seconds
        while True:
            item: tuple[str, str] | None
            try:
                item = self.queue.get_nowait()
            except asyncio.QueueEmpty:
                try:
                    item = await asyncio.wait_for(self.queue.get(), max(due - loop.time(), 0.0))
                except TimeoutError:
                    item = None
            if item == _CLOSE:
                return
            if item is not None:
                yield item
            if loop.time() >= due:
                due = loop.time() + status_seconds
                yield None


class LiveHub:
    """Async context manager: registers the log sink on enter, ends every stream on exit."""

    def __init__(
        self,
        *,
        queue_size: int = 256,
        max_clients: int = 8,
        bars_per_symbol: int = 500,
        equity_points: int = 5_000,
    ) -> None:
        self.queue_size = queue_size
        self.max_clients = max_clients
        self.bars_per_symbol = bars_per_symbol
        self.stats = LiveStats()
        self.last_drift: dict[str, Any] | None = None
        self._bars: dict[str, deque[dict[str, Any]]] = {}
        self._equity: deque[tuple[int, float]] = deque(maxlen=equity_points)
        self._streams: set[EventStream] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._closed = False

    async def __aenter__(self) -> LiveHub:
        self._closed = False
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        add_event_sink(self.on_event)
        return self

    async def __aexit__(self, *exc: object) -> None:
        """End every stream (and refuse new ones), so the HTTP server's graceful stop need not
        wait for them."""
        self._closed = True
        remove_event_sink(self.on_event)
        for stream in list(self._streams):
            self._end(stream)
        self._loop = None

    # ---- the daemon's side: never blocks --------------------------------------------------------
    def on_event(self, name: str, event_dict: MutableMapping[str, Any]) -> None:
        """Log sink: hand the events a dashboard shows to every stream."""
        kind = EVENT_KINDS.get(name)
        if kind is None or self._loop is None:
            return
        if not self._streams and name != "model.drift_detected":
            return  # nobody is watching: nothing to copy (the drift report is kept regardless)
        fields = {k: v for k, v in event_dict.items() if not k.startswith("_")}
        fields["event"] = name
        if threading.get_ident() == self._loop_thread:
            self._on_loop(kind, fields)
        else:  # a worker thread logged: hand over to the loop
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._on_loop, kind, fields)

    def _on_loop(self, kind: str, fields: dict[str, Any]) -> None:
        if fields["event"] == "model.drift_detected":
            self.last_drift = fields
        self.publish(kind, fields)

    def on_batch(self, batch: Sequence[Bar], *, equity: float) -> None:
        """A batch of closed bars and the equity after it: into the rings and out to the streams."""
        if not batch:
            return
        bars = [candle(bar) for bar in batch]
        for bar, row in zip(batch, bars, strict=True):
            ring = self._bars.get(bar.symbol)
            if ring is None:
                ring = self._bars[bar.symbol] = deque(maxlen=self.bars_per_symbol)
            if ring and ring[-1]["time"] >= row["time"]:
                continue  # a replayed or out-of-order bar: the chart needs ascending times
            ring.append(row)
        time = bars[0]["time"]
        if not self._equity or self._equity[-1][0] < time:
            self._equity.append((time, round(equity, 2)))
        if self._streams:
            self.publish("bar", {"bars": bars, "equity": round(equity, 2), "time": time})

    def seed(self, store: BarStore) -> None:
        """Start the charts with the bars the store holds (after warm-up), oldest first."""
        for symbol in store.symbols:
            window = store.window(symbol)
            if window is None:
                continue
            ring = self._bars.setdefault(symbol, deque(maxlen=self.bars_per_symbol))
            for i in range(len(window.timestamps)):
                row = candle(bar_at(window, i))
                if not ring or ring[-1]["time"] < row["time"]:
                    ring.append(row)

    def publish(self, kind: str, fields: Mapping[str, Any]) -> None:
        """Encode once, queue on every stream; a stream whose queue is full is dropped."""
        if not self._streams:
            return
        self.stats.events += 1
        data = encode_event(fields).decode()
        for stream in list(self._streams):
            try:
                stream.queue.put_nowait((kind, data))
            except asyncio.QueueFull:
                self.stats.dropped_clients += 1
                log.warning("dashboard.client_dropped", queued=stream.queue.qsize(), kind=kind)
                self._end(stream)

    # ---- the streams -----------------------------------------------------------------------------
    def open_stream(self) -> EventStream | None:
        """A new stream, or None when max_clients are already connected or the hub has stopped."""
        if self._closed or len(self._streams) >= self.max_clients:
            self.stats.refused_clients += 1
            return None
        stream = EventStream(self.queue_size)
        self._streams.add(stream)
        self.stats.clients = len(self._streams)
        return stream

    def close_stream(self, stream: EventStream) -> None:
        self._streams.discard(stream)
        self.stats.clients = len(self._streams)

    def _end(self, stream: EventStream) -> None:
        """Empty the stream's queue and leave only the sentinel: its response ends at once."""
        stream.dropped = True
        self.close_stream(stream)
        while not stream.queue.empty():
            stream.queue.get_nowait()
        stream.queue.put_nowait(_CLOSE)

    # ---- reads for the JSON endpoints ------------------------------------------------------------
    def symbols(self) -> list[str]:
        return sorted(self._bars)

    def bars(self, symbol: str, limit: int) -> list[dict[str, Any]]:
        ring = self._bars.get(symbol)
        return list(ring)[-limit:] if ring else []

    def equity(self, limit: int) -> list[tuple[int, float]]:
        return list(self._equity)[-limit:]


def candle(bar: Bar) -> dict[str, Any]:
    """A bar as lightweight-charts wants it: time in UTC seconds (the bar's close)."""
    return {
        "symbol": bar.symbol,
        "time": epoch_seconds(bar.ts),
        "open": bar.open,
        "high": bar.high,
        "low": bar.low,
        "close": bar.close,
        "volume": bar.volume,
    }


def epoch_seconds(ts: datetime) -> int:
    return int(ts.timestamp())


StatusSource = Callable[[], Mapping[str, Any]]
