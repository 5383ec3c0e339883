"""`vlmtrader run` driven by bars another process publishes over MQTT (feed.kind: mqtt)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import aiomqtt
import msgspec
import pytest

from strategy.market_sim import MarketSimulator, SimMarketConfig
from tests.integration.e2e_helpers import (
    BASE,
    DAEMON_ENV,
    e2e_config,
    log_events,
    orders_in_journal,
    running_daemon,
    until,
)
from tests.integration.mosquitto import USERS, Mosquitto, running_mosquitto

pytestmark = pytest.mark.integration
BARS_TOPIC = f"{BASE}/bars"


@pytest.fixture(scope="module")
def broker() -> Iterator[Mosquitto]:
    with running_mosquitto() as server:
        yield server


def batches(n: int) -> list[bytes]:
    config = SimMarketConfig(symbols=("SIM0", "SIM1", "SIM2"), seed=9, pattern_rate=0.1)
    sim = MarketSimulator(config=config, start=datetime(2026, 2, 2, 14, 30, tzinfo=UTC))
    out = []
    for _ in range(n):
        out.append(msgspec.json.encode([msgspec.to_builtins(bar) for bar in sim.next_batch()]))
    return out


def publish_all(port: int, payloads: list[bytes]) -> None:
    async def send() -> None:
        async with aiomqtt.Client(
            "127.0.0.1", port, username="feeder", password=USERS["feeder"]
        ) as client:
            for payload in payloads:
                await client.publish(BARS_TOPIC, payload, qos=1)

    asyncio.run(send())


def test_run_when_bars_published_over_mqtt_then_daemon_trades_and_bad_messages_are_rejected(
    tmp_path: Path, broker: Mosquitto
) -> None:
    config = e2e_config(
        tmp_path,
        mqtt_port=broker.port,
        extra={"feed": {"kind": "mqtt"}, "mqtt": {"bar_source": {"topic": "bars"}}},
    )
    payloads = batches(160)
    with running_daemon(config, tmp_path, env=DAEMON_ENV) as daemon:
        publish_all(broker.port, [*payloads[:80], b"{not json", *payloads[80:]])
        until(lambda: orders_in_journal(tmp_path) > 0, daemon=daemon, timeout=60, what="orders")
        until(
            lambda: bool(log_events(daemon, "feed.message_rejected")),
            daemon=daemon,
            what="the bad message's rejection",
        )
    rejected = log_events(daemon, "feed.message_rejected")
    assert len(rejected) == 1
    assert daemon.proc.returncode == 0
    submitted = log_events(daemon, "order.submitted")
    assert submitted
    assert {e["symbol"] for e in submitted} <= {"SIM0", "SIM1", "SIM2"}
