"""Every family a real `vlmtrader run` serves on /metrics moves after the action that feeds it,
read over real HTTP: a series fed by a log event nothing emits would stay flat here."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.e2e_helpers import (
    API_AUTH,
    e2e_config,
    log_events,
    orders_in_journal,
    running_daemon,
    until,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]

# family -> the series (sample name, labels) the action below must move
MOVED_BY_TRADING = {
    "vlmtrader_bar_to_order_seconds": ("vlmtrader_bar_to_order_seconds_count", ()),
    "vlmtrader_inference_seconds": (
        "vlmtrader_inference_seconds_count",
        (("scorer", "rules"),),
    ),
    "vlmtrader_orders": ("vlmtrader_orders_total", (("status", "submitted"),)),
    "vlmtrader_signals": ("vlmtrader_signals_total", ()),
    "vlmtrader_signals_scored": ("vlmtrader_signals_scored_total", (("scorer", "rules"),)),
    "vlmtrader_bars_rejected": ("vlmtrader_bars_rejected_total", (("reason", "price_jump"),)),
}
MOVED_BY_CONTROL = {
    "vlmtrader_control_commands": (
        "vlmtrader_control_commands_total",
        (("result", "applied"),),
    ),
    "vlmtrader_trading_state": ("vlmtrader_trading_state", (("state", "halted"),)),
    "vlmtrader_risk_rejections": ("vlmtrader_risk_rejections_total", (("reason", "halted"),)),
}
# Read from the daemon's state at scrape time (no event feeds them): present, with their values.
PULLED = {"vlmtrader_queue_depth", "vlmtrader_task_up", "vlmtrader_task_restarts"}
# Families this daemon (rules, no MQTT, no shadow) serves that move only with a bundle, proven on
# a daemon that has one: tests/integration/test_daemon_model_swap.py (shadow test).
MOVED_ELSEWHERE = {"vlmtrader_render_seconds"}


def _scrape(http: httpx.Client) -> tuple[set[str], Samples]:
    response = http.get("/metrics")
    assert response.status_code == 200
    families = list(text_string_to_metric_families(response.text))
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value for f in families for s in f.samples
    }
    served = {f.name for f in families if not f.name.endswith("_created")}  # counters' timestamps
    return served, samples


def _fills(samples: Samples) -> float:
    return sum(v for (name, _), v in samples.items() if name == "vlmtrader_fills_total")


def test_metrics_when_each_action_taken_then_every_family_it_feeds_moves(tmp_path: Path) -> None:
    # A tight jump limit: the simulated bars now and then jump past it, so bar.rejected happens.
    extra = {"bars": {"max_jump_atr": 1.0, "min_jump_fraction": 0.0}}
    config = e2e_config(tmp_path, api=True, extra=extra)
    with running_daemon(config, tmp_path) as daemon:
        (started,) = log_events(daemon, "api.started")
        with httpx.Client(base_url=f"http://127.0.0.1:{started['port']}", timeout=30) as http:
            _, before = _scrape(http)
            # The trading state is served from the first scrape, before any state change.
            assert before[("vlmtrader_trading_state", (("state", "active"),))] == 1
            assert before[("vlmtrader_trading_state", (("state", "halted"),))] == 0

            def moved(series: dict[str, tuple[str, tuple[tuple[str, str], ...]]]) -> bool:
                _, now = _scrape(http)
                return all(now.get(k, 0.0) > before.get(k, 0.0) for k in series.values())

            def wait(what: str, done: Callable[[], bool]) -> None:
                until(done, daemon=daemon, timeout=60, what=what)

            wait("orders, fills and a rejected bar", lambda: moved(MOVED_BY_TRADING)
                 and _fills(_scrape(http)[1]) > _fills(before) and orders_in_journal(tmp_path) > 0)  # fmt: skip
            bad = http.post("/control/set_state", json={"state": "sideways"}, headers=API_AUTH)
            halt = http.post("/control/set_state", json={"state": "halted"}, headers=API_AUTH)
            assert (bad.status_code, halt.status_code) == (422, 200), (bad.text, halt.text)
            wait("a halted rejection", lambda: moved(MOVED_BY_CONTROL))
            families, after = _scrape(http)

    assert after[("vlmtrader_control_commands_total", (("result", "rejected"),))] >= 1
    task_up = [v for (name, _), v in after.items() if name == "vlmtrader_task_up"]
    assert set(task_up) == {1.0}  # every supervised task running (and at least one)
    covered = {*MOVED_BY_TRADING, *MOVED_BY_CONTROL, "vlmtrader_fills"}
    # Every family served is proven to move here, or is pulled state, or is proven elsewhere.
    assert families == covered | PULLED | MOVED_ELSEWHERE
