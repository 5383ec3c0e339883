"""MqttBus against a real mosquitto with a password file and ACL: events, status, last will, control."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any

import aiomqtt
import msgspec
import pytest
import structlog

from daemon.bus.config import MqttConfig
from daemon.bus.publisher import MqttBus
from daemon.control import Controller
from tests.daemon.test_bus_control import FakeDaemon
from tests.integration.mosquitto import (
    ACCOUNT,
    PREFIX,
    USERS,
    Mosquitto,
    daemon_log_tap,
    running_mosquitto,
)

pytestmark = pytest.mark.integration
BASE = f"{PREFIX}/{ACCOUNT}"
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
log = structlog.get_logger("tests.mqtt")


@pytest.fixture(scope="module")
def broker() -> Iterator[Mosquitto]:
    with running_mosquitto() as b:
        yield b


@pytest.fixture(autouse=True)
def event_tap() -> Iterator[None]:
    with daemon_log_tap():
        yield


def _cfg(broker: Mosquitto, **kw: Any) -> MqttConfig:
    base = {
        "enabled": True,
        "port": broker.port,
        "username": "daemon",
        "reconnect_min_seconds": 0.05,
        "reconnect_max_seconds": 0.2,
        "keepalive_seconds": 5,
        "stop_timeout_seconds": 2.0,
    }
    return msgspec.convert({**base, **kw}, MqttConfig)


DAEMON_ENV = {"VLMTRADER_MQTT_PASSWORD": USERS["daemon"]}


class Listener:
    """A real subscriber; collects (topic, payload, qos, retain) and waits for a matching message."""

    def __init__(self, client: aiomqtt.Client) -> None:
        self.client = client
        self.messages: list[tuple[str, dict[str, Any], int, bool]] = []
        self._changed = asyncio.Event()

    async def run(self) -> None:
        async for m in self.client.messages:
            try:
                payload = msgspec.json.decode(m.payload) if m.payload else {}
            except msgspec.DecodeError:  # the control topic carries the bad commands we send
                payload = {"raw": m.payload}
            if not isinstance(payload, dict):
                payload = {"raw": payload}
            self.messages.append((m.topic.value, payload, m.qos, m.retain))
            self._changed.set()

    async def wait_for(
        self, pred: Callable[[str, dict[str, Any]], bool], timeout: float = 10.0
    ) -> tuple[str, dict[str, Any], int, bool]:
        async def find() -> tuple[str, dict[str, Any], int, bool]:
            while True:
                for m in self.messages:
                    if pred(m[0], m[1]):
                        return m
                self._changed.clear()
                await self._changed.wait()

        return await asyncio.wait_for(find(), timeout)

    def topics(self) -> list[str]:
        return [m[0] for m in self.messages]


@asynccontextmanager
async def listening(
    broker: Mosquitto, user: str = "viewer", topic: str = f"{PREFIX}/#"
) -> AsyncIterator[Listener]:
    async with aiomqtt.Client("127.0.0.1", broker.port, username=user, password=USERS[user]) as c:
        await c.subscribe(topic, qos=1)
        listener = Listener(c)
        task = asyncio.create_task(listener.run())
        try:
            yield listener
        finally:
            task.cancel()


async def _publish(broker: Mosquitto, user: str, topic: str, payload: bytes) -> None:
    async with aiomqtt.Client("127.0.0.1", broker.port, username=user, password=USERS[user]) as c:
        await c.publish(topic, payload, qos=1)


def _event(name: str, **fields: Any) -> Callable[[str, dict[str, Any]], bool]:
    def pred(topic: str, payload: dict[str, Any]) -> bool:
        return topic == f"{BASE}/events/{name}" and all(
            payload.get(k) == v for k, v in fields.items()
        )

    return pred


def _status(**fields: Any) -> Callable[[str, dict[str, Any]], bool]:
    def pred(topic: str, payload: dict[str, Any]) -> bool:
        return topic == f"{BASE}/status" and all(payload.get(k) == v for k, v in fields.items())

    return pred


def test_events_when_logged_then_published_on_event_topics_with_payload_and_qos(
    broker: Mosquitto,
) -> None:
    async def scenario() -> None:
        async with (
            listening(broker) as sub,
            MqttBus(config=_cfg(broker), account=ACCOUNT, env=DAEMON_ENV),
        ):
            await sub.wait_for(_status(state="online"))
            log.info("bar.accepted", symbol="AAA")
            log.info(
                "order.submitted",
                symbol="AAA",
                client_order_id="T-1",
                quantity=10.0,
                latency_ms=1.5,
            )
            log.info("signal.scored", symbol="AAA", p_up=0.7)
            _, payload, qos, _ = await sub.wait_for(_event("signal.scored"))
            assert qos == 0
            assert payload["p_up"] == 0.7
            _, order, order_qos, _ = await sub.wait_for(_event("order.submitted"))
            assert order_qos == 1
            assert order["client_order_id"] == "T-1"
            assert order["quantity"] == 10.0
            assert order["level"] == "info"
            assert f"{BASE}/events/bar.accepted" not in sub.topics()

    asyncio.run(scenario())


def test_status_when_connected_then_retained_online_and_offline_after_clean_stop(
    broker: Mosquitto,
) -> None:
    async def scenario() -> None:
        daemon = FakeDaemon()
        async with MqttBus(
            config=_cfg(broker), account=ACCOUNT, env=DAEMON_ENV, status=daemon.status
        ) as bus:
            await asyncio.wait_for(_until(lambda: bus.stats.published >= 1), 10)
            async with listening(broker) as late:  # subscribes after the bus published: retained
                _, payload, _, retained = await late.wait_for(_status(state="online"))
                assert retained
                assert payload["daemon"]["bundle_id"] == "bundle-1"
            assert bus.connected
        async with listening(broker) as after:
            _, payload, _, _ = await after.wait_for(_status())
            assert payload["state"] == "offline"
            assert payload["reason"] == "stopped"

    asyncio.run(scenario())


CHILD = """
import asyncio, sys
from daemon.bus.config import MqttConfig
from daemon.bus.publisher import MqttBus

