"""Control commands: strict decoding, and the Controller applying them through DaemonControl."""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

from daemon.bus.commands import (
    COMMAND_NAMES,
    CommandRejected,
    Flatten,
    SetState,
    command_from_fields,
    decode_command,
)
from daemon.control import Controller
from daemon.errors import ConfigError, InputError
from daemon.reload_plan import ReloadReport
from strategy.types import TradingState


class FakeDaemon:
    """A small DaemonControl: records what it was told and holds the state an operator sees."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.paused = False
        self.state = TradingState.ACTIVE
        self.positions: dict[str, float] = {"AAA": 10.0, "BBB": -5.0}
        self.bundle_id = "bundle-1"
        self.ready = {"feed_connected": True, "model_warm": True, "journal_writable": True}
        self.fail_reload = False

    async def pause(self, reason: str) -> None:
        self.calls.append(("pause", reason))
        self.paused = True

    async def resume(self, reason: str) -> None:
        self.calls.append(("resume", reason))
        self.paused = False

    async def flatten(self, symbol: str | None, reason: str) -> int:
        self.calls.append(("flatten", symbol))
        if symbol is not None and symbol not in self.positions:
            msg = f"flatten: no position in {symbol}"
            raise InputError(msg)
        targets = [symbol] if symbol else [s for s, q in self.positions.items() if q]
        for s in targets:
            self.positions[s] = 0.0
        return len(targets)

    async def set_trading_state(self, state: TradingState, reason: str) -> None:
        self.calls.append(("set_state", state))
        self.state = state

    async def reload_strategy(self) -> ReloadReport:
        self.calls.append(("reload_strategy", None))
        if self.fail_reload:
            msg = "config.yaml: Expected `int` >= 1 - at `$.risk.max_position`"
            raise ConfigError(msg)
        return ReloadReport(applied=("risk.max_daily_loss",), refused={"mode": "needs a restart"})

    async def reload_bundle(self, path: str | None) -> str:
        self.calls.append(("reload_bundle", path))
        if path is not None and "bad" in path:
            msg = f"bundle {path}: chart spec differs from the renderer's"
            raise InputError(msg)
        self.bundle_id = path or self.bundle_id
        return self.bundle_id

    def status(self) -> dict[str, Any]:
        return {
            "paused": self.paused,
            "trading_state": str(self.state),
            "positions": self.positions,
            "bundle_id": self.bundle_id,
        }

    def readiness(self) -> dict[str, bool]:
        return dict(self.ready)


def _handle(controller: Controller, raw: bytes) -> Any:
    return asyncio.run(controller.handle(raw, source="test"))


def test_decode_when_every_command_named_then_each_decodes_to_its_struct() -> None:
    extra = {"flatten": {"symbol": "AAA"}, "set_state": {"state": "halted"}}
    for name in COMMAND_NAMES:
        command = decode_command(
            msgspec.json.encode({"command": name, **extra.get(name, {})}), max_bytes=4096
        )
        assert type(command).__struct_config__.tag == name


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b'{"command": "nuke"}', "unknown_command"),
        (b'{"symbol": "AAA"}', "unknown_command"),
        (b'{"command": "pause", "extra": 1}', "invalid"),
        (b'{"command": "set_state", "state": "yolo"}', "invalid"),
        (b'{"command": "set_state"}', "invalid"),
        (b'{"command": "flatten", "symbol": "A A"}', "invalid"),
        (b'[{"command": "pause"}]', "invalid"),
        (b'{"command": "pause"', "malformed"),
        (b"", "malformed"),
        (b"\xff\xfe", "malformed"),
    ],
)
def test_decode_when_document_bad_then_rejected_with_reason(raw: bytes, reason: str) -> None:
    with pytest.raises(CommandRejected) as e:
        decode_command(raw, max_bytes=4096)
    assert e.value.reason == reason
    assert "\n" not in str(e.value)


def test_decode_when_over_size_limit_then_rejected_before_parsing() -> None:
    raw = msgspec.json.encode({"command": "pause", "reason": "x" * 100})
    with pytest.raises(CommandRejected, match="over the limit of 64") as e:
        decode_command(raw, max_bytes=64)
    assert e.value.reason == "too_large"


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300) | st.text(max_size=300).map(str.encode))
def test_decode_when_random_bytes_then_only_command_rejected_is_raised(raw: bytes) -> None:
    reasons: list[str] = []
    try:
        decode_command(raw, max_bytes=256)
    except CommandRejected as e:
        reasons.append(e.reason)
    assert set(reasons) <= {"too_large", "malformed", "unknown_command", "invalid"}


def test_command_from_fields_when_body_names_other_command_then_rejected() -> None:
    with pytest.raises(CommandRejected, match="path names 'pause'"):
        command_from_fields("pause", {"command": "resume"}, max_bytes=4096)
    cmd = command_from_fields("set_state", {"state": "reducing"}, max_bytes=4096)
    assert cmd == SetState(state=TradingState.REDUCING)


def test_handle_when_pause_then_daemon_paused_and_applied_logged() -> None:
    daemon = FakeDaemon()
    controller = Controller(control=daemon)
    with capture_logs() as logs:
        result = _handle(controller, b'{"command": "pause", "request_id": "r1", "reason": "news"}')
    assert result.ok
    assert result.request_id == "r1"
    assert daemon.paused
    assert daemon.calls == [("pause", "news")]
    assert [e["event"] for e in logs] == ["control.applied"]
    assert logs[0]["command"] == "pause"


def test_handle_when_flatten_symbol_then_only_that_symbol_closed() -> None:
    daemon = FakeDaemon()
    result = _handle(Controller(control=daemon), b'{"command": "flatten", "symbol": "AAA"}')
    assert result.ok
    assert result.detail == {"symbol": "AAA", "orders": 1}
    assert daemon.positions == {"AAA": 0.0, "BBB": -5.0}


def test_handle_when_flatten_all_then_every_position_closed() -> None:
    daemon = FakeDaemon()
    result = asyncio.run(Controller(control=daemon).apply(Flatten(), source="test"))
    assert result.detail["orders"] == 2
    assert set(daemon.positions.values()) == {0.0}


def test_handle_when_set_state_then_state_changed() -> None:
    daemon = FakeDaemon()
    result = _handle(Controller(control=daemon), b'{"command": "set_state", "state": "halted"}')
    assert result.ok
    assert daemon.state is TradingState.HALTED


def test_handle_when_reload_strategy_then_detail_lists_applied_and_refused_keys() -> None:
    result = _handle(Controller(control=FakeDaemon()), b'{"command": "reload_strategy"}')
    assert result.ok
    assert result.detail == {
        "applied": ["risk.max_daily_loss"],
        "refused": {"mode": "needs a restart"},
        "bundle_id": None,
    }


@pytest.mark.parametrize(
    "raw",
    [
        b'{"command": "nuke"}',
        b'{"command": "pause", "x": 1}',
        b"not json",
        b'{"command":"pause","reason":"' + b"x" * 5000 + b'"}',
    ],
)
def test_handle_when_command_bad_then_rejected_logged_and_nothing_changed(raw: bytes) -> None:
    daemon = FakeDaemon()
    controller = Controller(control=daemon)
    with capture_logs() as logs:
        result = _handle(controller, raw)
    assert not result.ok
    assert daemon.calls == []
    assert controller.rejected == 1
    assert [e["event"] for e in logs] == ["control.rejected"]
    assert logs[0]["log_level"] == "warning"


def test_handle_when_daemon_refuses_then_rejected_as_failed() -> None:
    daemon = FakeDaemon()
    daemon.fail_reload = True
    controller = Controller(control=daemon)
    result = _handle(controller, b'{"command": "reload_strategy"}')
    assert not result.ok
    assert result.reason == "failed"
    assert "$.risk.max_position" in result.error
    bad = _handle(controller, b'{"command": "reload_bundle", "path": "/bundles/bad"}')
    assert bad.reason == "failed"
    assert daemon.bundle_id == "bundle-1"


def test_apply_when_commands_concurrent_then_applied_one_at_a_time() -> None:
    order: list[str] = []

    class Slow(FakeDaemon):
        async def pause(self, reason: str) -> None:
            order.append("pause-start")
            await asyncio.sleep(0.01)
            order.append("pause-end")

        async def resume(self, reason: str) -> None:
            order.append("resume")

    controller = Controller(control=Slow())

    async def both() -> None:
        await asyncio.gather(
            controller.handle(b'{"command":"pause"}', source="a"),
            controller.handle(b'{"command":"resume"}', source="b"),
        )

    asyncio.run(both())
    assert order == ["pause-start", "pause-end", "resume"]
