"""Metrics: daemon events become Prometheus series; pulled values are read at scrape time."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from daemon.api.metrics import Metrics
from daemon.bus.publisher import BusStats


def _samples(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(metrics.render_latest().decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_on_event_when_pipeline_events_then_counters_and_histograms_move() -> None:
    m = Metrics()
    m.on_event("order.submitted", {"latency_ms": 2.0})
    m.on_event("order.submitted", {"latency_ms": 40.0})
    m.on_event("order.filled", {"side": "buy"})
    m.on_event("order.status_changed", {"status": "rejected"})
    m.on_event("risk.rejected", {"reason": "max_position"})
    m.on_event("risk.rejected", {"reason": "max_position"})
    m.on_event("charts.rendered", {"duration_ms": 12.0})
    m.on_event("model.inferred", {"duration_ms": 30.0, "scorer": "rules"})
    m.on_event("model.inferred", {"duration_ms": 3.0, "scorer": "ml"})
    m.on_event("model.inferred", {"duration_ms": 5.0, "scorer": "ml"})
    m.on_event("control.rejected", {})
    s = _samples(m)
    assert s[("vlmtrader_bar_to_order_seconds_count", ())] == 2
    assert s[("vlmtrader_bar_to_order_seconds_bucket", (("le", "0.0025"),))] == 1
    assert s[("vlmtrader_orders_total", (("status", "submitted"),))] == 2
    assert s[("vlmtrader_orders_total", (("status", "rejected"),))] == 1
    assert s[("vlmtrader_fills_total", (("side", "buy"),))] == 1
    assert s[("vlmtrader_risk_rejections_total", (("reason", "max_position"),))] == 2
    assert s[("vlmtrader_render_seconds_sum", ())] == 0.012
    assert s[("vlmtrader_inference_seconds_count", (("scorer", "rules"),))] == 1
    assert s[("vlmtrader_inference_seconds_count", (("scorer", "ml"),))] == 2  # one series each
    assert s[("vlmtrader_inference_seconds_sum", (("scorer", "ml"),))] == 0.008
    assert s[("vlmtrader_control_commands_total", (("result", "rejected"),))] == 1


def test_trading_state_when_tracked_before_any_change_then_every_state_shown() -> None:
    m = Metrics()
    state = ["active"]
    m.track_trading_state(lambda: state[0])
    s = _samples(m)  # no trading_state.changed yet: the gauge still answers
    assert s[("vlmtrader_trading_state", (("state", "active"),))] == 1
    assert s[("vlmtrader_trading_state", (("state", "halted"),))] == 0
    assert s[("vlmtrader_trading_state", (("state", "reducing"),))] == 0
    state[0] = "halted"  # read at scrape time
    s = _samples(m)
    assert s[("vlmtrader_trading_state", (("state", "halted"),))] == 1
    assert s[("vlmtrader_trading_state", (("state", "active"),))] == 0


def test_signals_when_log_level_debug_then_only_actionable_counted_and_all_scored() -> None:
    # Under log.level debug the sink also sees the signals below min_confidence (debug lines).
    m = Metrics()
    m.on_event("signal.scored", {"level": "info", "confidence": 0.8, "scorer": "rules"})
    m.on_event("signal.scored", {"level": "debug", "confidence": 0.1, "scorer": "rules"})
    m.on_event("signal.scored", {"level": "debug", "confidence": 0.2, "scorer": "rules"})
    m.on_event("model.inferred", {"scorer": "rules", "items": 3, "duration_ms": 0.4})
    m.on_event("model.inferred", {"scorer": "ml", "items": 2, "duration_ms": 3.0})
    m.on_event("model.inferred", {"scorer": "ml", "items": True, "duration_ms": 3.0})
    s = _samples(m)
    assert s[("vlmtrader_signals_total", ())] == 1
    assert s[("vlmtrader_signals_scored_total", (("scorer", "rules"),))] == 3
    assert s[("vlmtrader_signals_scored_total", (("scorer", "ml"),))] == 2


ROOT = Path(__file__).resolve().parents[2]
EVENT_NAME = re.compile(r"[a-z_]+\.[a-z_]+")  # noun.past_tense (STYLE.md 8)


def _logged_event_names() -> set[str]:
    """Every event name code in the daemon, strategy and vlm_engine packages may log: the first
    argument of any call when it is a string literal shaped like an event (log.info("x.y", ...),
    and aliases such as `emit = log.info if ... else log.debug`); metrics.py itself left out."""
    names = set()
    for package in ("daemon", "strategy", "vlm_engine"):
        for path in (ROOT / package).rglob("*.py"):
            if path == ROOT / "daemon" / "api" / "metrics.py":
                continue
            for node in ast.walk(ast.parse(path.read_text())):
                if (
                    isinstance(node, ast.Call)
                    and node.args
                    and isinstance(node.args[0], ast.Constant)
                    and isinstance(node.args[0].value, str)
                    and EVENT_NAME.fullmatch(node.args[0].value)
                ):
                    names.add(node.args[0].value)
    return names


def test_events_when_metrics_listen_then_each_is_logged_by_some_code() -> None:
    logged = _logged_event_names()
    assert {"order.submitted", "model.inferred", "charts.rendered"} <= logged  # the walk finds them
    assert Metrics().events - logged == set()  # a series fed by a name nothing writes never moves


def test_on_event_when_latency_missing_or_bad_then_not_observed() -> None:
    m = Metrics()
    for value in (None, "fast", -1.0, True, float("nan")):
        m.on_event("order.submitted", {"latency_ms": value})
    s = _samples(m)
    assert s[("vlmtrader_bar_to_order_seconds_count", ())] == 0
    assert s[("vlmtrader_orders_total", (("status", "submitted"),))] == 5


def test_labels_when_too_many_distinct_reasons_then_folded_into_other() -> None:
    m = Metrics()
    for i in range(100):
        m.on_event("risk.rejected", {"reason": f"r{i}"})
    reasons = {
        dict(k[1])["reason"] for k in _samples(m) if k[0] == "vlmtrader_risk_rejections_total"
    }
    assert len(reasons) == 65
    assert "other" in reasons


def test_render_when_bus_and_queues_tracked_then_pulled_at_scrape() -> None:
    m = Metrics()
    stats = BusStats(dropped=7, reconnects=2, published=40)
    depth = [3]
    m.add_queue("mqtt", lambda: depth[0])
    m.track_bus(lambda: stats, lambda: True)
    s = _samples(m)
    assert s[("vlmtrader_queue_depth", (("queue", "mqtt"),))] == 3
    assert s[("vlmtrader_telemetry_dropped_total", ())] == 7
    assert s[("vlmtrader_mqtt_reconnects_total", ())] == 2
    assert s[("vlmtrader_mqtt_connected", ())] == 1
    depth[0] = 0
    stats.dropped = 9
    s = _samples(m)
    assert s[("vlmtrader_queue_depth", (("queue", "mqtt"),))] == 0
    assert s[("vlmtrader_telemetry_dropped_total", ())] == 9
