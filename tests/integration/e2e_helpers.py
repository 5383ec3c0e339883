"""End-to-end plumbing around a real `vlmtrader run`: configs, its JSON log, a real MQTT subscriber."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiomqtt
import httpx
import msgspec

from tests.integration.daemon_process import DaemonProcess, count, write_config
from tests.integration.mosquitto import ACCOUNT, PREFIX, USERS

BASE = f"{PREFIX}/{ACCOUNT}"
CONTROL = f"{BASE}/control"
API_TOKEN = "e2e-api-token"
API_AUTH = {"Authorization": f"Bearer {API_TOKEN}"}
DAEMON_ENV = {"VLMTRADER_MQTT_PASSWORD": USERS["daemon"], "VLMTRADER_API_TOKEN": API_TOKEN}


def e2e_config(
    tmp_path: Path,
    *,
    speed: float = 3000.0,
    symbols: int = 4,
    mqtt_port: int | None = None,
    api: bool = False,
    extra: dict[str, Any] | None = None,
) -> Path:
    """An accelerated paper-sim config with MQTT (to mqtt_port) and/or the HTTP API on port 0."""
    sections: dict[str, Any] = {"journal": {"synchronous": "normal"}}
    if mqtt_port is not None:
        sections["mqtt"] = {
            "enabled": True,
            "port": mqtt_port,
            "username": "daemon",
            "keepalive_seconds": 5,
            "reconnect_min_seconds": 0.2,
            "reconnect_max_seconds": 0.2,
            "status_interval_seconds": 0.5,
            "stop_timeout_seconds": 1.0,
        }
    if api:
        sections["api"] = {"enabled": True, "port": 0, "shutdown_timeout_seconds": 1.0}
    for key, value in (extra or {}).items():
        if isinstance(value, dict) and isinstance(sections.get(key), dict):
            sections[key] = {**sections[key], **value}
        else:
            sections[key] = value
    return write_config(
        tmp_path / "cfg.yaml",
        state_dir=tmp_path / "state",
        speed=speed,
        symbols=symbols,
        extra=sections,
    )


def journal_path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "journal.sqlite"


def orders_in_journal(tmp_path: Path, where: str = "1") -> int:
    return count(journal_path(tmp_path), f"SELECT count(*) FROM orders WHERE {where}")


def log_events(daemon: DaemonProcess, name: str | None = None) -> list[dict[str, Any]]:
    """The daemon's JSON log lines (optionally one event name), in the order it wrote them."""
    out: list[dict[str, Any]] = []
    for line in daemon.log_text().splitlines():
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(event, dict) and (name is None or event.get("event") == name):
            out.append(event)
    return out


