"""MqttBarFeed against a real mosquitto (password file + ACL): a feeder process's bars drive the feed."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import aiomqtt
import msgspec
import pytest
from structlog.testing import capture_logs

from daemon.bus.config import MqttConfig
from daemon.errors import ConfigError
from daemon.feeds.mqtt import MessageRejected, MqttBarFeed, decode_batch
from strategy.types import Bar
from tests.integration.mosquitto import PREFIX, USERS, Mosquitto, running_mosquitto

pytestmark = pytest.mark.integration
DAEMON_ENV = {"VLMTRADER_MQTT_PASSWORD": USERS["daemon"]}
T0 = datetime(2024, 3, 1, 14, 30, tzinfo=UTC)
_accounts = itertools.count()


@pytest.fixture(scope="module")
def broker() -> Iterator[Mosquitto]:
    with running_mosquitto() as b:
        yield b


@pytest.fixture
def account() -> str:
    """A fresh account per test: the feed keeps a persistent session per client id."""
    return f"feedtest{next(_accounts)}"


def _cfg(broker: Mosquitto, **source: Any) -> MqttConfig:
    return msgspec.convert(
        {
            "port": broker.port,
            "username": "daemon",
            "reconnect_min_seconds": 0.05,
            "reconnect_max_seconds": 0.2,
            "keepalive_seconds": 5,
            "bar_source": source,
        },
        MqttConfig,
    )


def _bars(i: int, symbols: tuple[str, ...] = ("AAA", "BBB")) -> list[dict[str, Any]]:
    ts = (T0 + timedelta(minutes=i)).isoformat()
    return [
        {"symbol": s, "ts": ts, "open": 100.0 + i, "high": 102.0 + i, "low": 99.0 + i}
        | {"close": 101.0 + i, "volume": 1000.0}
        for s in symbols
    ]


def _msg(i: int) -> bytes:
    return msgspec.json.encode(_bars(i))


async def _publish(broker: Mosquitto, account: str, *payloads: bytes, user: str = "feeder") -> None:
    topic = f"{PREFIX}/{account}/bars"
    async with aiomqtt.Client(
        "127.0.0.1", broker.port, username=user, password=USERS[user]
    ) as client:
        for p in payloads:
            await client.publish(topic, p, qos=1)


async def _wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    async def wait() -> None:
        while not condition():
            await asyncio.sleep(0.01)

    await asyncio.wait_for(wait(), timeout)


async def _wait_connected(feed: MqttBarFeed) -> None:
    await _wait_for(lambda: feed.connected)


async def _take(
    batches: AsyncIterator[list[Bar]], n: int, timeout: float = 10.0
) -> list[list[Bar]]:
    async def take() -> list[list[Bar]]:
        return [await anext(batches) for _ in range(n)]

    return await asyncio.wait_for(take(), timeout)


def test_decode_when_batch_valid_then_bars_in_utc_at_one_close() -> None:
    raw = msgspec.json.encode(
        [
            {"symbol": "AAA", "ts": "2024-03-01T15:31:00+01:00", "open": 1.0, "high": 2.0}
            | {"low": 0.5, "close": 1.5, "volume": 0.0}
        ]
    )
    (bar,) = decode_batch(raw, max_bytes=1_000)
    assert bar == Bar(
        symbol="AAA", ts=T0 + timedelta(minutes=1), open=1.0, high=2.0, low=0.5, close=1.5, volume=0
    )
    assert bar.ts.tzinfo is UTC


@pytest.mark.parametrize(
    ("payload", "reason", "where"),
    [
        (b"[{not json", "malformed", "not valid JSON"),
        (b"[]", "invalid", "length >= 1"),
        (b'{"symbol": "AAA"}', "invalid", "Expected `array`"),
        (msgspec.json.encode([{**_bars(0)[0], "open": "x"}]), "invalid", "$[0].open"),
        (msgspec.json.encode([{**_bars(0)[0], "ts": "2024-03-01T14:30:00"}]), "invalid", "$[0].ts"),
        (msgspec.json.encode([{**_bars(0)[0], "extra": 1}]), "invalid", "extra"),
        (msgspec.json.encode([{**_bars(0)[0], "high": 50.0}]), "invalid", "high/low"),
        (_msg(0).replace(b'"volume":1000.0', b'"volume":1e999'), "invalid", "$[0].volume"),
        (msgspec.json.encode([_bars(0)[0], _bars(1)[1]]), "mixed_ts", "$[1].ts"),
        (msgspec.json.encode([_bars(0)[0], _bars(0)[0]]), "duplicate_symbol", "$[1].symbol"),
        (_msg(0) + b" " * 2_000, "too_large", "max_message_bytes"),
    ],
)
def test_decode_when_message_bad_then_rejected_with_reason_naming_where(
    payload: bytes, reason: str, where: str
) -> None:
    with pytest.raises(MessageRejected) as e:
        decode_batch(payload, max_bytes=1_000)
    assert e.value.reason == reason
    assert where in str(e.value)
    assert "\n" not in str(e.value)


def test_feed_when_no_bar_source_password_then_config_error_names_the_fix(
    broker: Mosquitto,
) -> None:
    cfg = msgspec.structs.replace(_cfg(broker), username=None)
    with pytest.raises(ConfigError, match="no username"):
        MqttBarFeed(config=cfg, account="x", env=DAEMON_ENV)


def test_feed_when_feeder_publishes_then_batches_arrive_in_order_and_backfill_has_them(
    broker: Mosquitto, account: str
) -> None:
    async def scenario() -> None:
        async with MqttBarFeed(config=_cfg(broker), account=account, env=DAEMON_ENV) as feed:
            await _wait_connected(feed)
            batches = feed.closed_bars()
            await _publish(broker, account, *(_msg(i) for i in range(3)))
            got = await _take(batches, 3)
            assert [[b.symbol for b in batch] for batch in got] == [["AAA", "BBB"]] * 3
            assert [batch[0].ts for batch in got] == [T0 + timedelta(minutes=i) for i in range(3)]
            assert got[2][1].close == 103.0
            assert await feed.backfill(2) == got[1:]
            assert await feed.backfill(5, before=T0 + timedelta(minutes=1)) == got[:2]
            assert await feed.backfill(5, before=T0 - timedelta(minutes=1)) == []

    asyncio.run(scenario())


def test_feed_when_messages_bad_then_one_line_rejections_and_good_batches_still_flow(
    broker: Mosquitto, account: str
) -> None:
    async def scenario() -> list[dict[str, Any]]:
        cfg = _cfg(broker, max_message_bytes=600)
        with capture_logs() as logs:
            async with MqttBarFeed(config=cfg, account=account, env=DAEMON_ENV) as feed:
                await _wait_connected(feed)
                batches = feed.closed_bars()
                await _publish(
                    broker,
                    account,
                    _msg(5),
                    b"\xff\xfe garbage",
                    msgspec.json.encode(_bars(6, symbols=tuple(f"S{i}" for i in range(20)))),
                    msgspec.json.encode([{**_bars(6)[0], "low": -1.0}]),
                    # A publisher with a wrong clock: accepted, it would make every later batch
                    # look out of order and silence the feed.
                    msgspec.json.encode([{**_bars(6)[0], "ts": "2100-01-04T14:30:00+00:00"}]),
                    _msg(4),  # before the last accepted batch
                    _msg(6),
                )
                got = await _take(batches, 2)
                assert [b[0].ts for b in got] == [T0 + timedelta(minutes=m) for m in (5, 6)]
                assert feed.stats.rejected == 5
                assert feed.connected
        return [e for e in logs if e["event"] == "feed.message_rejected"]

    rejected = asyncio.run(scenario())
    assert [e["reason"] for e in rejected] == [
        "malformed",
        "too_large",
        "invalid",
        "future",
        "out_of_order",
    ]
    assert all(e["topic"].endswith("/bars") and "\n" not in e["error"] for e in rejected)


def test_feed_when_other_user_publishes_bars_then_acl_keeps_them_out(
    broker: Mosquitto, account: str
) -> None:
    async def scenario() -> None:
        async with MqttBarFeed(config=_cfg(broker), account=account, env=DAEMON_ENV) as feed:
            await _wait_connected(feed)
            batches = feed.closed_bars()
            await _publish(broker, account, _msg(0), user="viewer")
            await _publish(broker, account, _msg(1))
            got = await _take(batches, 1)
            assert got[0][0].ts == T0 + timedelta(minutes=1)
            assert feed.stats.messages == 1

    asyncio.run(scenario())


def test_feed_when_consumer_slow_then_oldest_batches_dropped_and_counted(
    broker: Mosquitto, account: str
) -> None:
    async def scenario() -> None:
        cfg = _cfg(broker, queue_size=2)
        with capture_logs() as logs:
            async with MqttBarFeed(config=cfg, account=account, env=DAEMON_ENV) as feed:
                await _wait_connected(feed)
                await _publish(broker, account, *(_msg(i) for i in range(5)))
                await _wait_for(lambda: feed.stats.batches == 5)
                got = await _take(feed.closed_bars(), 2)
        assert [b[0].ts for b in got] == [T0 + timedelta(minutes=m) for m in (3, 4)]
        assert feed.stats.dropped == 3
        assert sum(e["event"] == "feed.batch_dropped" for e in logs) == 3

    asyncio.run(scenario())


def test_feed_when_resuming_after_a_close_then_older_batches_skipped(
    broker: Mosquitto, account: str
) -> None:
    async def scenario() -> None:
        async with MqttBarFeed(config=_cfg(broker), account=account, env=DAEMON_ENV) as feed:
            await _wait_connected(feed)
            await _publish(broker, account, *(_msg(i) for i in range(4)))
            got = await _take(feed.closed_bars(resume_after=T0 + timedelta(minutes=1)), 2)
            assert [b[0].ts for b in got] == [T0 + timedelta(minutes=m) for m in (2, 3)]
            assert feed.stats.skipped == 2

    asyncio.run(scenario())


def test_feed_when_broker_restarts_then_reconnects_and_bars_flow_again(
    broker: Mosquitto, account: str
) -> None:
    async def scenario() -> list[dict[str, Any]]:
        with capture_logs() as logs:
            async with MqttBarFeed(config=_cfg(broker), account=account, env=DAEMON_ENV) as feed:
                await _wait_connected(feed)
                batches = feed.closed_bars()
                await _publish(broker, account, _msg(0))
                await _take(batches, 1)
                await asyncio.to_thread(broker.stop)
                await _wait_for(lambda: not feed.connected)
                await asyncio.to_thread(broker.start)
                await _wait_connected(feed)
                await _publish(broker, account, _msg(1))
                got = await _take(batches, 1)
                assert got[0][0].ts == T0 + timedelta(minutes=1)
                assert feed.stats.reconnects >= 1
        return logs

    logs = asyncio.run(scenario())
    assert any(e["event"] == "feed.reconnecting" and e["kind"] == "mqtt" for e in logs)
    assert sum(e["event"] == "feed.connected" for e in logs) >= 2


def test_feed_when_closed_then_consumer_ends_and_feed_can_be_reopened(
    broker: Mosquitto, account: str
) -> None:
    async def scenario() -> None:
        feed = MqttBarFeed(config=_cfg(broker, queue_size=4), account=account, env=DAEMON_ENV)
        async with feed:
            await _wait_connected(feed)
            consumer = asyncio.create_task(_take(feed.closed_bars(), 10))
            await asyncio.sleep(0.05)
        with pytest.raises(StopAsyncIteration):
            await consumer
        assert not feed.connected
        async with feed:
            with pytest.raises(RuntimeError, match="not re-entered"):
                await feed.__aenter__()
            await _wait_connected(feed)
            await _publish(broker, account, _msg(9))
            got = await _take(feed.closed_bars(), 1)
            assert got[0][0].ts == T0 + timedelta(minutes=9)

    asyncio.run(scenario())
