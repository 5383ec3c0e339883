"""The event bus over TLS to a real mosquitto: verified against the broker's CA, refused otherwise."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiomqtt
import msgspec
import pytest
import structlog

from daemon.bus.config import MqttConfig
from daemon.bus.publisher import MqttBus
from tests.integration.mosquitto import (
    ACCOUNT,
    PREFIX,
    USERS,
    Mosquitto,
    daemon_log_tap,
    running_mosquitto,
)

pytestmark = pytest.mark.integration
log = structlog.get_logger("tests.mqtt_tls")
DAEMON_ENV = {"VLMTRADER_MQTT_PASSWORD": USERS["daemon"]}


@pytest.fixture(scope="module")
def broker() -> Iterator[Mosquitto]:
    with running_mosquitto(tls=True) as b:
        yield b


@pytest.fixture(autouse=True)
def event_tap() -> Iterator[None]:
    with daemon_log_tap():
        yield


def tls_config(broker: Mosquitto, ca_file: Path) -> MqttConfig:
    assert broker.tls_port is not None
    return msgspec.convert(
        {
            "enabled": True,
            "port": broker.tls_port,
            "username": "daemon",
            "tls": {"ca_file": str(ca_file)},
            "reconnect_min_seconds": 0.05,
            "reconnect_max_seconds": 0.2,
            "stop_timeout_seconds": 2.0,
        },
        MqttConfig,
    )


async def first_event(
    broker: Mosquitto, config: MqttConfig, *, wait: float
) -> dict[str, Any] | None:
    """Publish one order event through the bus; what a plain-port subscriber received, if anything."""
    topic = f"{PREFIX}/{ACCOUNT}/events/order.submitted"
    async with aiomqtt.Client(
        "127.0.0.1", broker.port, username="viewer", password=USERS["viewer"]
    ) as sub:
        await sub.subscribe(topic, qos=1)
        async with MqttBus(config=config, account=ACCOUNT, env=DAEMON_ENV) as bus:
            for _ in range(int(wait / 0.05)):
                if bus.connected:
                    break
                await asyncio.sleep(0.05)
            log.info("order.submitted", symbol="AAA", client_order_id="TLS-1", quantity=1.0)
            try:
                async with asyncio.timeout(wait):
                    async for message in sub.messages:
                        return dict(msgspec.json.decode(message.payload))
            except TimeoutError:
                return None
    return None


def test_bus_when_tls_with_broker_ca_then_events_arrive(broker: Mosquitto) -> None:
    event = asyncio.run(first_event(broker, tls_config(broker, broker.ca_file), wait=10.0))
    assert event is not None
    assert event["client_order_id"] == "TLS-1"


def test_bus_when_tls_with_another_ca_then_nothing_is_sent(
    broker: Mosquitto, tmp_path: Path
) -> None:
    other = tmp_path / "other-ca.crt"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=someone else", "-keyout", str(tmp_path / "k"), "-out", str(other)],
        check=True, capture_output=True,
    )  # fmt: skip
    with structlog.testing.capture_logs() as logs:
        event = asyncio.run(first_event(broker, tls_config(broker, other), wait=2.0))
    assert event is None
    failures = [e for e in logs if e["event"] == "mqtt.connect_failed"]
    assert failures
    assert (
        "CERTIFICATE_VERIFY_FAILED" in str(failures[0]) or "certificate" in str(failures[0]).lower()
    )
