"""POST /control/{command} and /bundle/reload: operator commands over HTTP, applied by the
daemon's Controller as the MQTT ones are; each needs the bearer token."""

from __future__ import annotations

from typing import Any, Literal

import msgspec
from fastapi import APIRouter, Request, Response
from fastapi.params import Depends
from pydantic import BaseModel

from daemon.api.asgi import json_response
from daemon.api.config import ApiConfig
from daemon.bus.commands import CommandRejected, command_from_fields
from daemon.control import CommandResult, Controller

CommandName = Literal["pause", "resume", "flatten", "set_state", "reload_bundle", "reload_strategy"]
_REJECTION_STATUS = {"too_large": 413, "failed": 409, "error": 500}
_OBJECT_BODY: dict[str, Any] = {
    "requestBody": {
        "required": False,
        "content": {
            "application/json": {"schema": {"type": "object", "additionalProperties": True}}
        },
    }
}


class CommandOut(BaseModel):
    ok: bool
    command: str | None
    source: str
    request_id: str | None = None
    reason: str
    error: str
    detail: dict[str, Any]


def command_routes(*, controller: Controller, authorized: Depends, cfg: ApiConfig) -> APIRouter:
    """POST /bundle/reload and /control/{command}, each behind `authorized`."""
    router = APIRouter()

    @router.post(
        "/bundle/reload",
        response_model=CommandOut,
        tags=["model"],
        dependencies=[authorized],
        openapi_extra=_OBJECT_BODY,
        responses=_command_responses(),
    )
    async def bundle_reload(request: Request) -> Response:
        """Load the model bundle again (body may name {"path": ...}); swap it in if valid."""
        return await _command(controller, "reload_bundle", request, cfg)

    @router.post(
        "/control/{command}",
        response_model=CommandOut,
        tags=["control"],
        dependencies=[authorized],
        openapi_extra=_OBJECT_BODY,
        responses=_command_responses(),
    )
    async def control_command(command: CommandName, request: Request) -> Response:
        """Apply one operator command; the body holds its fields (symbol, state, reason, request_id)."""
        return await _command(controller, command, request, cfg)

    return router


async def _command(controller: Controller, name: str, request: Request, cfg: ApiConfig) -> Response:
    raw = await request.body()
    result: CommandResult
    try:
        fields = _object(raw)
        command = command_from_fields(name, fields, max_bytes=controller.max_command_bytes)
    except CommandRejected as e:
        result = controller.reject(source="http", reason=e.reason, error=str(e), command=name)
    else:
        result = await controller.apply(command, source="http")
    code = 200 if result.ok else _REJECTION_STATUS.get(result.reason, 422)
    return json_response(msgspec.structs.asdict(result), code)


def _object(raw: bytes) -> dict[str, Any] | None:
    if not raw.strip():
        return None
    try:
        value = msgspec.json.decode(raw)
    except msgspec.DecodeError as e:
        msg = f"body is not valid JSON: {e}"
        raise CommandRejected(msg, reason="malformed") from None
    except RecursionError:
        msg = "body is nested too deeply"
        raise CommandRejected(msg, reason="malformed") from None
    if not isinstance(value, dict):
        msg = f"body must be a JSON object, not {type(value).__name__}"
        raise CommandRejected(msg, reason="invalid")
    return value


def _command_responses() -> dict[int | str, dict[str, Any]]:
    return {
        401: {"description": "missing or wrong bearer token"},
        409: {"model": CommandOut, "description": "the daemon refused the command"},
        413: {"model": CommandOut, "description": "the command is too large"},
        422: {"model": CommandOut, "description": "the command is malformed"},
        503: {"description": "no API token is configured"},
    }
