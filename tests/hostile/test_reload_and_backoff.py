"""Findings 7 and 8: a partial config on SIGHUP is refused unless marked partial (and every changed
key is reported); MQTT reconnects with jitter under a cap of a few seconds; the MQTT task is
supervised (an unexpected error is logged, marked down and the session restarts)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import msgspec
import pytest
from structlog.testing import capture_logs

from daemon.bus.config import MqttConfig
from daemon.bus.publisher import MqttBus
from daemon.config import AppConfig, decode_config, reload_config
from daemon.errors import ConfigError
from daemon.supervisor import Backoff, TaskHealth, supervise
from tests.integration.mosquitto import USERS, running_mosquitto

FULL = """\
account: desk1
risk:
  max_daily_loss: 1000
  max_position_notional: 20000
strategy:
  hold_bars: 4
"""


def _running(tmp_path: Path, text: str = FULL) -> tuple[Path, AppConfig]:
    path = tmp_path / "cfg.yaml"
    path.write_text(text)
    return path, decode_config(text)


def test_reload_when_file_omits_keys_the_running_config_sets_then_refused_naming_them(
    tmp_path: Path,
) -> None:
    path, running = _running(tmp_path)
    path.write_text("strategy:\n  hold_bars: 5\n")  # valid, but drops the risk limits
    with pytest.raises(ConfigError) as e:
        reload_config(path, running)
    assert "risk.max_daily_loss" in str(e.value)
    assert "account" in str(e.value)
    assert "partial: true" in str(e.value)
    assert "\n" not in str(e.value)


def test_reload_when_file_marked_partial_then_omitted_keys_keep_running_values(
    tmp_path: Path,
) -> None:
    path, running = _running(tmp_path)
    path.write_text("partial: true\nstrategy:\n  hold_bars: 5\n")
    new, changed = reload_config(path, running)
    assert new.risk.max_daily_loss == 1000
    assert new.account == "desk1"
    assert new.strategy.hold_bars == 5
    assert changed == ["partial", "strategy.hold_bars"]


def test_reload_when_full_file_changes_keys_then_every_changed_key_reported(
    tmp_path: Path,
) -> None:
    path, running = _running(tmp_path)
    path.write_text(FULL.replace("1000", "800").replace("hold_bars: 4", "hold_bars: 6"))
    new, changed = reload_config(path, running)
    assert new.risk.max_daily_loss == 800
    assert changed == ["risk.max_daily_loss", "strategy.hold_bars"]


def test_reload_when_state_dir_set_on_command_line_then_kept_and_not_required(
    tmp_path: Path,
) -> None:
    path, running = _running(tmp_path)
    running = msgspec.structs.replace(running, state_dir="/var/lib/vlmtrader")
    new, changed = reload_config(path, running)
    assert new.state_dir == "/var/lib/vlmtrader"
    assert changed == []


def test_reload_when_file_invalid_then_config_error_and_nothing_returned(tmp_path: Path) -> None:
    path, running = _running(tmp_path)
    path.write_text("partial: true\nrisk:\n  max_daily_loss: .inf\n")
    with pytest.raises(ConfigError, match="finite"):
        reload_config(path, running)


def test_backoff_when_drawn_then_jittered_within_half_to_full_and_capped() -> None:
    draws = iter([0.0, 1.0, 0.5, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0])
    backoff = Backoff(minimum=0.5, maximum=4.0, rng=lambda: next(draws))
    delays = [backoff.next_delay() for _ in range(8)]
    assert delays == [0.25, 1.0, 1.5, 2.0, 4.0, 4.0, 4.0, 4.0]
    backoff.reset()
    assert backoff.next_delay() <= 0.5


def test_backoff_when_random_then_delays_differ_and_never_exceed_cap() -> None:
    backoff = Backoff(minimum=0.5, maximum=MqttConfig().reconnect_max_seconds)
    delays = [backoff.next_delay() for _ in range(50)]
    assert max(delays) <= 5.0
    assert len(set(delays)) > 40


def test_mqtt_config_when_default_then_reconnect_cap_is_a_few_seconds() -> None:
    assert MqttConfig().reconnect_max_seconds <= 5.0


def test_supervise_when_task_raises_then_logged_marked_down_and_restarted() -> None:
    health = TaskHealth()
    runs: list[int] = []

    async def flaky() -> None:
        runs.append(1)
        if len(runs) < 3:
            msg = f"boom {len(runs)}"
            raise RuntimeError(msg)

    with capture_logs() as logs:
        asyncio.run(
            supervise("flaky", flaky, health=health, backoff=Backoff(minimum=0.001, maximum=0.002))
        )
    assert len(runs) == 3
    failed = [e for e in logs if e["event"] == "task.failed"]
    assert [e["error"] for e in failed] == ["RuntimeError: boom 1", "RuntimeError: boom 2"]
    assert health.restarts["flaky"] == 2
    assert health.all_up()


@pytest.mark.integration
def test_mqtt_bus_when_session_raises_unexpectedly_then_task_failed_down_and_reconnected() -> None:
    calls: list[int] = []

    def status() -> Mapping[str, Any]:
        calls.append(1)
        if len(calls) == 1:
            msg = "status source broke"
            raise RuntimeError(msg)
        return {"ok": True}

    async def scenario(port: int) -> tuple[TaskHealth, list[dict[str, Any]]]:
        health = TaskHealth()
        config = MqttConfig(
            enabled=True,
            port=port,
            username="daemon",
            reconnect_min_seconds=0.05,
            reconnect_max_seconds=0.1,
            status_interval_seconds=0,
        )
        with capture_logs() as logs:
            async with MqttBus(
                config=config,
                account="test",
                status=status,
                health=health,
                env={"VLMTRADER_MQTT_PASSWORD": USERS["daemon"]},
            ) as bus:
                for _ in range(200):
                    if bus.connected and len(calls) >= 2:
                        break
                    await asyncio.sleep(0.05)
                states = health.states()
        assert states == {"mqtt": True}
        return health, logs

    with running_mosquitto() as broker:
        health, logs = asyncio.run(scenario(broker.port))
    failed = [e for e in logs if e["event"] == "task.failed"]
    assert failed
    assert failed[0]["task"] == "mqtt"
    assert "status source broke" in failed[0]["error"]
    assert health.restarts["mqtt"] == 1


@pytest.mark.integration
def test_api_server_when_serving_loop_raises_then_task_failed_and_serves_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import httpx
    import uvicorn
    from fastapi import FastAPI

    from daemon.api.config import ApiConfig
    from daemon.api.server import ApiServer

    original = uvicorn.Server.main_loop
    failures: list[int] = []

    async def main_loop(self: uvicorn.Server) -> None:
        if not failures:
            failures.append(1)
            msg = "event loop trouble"
            raise OSError(msg)
        await original(self)

    monkeypatch.setattr(uvicorn.Server, "main_loop", main_loop)
    app = FastAPI()

    @app.get("/ping")
    async def ping() -> dict[str, str]:
        return {"pong": "yes"}

    async def scenario() -> tuple[TaskHealth, list[dict[str, Any]], int]:
        health = TaskHealth()
        with capture_logs() as logs:
            async with ApiServer(
                config=ApiConfig(enabled=True, port=0, shutdown_timeout_seconds=1.0),
                app=app,
                health=health,
            ) as server:
                for _ in range(200):
                    if health.restarts.get("api") and health.all_up() and server._server.started:
                        break
                    await asyncio.sleep(0.05)
                async with httpx.AsyncClient(base_url=server.url) as client:
                    status = (await client.get("/ping")).status_code
        return health, logs, status

    health, logs, status = asyncio.run(scenario())
    assert status == 200
    failed = [e for e in logs if e["event"] == "task.failed"]
    assert [e["task"] for e in failed] == ["api"]
    assert "event loop trouble" in failed[0]["error"]
    assert health.all_up()
