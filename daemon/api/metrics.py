"""Prometheus metrics, fed by the log-event tap (no calls on the trading path) and read at scrape time."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, MutableMapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from daemon.bus.publisher import BusStats
from daemon.model.shadow import ShadowStats
from daemon.supervisor import TaskHealth
from strategy.types import TradingState

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
_MAX_LABEL_VALUES = 64


class _Labels:
    """Keeps label values bounded: long or too many distinct values become "other"."""

    def __init__(self) -> None:
        self._seen: set[str] = set()

    def __call__(self, value: Any) -> str:
        text = str(value) if value is not None else "none"
        if text in self._seen:
            return text
        if len(text) > 64 or len(self._seen) >= _MAX_LABEL_VALUES:
            return "other"
        self._seen.add(text)
        return text


class _Pulled(Collector):
    """Values read when scraped: queue depths and the MQTT bus counters."""

    def __init__(self) -> None:
        self.queues: dict[str, Callable[[], int]] = {}
        self.bus: Callable[[], BusStats] | None = None
        self.connected: Callable[[], bool] = lambda: False
        self.shadow: Callable[[], ShadowStats | None] | None = None
        self.tasks: TaskHealth | None = None
        self.trading_state: Callable[[], str] | None = None

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        depth = GaugeMetricFamily(
            "vlmtrader_queue_depth", "Items waiting in a queue", labels=["queue"]
        )
        for name, fn in self.queues.items():
            depth.add_metric([name], float(fn()))
        yield depth
        if self.tasks is not None:
            yield from _task_metrics(self.tasks)
        if self.trading_state is not None:
            yield _trading_state_metric(self.trading_state())
        shadow = self.shadow() if self.shadow is not None else None
        if shadow is not None:
            yield from _shadow_metrics(shadow)
        if self.bus is None:
            return
        stats = self.bus()
        yield CounterMetricFamily(
            "vlmtrader_mqtt_reconnects", "MQTT reconnections", value=stats.reconnects
        )
        yield CounterMetricFamily(
            "vlmtrader_telemetry_dropped",
            "Events dropped before reaching MQTT",
            value=stats.dropped,
        )
        yield CounterMetricFamily(
            "vlmtrader_mqtt_published", "Messages published to MQTT", value=stats.published
        )
        yield GaugeMetricFamily(
            "vlmtrader_mqtt_connected",
            "1 when connected to the MQTT broker",
            value=1.0 if self.connected() else 0.0,
        )


class Metrics:
    """Owns a registry; `on_event` is a log sink that turns daemon events into series."""

    def __init__(self, *, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.bar_to_order = Histogram(
            "vlmtrader_bar_to_order_seconds",
            "Bar close arrival to order sent",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.inference = Histogram(
            "vlmtrader_inference_seconds",
            "Model inference per batch, by scorer (rules, ml, clip, ..._shadow)",
            ["scorer"],  # a rule batch takes microseconds, an ML one milliseconds: not one series
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.render = Histogram(
            "vlmtrader_render_seconds",
            "Chart rendering per batch",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.orders = Counter("vlmtrader_orders", "Order status changes", ["status"], registry=r)
        self.fills = Counter("vlmtrader_fills", "Fills", ["side"], registry=r)
        self.risk_rejections = Counter(
            "vlmtrader_risk_rejections", "Intents rejected by risk", ["reason"], registry=r
        )
        self.bars_rejected = Counter(
            "vlmtrader_bars_rejected", "Bars rejected", ["reason"], registry=r
        )
        # signal.scored is an info line only for a signal the strategy may act on (confidence >=
        # strategy.min_confidence; the others are debug lines): counted at info whatever the log
        # level, so the series means the same under `log.level: debug`.
        self.signals = Counter(
            "vlmtrader_signals",
            "Actionable signals: confidence >= strategy.min_confidence (all: signals_scored)",
            registry=r,
        )
        self.signals_scored = Counter(
            "vlmtrader_signals_scored",
            "Every signal a scorer produced (windows scored), actionable or not, by scorer",
            ["scorer"],
            registry=r,
        )
        self.commands = Counter(
            "vlmtrader_control_commands", "Operator commands", ["result"], registry=r
        )
        self._pulled = _Pulled()
        r.register(self._pulled)
        self._labels = {k: _Labels() for k in ("status", "side", "reason", "state", "scorer")}
        self._handlers = self._handler_table()

    def add_queue(self, name: str, depth: Callable[[], int]) -> None:
        """Report a queue's depth at scrape time."""
        self._pulled.queues[name] = depth

    def track_bus(self, stats: Callable[[], BusStats], connected: Callable[[], bool]) -> None:
        """Report the MQTT bus counters at scrape time."""
        self._pulled.bus = stats
        self._pulled.connected = connected

    def track_tasks(self, health: TaskHealth) -> None:
        """Report which supervised background tasks run, and their restarts, at scrape time."""
        self._pulled.tasks = health

    def track_shadow(self, stats: Callable[[], ShadowStats | None]) -> None:
        """Report the shadow bundle's comparison with the live scorer at scrape time (nothing
        while stats() is None: no shadow loaded yet)."""
        self._pulled.shadow = stats

    def track_trading_state(self, state: Callable[[], str]) -> None:
        """Report the trading state at scrape time: from the start (a restored halt included),
        not only after the first trading_state.changed."""
        self._pulled.trading_state = state

    def render_latest(self) -> bytes:
        return generate_latest(self.registry)

    @property
    def events(self) -> frozenset[str]:
        """The log events that move a series (each is emitted by daemon code: test_api_metrics)."""
        return frozenset(self._handlers)

    def on_event(self, name: str, event: MutableMapping[str, Any]) -> None:
        """Log sink: count and time the events the pipeline already emits."""
        handler = self._handlers.get(name)
        if handler is not None:
            handler(event)

    def _handler_table(self) -> Mapping[str, Callable[[MutableMapping[str, Any]], None]]:
        """Event name -> what it moves; built once (on_event runs for every log line)."""
        lab = self._labels
        return {
            "order.submitted": self._order_submitted,
            "order.filled": lambda e: self.fills.labels(side=lab["side"](e.get("side"))).inc(),
            "order.status_changed": lambda e: self.orders.labels(
                status=lab["status"](e.get("status"))
            ).inc(),
            "risk.rejected": lambda e: self.risk_rejections.labels(
                reason=lab["reason"](e.get("reason"))
            ).inc(),
            "bar.rejected": lambda e: self.bars_rejected.labels(
                reason=lab["reason"](e.get("reason"))
            ).inc(),
            "signal.scored": self._signal_scored,
            "charts.rendered": lambda e: _observe_ms(self.render, e.get("duration_ms")),
            "model.inferred": self._inferred,
            "control.applied": lambda _: self.commands.labels(result="applied").inc(),
            "control.rejected": lambda _: self.commands.labels(result="rejected").inc(),
        }

    def _order_submitted(self, event: MutableMapping[str, Any]) -> None:
        self.orders.labels(status="submitted").inc()
        _observe_ms(self.bar_to_order, event.get("latency_ms"))

    def _signal_scored(self, event: MutableMapping[str, Any]) -> None:
        if event.get("level") == "info":
            self.signals.inc()

    def _inferred(self, event: MutableMapping[str, Any]) -> None:
        scorer = self._labels["scorer"](event.get("scorer"))
        _observe_ms(self.inference.labels(scorer=scorer), event.get("duration_ms"))
        items = event.get("items")
        if isinstance(items, int) and not isinstance(items, bool) and items > 0:
            self.signals_scored.labels(scorer=scorer).inc(items)


