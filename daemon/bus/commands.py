"""Control commands: a tagged union of frozen Structs, decoded strictly from JSON with a size limit."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec

from daemon.errors import InputError
from strategy.types import TradingState

RequestId = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._:-]+$")]
Reason = Annotated[str, msgspec.Meta(max_length=200)]
Symbol = Annotated[str, msgspec.Meta(min_length=1, max_length=32, pattern=r"^[A-Za-z0-9._/-]+$")]
BundlePath = Annotated[str, msgspec.Meta(min_length=1, max_length=1024)]


class _Command(
    msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, tag_field="command"
):
    request_id: RequestId | None = None
    reason: Reason = "operator"


class Pause(_Command, frozen=True, tag="pause"):
    """Stop opening new orders; open orders and positions stay as they are."""


class Resume(_Command, frozen=True, tag="resume"):
    """Take new orders again after a pause."""


class Flatten(_Command, frozen=True, tag="flatten"):
    """Close the position of one symbol, or of every symbol when symbol is absent."""

    symbol: Symbol | None = None


class SetState(_Command, frozen=True, tag="set_state"):
    """Set the risk engine's trading state (active, reducing, halted)."""

    state: TradingState


class ReloadBundle(_Command, frozen=True, tag="reload_bundle"):
    """Load the model bundle again (from path, or the configured one) and swap it in if valid."""

    path: BundlePath | None = None


class ReloadStrategy(_Command, frozen=True, tag="reload_strategy"):
    """Re-read the config file; apply strategy, risk, shutdown, log level and scorer settings
    if valid, refuse (and report) what needs a restart."""


Command = Pause | Resume | Flatten | SetState | ReloadBundle | ReloadStrategy
COMMAND_NAMES: tuple[str, ...] = tuple(
    str(c.__struct_config__.tag)
    for c in (Pause, Resume, Flatten, SetState, ReloadBundle, ReloadStrategy)
)

_decoder = msgspec.json.Decoder(Command)


class CommandRejected(InputError):
    """A command document is unusable; reason is a short code, the message says what and where."""

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


def decode_command(raw: bytes, *, max_bytes: int) -> Command:
    """Decode one command; raise CommandRejected (too_large, malformed, unknown_command, invalid)."""
    if len(raw) > max_bytes:
        msg = f"command is {len(raw)} bytes, over the limit of {max_bytes}"
        raise CommandRejected(msg, reason="too_large")
    try:
        command: Command = _decoder.decode(raw)
    except msgspec.ValidationError as e:
        msg = f"command: {e}"
        unknown = "`$.command`" in msg or "missing required field `command`" in msg
        raise CommandRejected(msg, reason="unknown_command" if unknown else "invalid") from None
    except msgspec.DecodeError as e:
        msg = f"command is not valid JSON: {e}"
        raise CommandRejected(msg, reason="malformed") from None
    except RecursionError:
        msg = "command is nested too deeply"
        raise CommandRejected(msg, reason="malformed") from None
    return command


def command_from_fields(name: str, fields: dict[str, Any] | None, *, max_bytes: int) -> Command:
    """Build a command from a name and a JSON object body (HTTP); same checks as decode_command."""
    body = dict(fields or {})
    if "command" in body and body["command"] != name:
        msg = f"command: body names {body['command']!r} but the path names {name!r}"
        raise CommandRejected(msg, reason="invalid")
    body["command"] = name
    try:
        raw = msgspec.json.encode(body)
    except (TypeError, OverflowError) as e:
        msg = f"command: body cannot be encoded: {e}"
        raise CommandRejected(msg, reason="malformed") from None
    return decode_command(raw, max_bytes=max_bytes)


def command_name(command: Command) -> str:
    return str(type(command).__struct_config__.tag)
