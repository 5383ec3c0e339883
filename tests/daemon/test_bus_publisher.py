"""MqttBus without a broker: filtering, QoS choice, bounded queue, thread hand-off, config checks."""

from __future__ import annotations

import asyncio
import threading
from datetime import UTC, datetime
from pathlib import Path

import msgspec
import pytest

from daemon.bus.config import MqttConfig, credentials, topics
from daemon.bus.publisher import MqttBus, encode_event
from daemon.errors import ConfigError
from daemon.log_setup import event_sinks
from tests.integration.mosquitto import free_port


def _cfg(**kw: object) -> MqttConfig:
    base = {
        "enabled": True,
        "port": free_port(),
        "queue_size": 4,
        "reconnect_min_seconds": 0.01,
        "reconnect_max_seconds": 0.05,
        "stop_timeout_seconds": 0.5,
    }
    return msgspec.convert({**base, **kw}, MqttConfig)


def test_on_event_when_broker_down_then_queue_bounded_and_oldest_dropped() -> None:
    async def scenario() -> tuple[int, int, list[str]]:
        async with MqttBus(config=_cfg(), account="acct") as bus:
            for i in range(10):
                bus.on_event("order.submitted", {"event": "order.submitted", "n": i})
            depth = bus.queue_depth
            kept = [str(item.fields["n"]) for item in list(bus._queue._queue)]  # type: ignore[attr-defined]
            return depth, bus.stats.dropped, kept

    depth, dropped, kept = asyncio.run(scenario())
    assert depth == 4
    assert dropped == 6
    assert kept == ["6", "7", "8", "9"]


def test_on_event_when_name_not_selected_then_not_queued() -> None:
    async def scenario() -> tuple[int, list[tuple[str, int]]]:
        async with MqttBus(config=_cfg(queue_size=100), account="acct") as bus:
            bus.on_event("bar.accepted", {"event": "bar.accepted"})
            bus.on_event("mqtt.connected", {"event": "mqtt.connected"})
            bus.on_event("order.filled", {"event": "order.filled"})
            bus.on_event("signal.scored", {"event": "signal.scored"})
            items = list(bus._queue._queue)  # type: ignore[attr-defined]
            return bus.queue_depth, [(i.topic, i.qos) for i in items]

    depth, items = asyncio.run(scenario())
    assert depth == 2
    assert items == [
        ("vlmtrader/acct/events/order.filled", 1),
        ("vlmtrader/acct/events/signal.scored", 0),
    ]


def test_on_event_when_called_from_a_thread_then_handed_to_the_loop() -> None:
    async def scenario() -> int:
        async with MqttBus(config=_cfg(queue_size=100), account="acct") as bus:
            t = threading.Thread(
                target=lambda: [bus.on_event("order.submitted", {"n": i}) for i in range(5)]
            )
            t.start()
            t.join()
            for _ in range(10):
                await asyncio.sleep(0)
            return bus.queue_depth

    assert asyncio.run(scenario()) == 5


def test_context_when_exited_then_sink_removed_and_events_ignored() -> None:
    async def scenario() -> MqttBus:
        async with MqttBus(config=_cfg(), account="acct") as bus:
            assert bus.on_event in event_sinks()
        return bus

    bus = asyncio.run(scenario())
    assert bus.on_event not in event_sinks()
    bus.on_event("order.submitted", {})
    assert bus.stats.queued == 0


def test_encode_event_when_values_unusual_then_json_with_text_fallback() -> None:
    raw = encode_event(
        {"ts": datetime(2024, 1, 2, tzinfo=UTC), "err": ValueError("x"), "p": Path("/a")}
    )
    assert msgspec.json.decode(raw) == {"ts": "2024-01-02T00:00:00Z", "err": "x", "p": "/a"}


@pytest.mark.parametrize(
    ("prefix", "account"), [("a/b", "x"), ("vlm", "acc+"), ("vlm", "#"), ("vlm", "")]
)
def test_topics_when_level_has_separator_or_wildcard_then_config_error(
    prefix: str, account: str
) -> None:
    with pytest.raises(ConfigError, match="cannot be an MQTT topic level"):
        topics(MqttConfig(prefix=prefix), account)


def test_credentials_when_env_and_file_then_env_password_wins(tmp_path: Path) -> None:
    pw = tmp_path / "pw"
    pw.write_text("from-file\n")
    cfg = MqttConfig(username="daemon", password_file=str(pw))
    assert credentials(cfg, {}) == ("daemon", "from-file")
    assert credentials(cfg, {"VLMTRADER_MQTT_PASSWORD": "from-env"}) == ("daemon", "from-env")
    assert credentials(MqttConfig(), {"VLMTRADER_MQTT_USERNAME": "u"}) == ("u", None)


def test_credentials_when_file_missing_or_no_username_then_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"mqtt\.password_file: cannot read"):
        credentials(MqttConfig(username="u", password_file=str(tmp_path / "nope")), {})
    with pytest.raises(ConfigError, match="no username"):
        credentials(MqttConfig(), {"VLMTRADER_MQTT_PASSWORD": "p"})


def test_bus_when_backoff_bounds_swapped_then_config_error() -> None:
    with pytest.raises(ConfigError, match="swap them"):
        MqttBus(config=_cfg(reconnect_min_seconds=5.0, reconnect_max_seconds=1.0), account="a")


def test_config_when_unknown_field_then_validation_names_it() -> None:
    with pytest.raises(msgspec.ValidationError, match="unknown field `hostt`"):
        msgspec.convert({"hostt": "x"}, MqttConfig)