def _trading_state_metric(current: str) -> GaugeMetricFamily:
    gauge = GaugeMetricFamily(
        "vlmtrader_trading_state", "1 for the current trading state", labels=["state"]
    )
    for state in TradingState:
        gauge.add_metric([state.value], 1.0 if state == current else 0.0)
    return gauge


def _task_metrics(health: TaskHealth) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
    up = GaugeMetricFamily(
        "vlmtrader_task_up", "1 while a supervised background task runs", labels=["task"]
    )
    restarts = CounterMetricFamily(
        "vlmtrader_task_restarts", "Restarts of a supervised background task", labels=["task"]
    )
    for name, running in health.states().items():
        up.add_metric([name], 1.0 if running else 0.0)
        restarts.add_metric([name], float(health.restarts.get(name, 0)))
    yield up
    yield restarts


def _shadow_metrics(stats: ShadowStats) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
    yield CounterMetricFamily(
        "vlmtrader_shadow_signals", "Shadow signals compared with live ones", value=stats.signals
    )
    yield CounterMetricFamily(
        "vlmtrader_shadow_errors", "Shadow batches that failed", value=stats.errors
    )
    if stats.signals:
        yield GaugeMetricFamily(
            "vlmtrader_shadow_direction_agreement",
            "Share of windows where shadow and live P(up) lie on the same side of 0.5",
            value=stats.direction_agreement,
        )
        yield GaugeMetricFamily(
            "vlmtrader_shadow_mean_abs_p_diff",
            "Mean |P(up) shadow - P(up) live| on the same windows",
            value=stats.mean_abs_p_diff,
        )
    if stats.recent_direction_agreement == stats.recent_direction_agreement:  # not nan: reported
        yield GaugeMetricFamily(
            "vlmtrader_shadow_recent_direction_agreement",
            "direction_agreement over the batches of the last shadow.compared log line",
            value=stats.recent_direction_agreement,
        )
        yield GaugeMetricFamily(
            "vlmtrader_shadow_recent_mean_abs_p_diff",
            "mean_abs_p_diff over the batches of the last shadow.compared log line",
            value=stats.recent_mean_abs_p_diff,
        )


def _observe_ms(histogram: Histogram, value: Any) -> None:
    if isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value < 1e9:
        histogram.observe(value / 1000.0)
