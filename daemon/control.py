"""Operator commands (MQTT or HTTP) applied to the running daemon through one narrow Protocol."""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

import msgspec
import structlog

from daemon.bus.commands import (
    Command,
    CommandRejected,
    Flatten,
    Pause,
    ReloadBundle,
    ReloadStrategy,
    Resume,
    SetState,
    command_name,
    decode_command,
)
from daemon.errors import ConfigError, InputError
from daemon.reload_plan import ReloadReport
from daemon.supervisor import describe
from strategy.types import TradingState

log = structlog.get_logger("daemon.control")


class DaemonControl(Protocol):
    """What operators may do to the running daemon; daemon/app.py implements it."""

    async def pause(self, reason: str) -> None:
        """Stop opening new orders."""

    async def resume(self, reason: str) -> None:
        """Open new orders again."""

    async def flatten(self, symbol: str | None, reason: str) -> int:
        """Close one symbol's position (or all); returns the number of orders sent."""

    async def set_trading_state(self, state: TradingState, reason: str) -> None:
        """Set the risk engine's trading state."""

    async def reload_strategy(self) -> ReloadReport:
        """Re-read the config file and apply what needs no restart; report the applied and the
        refused keys; raise ConfigError and change nothing when it is invalid."""

    async def reload_bundle(self, path: str | None) -> str:
        """Load and swap the model bundle; returns its id; raise InputError when it is unusable."""

    def status(self) -> dict[str, Any]:
        """Positions, open orders, P&L today, trading state, bundle id: JSON-encodable values."""

    def readiness(self) -> dict[str, bool]:
        """Named readiness checks (feed_connected, model_warm, journal_writable)."""


class CommandResult(msgspec.Struct, frozen=True, kw_only=True):
    """What happened to one command; `reason` is a short code when it was rejected."""

    ok: bool
    command: str | None
    source: str
    request_id: str | None = None
    reason: str = "ok"
    error: str = ""
    detail: dict[str, Any] = msgspec.field(default_factory=dict)


class Controller:
    """Validates and applies commands one at a time; a rejected command changes nothing."""

    def __init__(self, *, control: DaemonControl, max_command_bytes: int = 4_096) -> None:
        self.control = control
        self.max_command_bytes = max_command_bytes
        self._lock = asyncio.Lock()
        self.applied = 0
        self.rejected = 0

    async def handle(self, raw: bytes, *, source: str) -> CommandResult:
        """Decode a JSON command and apply it; never raises for bad input."""
        try:
            command = decode_command(raw, max_bytes=self.max_command_bytes)
        except CommandRejected as e:
            return self.reject(source=source, reason=e.reason, error=str(e))
        return await self.apply(command, source=source)

    async def apply(self, command: Command, *, source: str) -> CommandResult:
        """Apply one validated command; failures of the daemon's own checks come back as rejections."""
        name = command_name(command)
        async with self._lock:
            failure: tuple[str, str] | None = None
            try:
                detail = await self._dispatch(command)
            except (InputError, ConfigError) as e:
                failure = ("failed", str(e))
            except Exception as e:  # one command must never take its listener down with it
                failure = ("error", describe(e))
            if failure is not None:
                return self.reject(
                    source=source,
                    reason=failure[0],
                    error=failure[1],
                    command=name,
                    request_id=command.request_id,
                )
        self.applied += 1
        log.info(
            "control.applied",
            command=name,
            source=source,
            request_id=command.request_id,
            reason=command.reason,
            **detail,
        )
        return CommandResult(
            ok=True, command=name, source=source, request_id=command.request_id, detail=detail
        )

    def reject(
        self,
        *,
        source: str,
        reason: str,
        error: str,
        command: str | None = None,
        request_id: str | None = None,
    ) -> CommandResult:
        """Count and log a rejection (control.rejected), and describe it."""
        self.rejected += 1
        log.warning(
            "control.rejected",
            command=command,
            source=source,
            request_id=request_id,
            reason=reason,
            error=error,
        )
        return CommandResult(
            ok=False,
            command=command,
            source=source,
            request_id=request_id,
            reason=reason,
            error=error,
        )

    async def _dispatch(self, command: Command) -> dict[str, Any]:
        c = self.control
        match command:
            case Pause():
                await c.pause(command.reason)
                return {}
            case Resume():
                await c.resume(command.reason)
                return {}
            case Flatten():
                orders = await c.flatten(command.symbol, command.reason)
                return {"symbol": command.symbol, "orders": orders}
            case SetState():
                await c.set_trading_state(command.state, command.reason)
                return {"state": str(command.state)}
            case ReloadBundle():
                bundle_id = await c.reload_bundle(command.path)
                return {"bundle_id": bundle_id}
            case ReloadStrategy():
                report = await c.reload_strategy()
                return {
                    "applied": list(report.applied),
                    "refused": report.refused,
                    "bundle_id": report.bundle_id,
                }
        msg = f"command {command!r} has no handler"  # pragma: no cover - the union is closed
        raise InputError(msg)