async def main():
    cfg = MqttConfig(enabled=True, port=int(sys.argv[1]), username="daemon", keepalive_seconds=5)
    async with MqttBus(config=cfg, account=sys.argv[2]):
        print("started", flush=True)
        await asyncio.Event().wait()

asyncio.run(main())
"""


def test_last_will_when_daemon_killed_then_retained_status_offline(broker: Mosquitto) -> None:
    env = {**os.environ, "VLMTRADER_MQTT_PASSWORD": USERS["daemon"], "PYTHONPATH": REPO}
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(broker.port), ACCOUNT],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )

    async def scenario() -> None:
        async with listening(broker) as sub:
            _, online, _, _ = await sub.wait_for(_status(state="online", pid=proc.pid), timeout=20)
            assert online["account"] == ACCOUNT
            proc.send_signal(signal.SIGKILL)
            _, offline, qos, _ = await sub.wait_for(
                _status(state="offline", reason="connection_lost")
            )
            assert offline["account"] == ACCOUNT
            assert qos == 1

    try:
        asyncio.run(scenario())
    finally:
        proc.kill()
        proc.wait(5)


def _control_bus(broker: Mosquitto, daemon: FakeDaemon, **kw: Any) -> MqttBus:
    controller = Controller(control=daemon, max_command_bytes=512)
    return MqttBus(
        config=_cfg(broker, max_command_bytes=512, **kw),
        account=ACCOUNT,
        env=DAEMON_ENV,
        controller=controller,
        status=daemon.status,
    )


def test_control_when_operator_sends_commands_then_state_changes_and_applied_events(
    broker: Mosquitto,
) -> None:
    daemon = FakeDaemon()

    async def scenario() -> None:
        async with listening(broker) as sub, _control_bus(broker, daemon):
            await sub.wait_for(_status(state="online"))
            await _publish(
                broker,
                "operator",
                f"{BASE}/control",
                b'{"command": "pause", "request_id": "c1", "reason": "fomc"}',
            )
            _, applied, qos, _ = await sub.wait_for(_event("control.applied", request_id="c1"))
            assert applied["command"] == "pause"
            assert applied["source"] == "mqtt"
            assert qos == 1
            assert daemon.paused
            await sub.wait_for(
                lambda t, p: t == f"{BASE}/status" and p.get("daemon", {}).get("paused")
            )
            await _publish(
                broker,
                "operator",
                f"{BASE}/control",
                b'{"command": "flatten", "symbol": "BBB", "request_id": "c2"}',
            )
            _, flat, _, _ = await sub.wait_for(_event("control.applied", request_id="c2"))
            assert flat["orders"] == 1
            assert daemon.positions["BBB"] == 0.0
            await _publish(
                broker,
                "operator",
                f"{BASE}/control",
                b'{"command": "set_state", "state": "reducing", "request_id": "c3"}',
            )
            await sub.wait_for(_event("control.applied", request_id="c3"))
            assert str(daemon.state) == "reducing"

    asyncio.run(scenario())


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b'{"command": "self_destruct"}', "unknown_command"),
        (b'{"command": "pause", "symbol": "AAA"}', "invalid"),
        (b"{pause}", "malformed"),
        (b'{"command": "pause", "reason": "' + b"x" * 600 + b'"}', "too_large"),
    ],
)
def test_control_when_command_bad_then_rejected_event_and_nothing_changes(
    broker: Mosquitto, payload: bytes, reason: str
) -> None:
    daemon = FakeDaemon()

    async def scenario() -> None:
        async with listening(broker) as sub, _control_bus(broker, daemon):
            await sub.wait_for(_status(state="online"))
            await _publish(broker, "operator", f"{BASE}/control", payload)
            _, rejected, qos, _ = await sub.wait_for(_event("control.rejected"))
            assert rejected["reason"] == reason
            assert rejected["error"]
            assert qos == 1

    asyncio.run(scenario())
    assert daemon.calls == []
    assert not daemon.paused


def test_control_when_unauthorised_user_or_other_topic_then_ignored(broker: Mosquitto) -> None:
    daemon = FakeDaemon()

    async def scenario() -> None:
        async with listening(broker) as sub, _control_bus(broker, daemon):
            await sub.wait_for(_status(state="online"))
            # the ACL lets only `operator` write control topics: mosquitto drops these
            await _publish(broker, "viewer", f"{BASE}/control", b'{"command": "pause"}')
            await _publish(broker, "feeder", f"{BASE}/control", b'{"command": "flatten"}')
            # another account's control topic is not ours
            await _publish(broker, "operator", f"{PREFIX}/other/control", b'{"command": "pause"}')
            await _publish(
                broker,
                "operator",
                f"{BASE}/control",
                b'{"command": "resume", "request_id": "marker"}',
            )
            await sub.wait_for(_event("control.applied", request_id="marker"))

    asyncio.run(scenario())
    assert daemon.calls == [("resume", "operator")]
    assert daemon.positions == {"AAA": 10.0, "BBB": -5.0}
    assert "vt-daemon" not in broker.log()


def test_broker_when_stopped_and_restarted_then_bus_drops_counts_and_reconnects(
    broker: Mosquitto,
) -> None:
    async def scenario() -> None:
        async with MqttBus(
            config=_cfg(broker, queue_size=5), account=ACCOUNT, env=DAEMON_ENV
        ) as bus:
            async with listening(broker) as sub:
                await sub.wait_for(_status(state="online"))
            broker.stop()
            await asyncio.wait_for(_until(lambda: not bus.connected), 10)
            for i in range(20):  # the trading path keeps logging while the broker is away
                log.info("order.submitted", client_order_id=f"T-{i}")
            assert bus.queue_depth == 5
            assert bus.stats.dropped >= 15
            broker.start()
            await asyncio.wait_for(_until(lambda: bus.stats.reconnects >= 1 and bus.connected), 10)
            async with listening(broker) as sub:
                _, status, _, _ = await sub.wait_for(_status(state="online"))
                assert status["telemetry_dropped"] >= 15
                assert status["reconnects"] >= 1
                log.info("order.filled", client_order_id="T-after")
                await sub.wait_for(_event("order.filled", client_order_id="T-after"))
            assert bus.stats.published >= 5

    asyncio.run(scenario())


async def _until(pred: Callable[[], bool]) -> None:
    while not pred():
        await asyncio.sleep(0.02)