def until(
    predicate: Callable[[], bool],
    *,
    daemon: DaemonProcess | None = None,
    timeout: float = 20.0,
    what: str = "condition",
) -> None:
    """Poll until true; fail early (with the log tail) when the daemon has exited."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        if daemon is not None and daemon.proc.poll() is not None:
            msg = f"daemon exited ({daemon.proc.returncode}) while waiting for {what}:\n{daemon.log_text()[-3000:]}"
            raise AssertionError(msg)
        time.sleep(0.05)
    tail = daemon.log_text()[-3000:] if daemon is not None else ""
    msg = f"timed out after {timeout}s waiting for {what}\n{tail}"
    raise AssertionError(msg)


def start_daemon(
    config: Path, tmp_path: Path, *, env: dict[str, str] | None = None
) -> DaemonProcess:
    """`vlmtrader run` in the background, logging to tmp_path/daemon.log."""
    return DaemonProcess(
        config, log_path=tmp_path / "daemon.log", env={**DAEMON_ENV, **(env or {})}
    )


def wait_ready(daemon: DaemonProcess) -> None:
    until(lambda: bool(log_events(daemon, "daemon.ready")), daemon=daemon, timeout=60,
          what="daemon.ready")  # fmt: skip


def stop_daemon(daemon: DaemonProcess) -> None:
    """SIGTERM, then SIGKILL if it hangs."""
    if daemon.proc.poll() is None:
        with contextlib.suppress(Exception):
            daemon.terminate(timeout=20)
    daemon.kill()


@contextlib.contextmanager
def running_daemon(
    config: Path, tmp_path: Path, *, env: dict[str, str] | None = None
) -> Iterator[DaemonProcess]:
    """`vlmtrader run` until the block ends (SIGTERM, then SIGKILL if it hangs); ready on entry."""
    daemon = start_daemon(config, tmp_path, env=env)
    try:
        wait_ready(daemon)
        yield daemon
    finally:
        stop_daemon(daemon)


class Message(msgspec.Struct, frozen=True, kw_only=True):
    topic: str
    payload: dict[str, Any]
    qos: int
    retain: bool


class MqttRecorder:
    """A real aiomqtt subscriber on its own thread and loop; reconnects and records every message."""

    def __init__(self, port: int, *, user: str = "viewer", topic: str = f"{PREFIX}/#") -> None:
        self.port = port
        self.user = user
        self.topic = topic
        self.subscriptions = 0
        self._messages: list[Message] = []
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._task: asyncio.Task[None] | None = None
        self._thread = threading.Thread(target=self._main, daemon=True)

    def __enter__(self) -> MqttRecorder:
        self._thread.start()
        deadline = time.monotonic() + 10
        while self.subscriptions == 0:
            if time.monotonic() > deadline:
                msg = f"recorder could not subscribe on port {self.port}"
                raise AssertionError(msg)
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._task is not None:
            self._loop.call_soon_threadsafe(self._task.cancel)
        self._thread.join(5)

    def _main(self) -> None:
        self._task = self._loop.create_task(self._run())
        with contextlib.suppress(asyncio.CancelledError):
            self._loop.run_until_complete(self._task)
        self._loop.close()

    async def _run(self) -> None:
        while True:
            try:
                async with aiomqtt.Client(
                    "127.0.0.1", self.port, username=self.user, password=USERS[self.user]
                ) as client:
                    await client.subscribe(self.topic, qos=1)
                    self.subscriptions += 1
                    async for m in client.messages:
                        self._record(m)
            except aiomqtt.MqttError:
                await asyncio.sleep(0.05)

    def _record(self, m: aiomqtt.Message) -> None:
        raw = m.payload if isinstance(m.payload, bytes | bytearray) else str(m.payload).encode()
        try:
            payload = msgspec.json.decode(raw) if raw else {}
        except msgspec.DecodeError:
            payload = {"raw": bytes(raw)[:100].decode(errors="replace")}
        if not isinstance(payload, dict):
            payload = {"raw": payload}
        with self._lock:
            self._messages.append(
                Message(topic=m.topic.value, payload=payload, qos=m.qos, retain=m.retain)
            )

    # ---- reading ------------------------------------------------------------------------------
    def mark(self) -> int:
        """Position to read from later with `since`."""
        with self._lock:
            return len(self._messages)

    def since(self, mark: int = 0) -> list[Message]:
        with self._lock:
            return self._messages[mark:]

    def events(self, name: str, mark: int = 0) -> list[dict[str, Any]]:
        topic = f"{BASE}/events/{name}"
        return [m.payload for m in self.since(mark) if m.topic == topic]

    def statuses(self, mark: int = 0, *, account: str = ACCOUNT) -> list[Message]:
        topic = f"{PREFIX}/{account}/status"
        return [m for m in self.since(mark) if m.topic == topic]

    def wait_event(
        self,
        name: str,
        *,
        mark: int = 0,
        daemon: DaemonProcess | None = None,
        timeout: float = 20.0,
        **fields: Any,
    ) -> dict[str, Any]:
        """The first `<base>/events/<name>` message after mark whose payload has these fields."""
        found: list[dict[str, Any]] = []

        def seen() -> bool:
            found[:] = [
                p for p in self.events(name, mark) if all(p.get(k) == v for k, v in fields.items())
            ]
            return bool(found)

        until(seen, daemon=daemon, timeout=timeout, what=f"MQTT {name} {fields}")
        return found[0]

    def wait_status(
        self,
        predicate: Callable[[dict[str, Any]], bool],
        *,
        mark: int = 0,
        daemon: DaemonProcess | None = None,
        timeout: float = 20.0,
        what: str = "status",
        account: str = ACCOUNT,
    ) -> Message:
        found: list[Message] = []

        def seen() -> bool:
            found[:] = [m for m in self.statuses(mark, account=account) if predicate(m.payload)]
            return bool(found)

        until(seen, daemon=daemon, timeout=timeout, what=f"MQTT {what}")
        return found[-1]


def mqtt_publish(port: int, user: str, topic: str, payload: bytes) -> None:
    """Publish one QoS 1 message as `user` and wait for the broker's acknowledgement."""

    async def send() -> None:
        async with aiomqtt.Client("127.0.0.1", port, username=user, password=USERS[user]) as c:
            await c.publish(topic, payload, qos=1)

    asyncio.run(send())


def command(name: str, request_id: str, **fields: Any) -> bytes:
    return msgspec.json.encode({"command": name, "request_id": request_id, **fields})


def status_json(http: httpx.Client) -> dict[str, Any]:
    """GET /status of a running daemon, asserted 200, as a dict."""
    response = http.get("/status")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body
