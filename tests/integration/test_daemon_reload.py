"""A config reload of a real `vlmtrader run`: SIGHUP, and the MQTT `reload_strategy` command against
a real mosquitto. What a running daemon can take is applied; what needs a restart is refused."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.integration.daemon_process import read_db
from tests.integration.e2e_helpers import (
    CONTROL,
    MqttRecorder,
    command,
    e2e_config,
    journal_path,
    log_events,
    mqtt_publish,
    orders_in_journal,
    running_daemon,
    until,
)
from tests.integration.mosquitto import ACCOUNT, Mosquitto, running_mosquitto

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


@pytest.fixture(scope="module")
def broker() -> Iterator[Mosquitto]:
    with running_mosquitto() as b:
        yield b


def edit_config(path: Path, changes: dict[str, Any]) -> None:
    """Set dotted keys in the YAML file."""
    cfg = yaml.safe_load(path.read_text())
    for dotted, value in changes.items():
        *parents, leaf = dotted.split(".")
        node = cfg
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    path.write_text(yaml.safe_dump(cfg))


def after(events: list[dict[str, Any]], name: str, marker: dict[str, Any]) -> list[dict[str, Any]]:
    """The `name` events logged after `marker` (the daemon's own log order)."""
    return [e for e in events[events.index(marker) + 1 :] if e["event"] == name]


def test_sighup_when_yaml_changed_then_live_keys_applied_restart_keys_refused_and_reported(
    tmp_path: Path,
) -> None:
    config = e2e_config(tmp_path, api=True)
    with running_daemon(config, tmp_path) as daemon:
        (started,) = log_events(daemon, "api.started")
        until(lambda: orders_in_journal(tmp_path) >= 2, daemon=daemon, what="two orders")
        edit_config(
            config,
            {
                "account": "other",  # refused: order ids and topics are fixed at start
                "feed.sim.market.seed": 12,  # refused: the feed is connected at start
                "bars.window": 40,  # refused: the windows are built at start
                "log.level": "debug",
                "risk.max_order_notional": 1000,  # entries of 5000 are now refused by risk
                "scorer.rules.max_edge": 0.11,
                "strategy.hold_bars": 4,
            },
        )
        daemon.proc.send_signal(signal.SIGHUP)
        until(lambda: bool(log_events(daemon, "config.reloaded")), daemon=daemon, what="reload")
        (reloaded,) = log_events(daemon, "config.reloaded")

        def rejected_by_new_limit() -> bool:
            events = log_events(daemon)
            rejected = after(events, "risk.rejected", reloaded)
            return any(e["reason"] == "max_order_notional" for e in rejected)

        until(rejected_by_new_limit, daemon=daemon, what="risk.rejected max_order_notional")
        until(
            lambda: any(e.get("level") == "debug" for e in log_events(daemon)),
            daemon=daemon,
            what="a debug line",
        )
        status = httpx.get(f"http://127.0.0.1:{started['port']}/status", timeout=10).json()
        events = log_events(daemon)

    applied = [
        "log.level",
        "risk.max_order_notional",
        "scorer.rules.max_edge",
        "strategy.hold_bars",
    ]
    refused = ["account", "bars.window", "feed.sim.market.seed"]
    assert reloaded["applied"] == applied
    assert sorted(reloaded["refused"]) == refused
    assert all(why.startswith("needs a restart: ") for why in reloaded["refused"].values())
    assert "order ids" in reloaded["refused"]["account"]
    assert reloaded["level"] == "warning"
    # /status keeps the mode and account the orders use, and shows what the reload did.
    assert (status["mode"], status["account"]) == ("paper-sim", "test")
    assert status["last_reload"]["applied"] == applied
    assert sorted(status["last_reload"]["refused"]) == refused
    # Nothing at debug before the reload, debug lines after it.
    before = events[: events.index(reloaded)]
    assert not [e for e in before if e.get("level") == "debug"]
    # The new rule scorer's edge: p_up = 0.5 +/- 0.11 * confidence, on bars after the swap.
    signals = [e for e in events if e["event"] == "signal.scored"]
    old_signals = [e for e in signals if events.index(e) < events.index(reloaded)]
    swap_bar = max(e["bar_ts"] for e in old_signals)  # the last batch scored before the swap
    new_signals = [e for e in signals if e["bar_ts"] > swap_bar]
    assert new_signals
    assert old_signals
    for e in new_signals:
        assert abs(abs(e["p_up"] - 0.5) - 0.11 * e["confidence"]) < 1e-3, e
    assert any(abs(abs(e["p_up"] - 0.5) - 0.11 * e["confidence"]) > 1e-2 for e in old_signals)
    with read_db(journal_path(tmp_path)) as con:
        prefixes = {r[0].split("-")[0] for r in con.execute("SELECT client_order_id FROM orders")}
    assert prefixes == {"TEST"}


def test_mqtt_reload_when_yaml_changed_then_reply_lists_applied_and_refused_and_orders_follow(
    tmp_path: Path, broker: Mosquitto
) -> None:
    config = e2e_config(tmp_path, mqtt_port=broker.port)
    with MqttRecorder(broker.port) as rec, running_daemon(config, tmp_path) as daemon:
        first = rec.wait_event("order.submitted", daemon=daemon, reason="enter_long")
        edit_config(
            config,
            {
                "account": "other",
                "mqtt.keepalive_seconds": 7,
                "scorer.kind": "ml",
                "strategy.max_quantity": 3,
            },
        )
        mark = rec.mark()
        mqtt_publish(broker.port, "operator", CONTROL, command("reload_strategy", "rl1"))
        applied = rec.wait_event("control.applied", request_id="rl1", daemon=daemon)
        reloaded = rec.wait_event("config.reloaded", mark=mark, daemon=daemon)
        entry_mark = rec.mark()

        def entries_after() -> list[dict[str, Any]]:
            return [
                e
                for e in rec.events("order.submitted", entry_mark)
                if e["reason"].startswith("enter_")
            ]

        until(lambda: len(entries_after()) >= 2, daemon=daemon, what="two entries after reload")
        status = rec.wait_status(
            lambda p: p.get("daemon", {}).get("last_reload") is not None,
            mark=entry_mark,
            daemon=daemon,
        )

    assert applied["command"] == "reload_strategy"
    assert applied["applied"] == ["strategy.max_quantity"]
    assert sorted(applied["refused"]) == ["account", "mqtt.keepalive_seconds", "scorer.kind"]
    assert "MQTT session" in applied["refused"]["mqtt.keepalive_seconds"]
    assert reloaded["applied"] == applied["applied"]
    assert reloaded["refused"] == applied["refused"]
    assert first["quantity"] > 3
    assert all(e["quantity"] <= 3 for e in entries_after())
    assert all(e["client_order_id"].startswith(f"{ACCOUNT.upper()}-") for e in entries_after())
    daemon_status = status.payload["daemon"]
    assert (daemon_status["mode"], daemon_status["account"]) == ("paper-sim", ACCOUNT)
    assert daemon_status["scorer"] == "rules"
    assert rec.statuses(account="other") == []


def test_sighup_when_yaml_invalid_then_reload_failed_and_nothing_changes(tmp_path: Path) -> None:
    config = e2e_config(tmp_path, api=True)
    with running_daemon(config, tmp_path) as daemon:
        (started,) = log_events(daemon, "api.started")
        good = config.read_text()
        edit_config(config, {"strategy.hold_bars": -1, "log.level": "debug"})
        daemon.proc.send_signal(signal.SIGHUP)
        until(lambda: bool(log_events(daemon, "config.reload_failed")), daemon=daemon, what="fail")
        config.write_text(good)
        orders = orders_in_journal(tmp_path)
        until(lambda: orders_in_journal(tmp_path) > orders, daemon=daemon, what="more orders")
        status = httpx.get(f"http://127.0.0.1:{started['port']}/status", timeout=10).json()
        events = log_events(daemon)

    (failed,) = [e for e in events if e["event"] == "config.reload_failed"]
    assert "hold_bars" in failed["error"]
    assert "\n" not in failed["error"]
    assert status["last_reload"] is None
    assert [e for e in events if e["event"] == "config.reloaded"] == []
    assert not [e for e in events if e.get("level") == "debug"]
