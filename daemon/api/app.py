"""The FastAPI app: health, readiness, metrics, status, predict, bundle reload and control commands."""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime
from typing import Annotated, Any, Literal, Protocol

import msgspec
import structlog
from fastapi import Depends, FastAPI, HTTPException, Request, Response, status
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from daemon.api.auth import require_token
from daemon.api.config import ApiConfig
from daemon.api.metrics import CONTENT_TYPE, Metrics
from daemon.bus.commands import CommandRejected, command_from_fields
from daemon.bus.publisher import encode_event
from daemon.control import CommandResult, Controller
from daemon.errors import InputError
from strategy.types import Bar, Signal

log = structlog.get_logger("daemon.api")

CommandName = Literal["pause", "resume", "flatten", "set_state", "reload_bundle", "reload_strategy"]
FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]
_REJECTION_STATUS = {"too_large": 413, "failed": 409}
_OBJECT_BODY: dict[str, Any] = {
    "requestBody": {
        "required": False,
        "content": {
            "application/json": {"schema": {"type": "object", "additionalProperties": True}}
        },
    }
}


class Predictor(Protocol):
    """Scores one OHLCV window (oldest bar first); raise InputError when it cannot be scored."""

    async def predict(self, symbol: str, bars: Sequence[Bar]) -> Signal: ...


class BarIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    ts: AwareDatetime = Field(description="bar close time, with a timezone")
    open: FiniteFloat = Field(gt=0)
    high: FiniteFloat = Field(gt=0)
    low: FiniteFloat = Field(gt=0)
    close: FiniteFloat = Field(gt=0)
    volume: FiniteFloat = Field(ge=0)


class PredictRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    symbol: str = Field(min_length=1, max_length=32, pattern=r"^[A-Za-z0-9._/-]+$")
    bars: list[BarIn] = Field(min_length=1, description="oldest first, strictly increasing ts")


class PredictResponse(BaseModel):
    symbol: str
    ts: datetime
    p_up: float
    confidence: float
    direction: int
    scorer: str
    reasons: list[str]


class Health(BaseModel):
    status: str


class Readiness(BaseModel):
    ready: bool
    checks: dict[str, bool]


class CommandOut(BaseModel):
    ok: bool
    command: str | None
    source: str
    request_id: str | None = None
    reason: str
    error: str
    detail: dict[str, Any]


def build_app(
    *,
    controller: Controller,
    metrics: Metrics,
    predictor: Predictor | None = None,
    token: str | None = None,
    config: ApiConfig | None = None,
) -> FastAPI:
    """Build the app around the running daemon's controller; `token` guards mutating endpoints."""
    cfg = config if config is not None else ApiConfig()
    control = controller.control
    authorized = Depends(require_token(token, token_env=cfg.token_env))
    app = FastAPI(
        title="vlmtrader",
        version="0.1.0",
        description="Health, metrics, status, predictions and control of a vlmtrader daemon.",
    )

    @app.middleware("http")
    async def limit_body(request: Request, call_next: Any) -> Response:
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > cfg.max_body_bytes):
            return _json({"detail": f"request body over {cfg.max_body_bytes} bytes"}, 413)
        response: Response = await call_next(request)
        return response

    @app.get("/healthz", response_model=Health, tags=["health"])
    async def healthz() -> Health:
        """The process is alive and its event loop answers."""
        return Health(status="ok")

    @app.get(
        "/readyz",
        response_model=Readiness,
        tags=["health"],
        responses={503: {"model": Readiness, "description": "not ready"}},
    )
    async def readyz() -> Response:
        """Feed connected, model warm, journal writable: 200 when every check passes, else 503."""
        checks = {str(k): bool(v) for k, v in control.readiness().items()}
        ready = bool(checks) and all(checks.values())
        return _json({"ready": ready, "checks": checks}, 200 if ready else 503)

    @app.get(
        "/metrics",
        tags=["health"],
        response_class=Response,
        responses={200: {"content": {"text/plain": {}}}},
    )
    async def prometheus_metrics() -> Response:
        """Prometheus text exposition."""
        return Response(metrics.render_latest(), media_type=CONTENT_TYPE)

    @app.get("/status", tags=["daemon"], responses={200: {"content": {"application/json": {}}}})
    async def daemon_status() -> Response:
        """Positions, open orders, P&L today, trading state and model bundle id."""
        return _json(control.status(), 200)

    @app.post(
        "/predict",
        response_model=PredictResponse,
        tags=["model"],
        responses={
            422: {"description": "the window is malformed"},
            503: {"description": "no predictor is loaded"},
        },
    )
    async def predict(body: PredictRequest) -> PredictResponse:
        """Score an OHLCV window with the loaded model (calibrated p_up, confidence, reasons)."""
        if predictor is None:
            raise HTTPException(
                status.HTTP_503_SERVICE_UNAVAILABLE, detail="no predictor is loaded"
            )
        bars = _bars(body, max_bars=cfg.max_predict_bars)
        try:
            signal = await predictor.predict(body.symbol, bars)
        except InputError as e:
            raise HTTPException(422, detail=str(e)) from None
        return PredictResponse(
            symbol=signal.symbol,
            ts=signal.ts,
            p_up=_finite(signal.p_up),
            confidence=_finite(signal.confidence),
            direction=signal.direction,
            scorer=signal.scorer,
            reasons=list(signal.reasons),
        )

    @app.post(
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

    @app.post(
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

    return app


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
    return _json(msgspec.structs.asdict(result), code)


def _object(raw: bytes) -> dict[str, Any] | None:
    if not raw.strip():
        return None
    try:
        value = msgspec.json.decode(raw)
    except msgspec.DecodeError as e:
        msg = f"body is not valid JSON: {e}"
        raise CommandRejected(msg, reason="malformed") from None
    if not isinstance(value, dict):
        msg = f"body must be a JSON object, not {type(value).__name__}"
        raise CommandRejected(msg, reason="invalid")
    return value


def _bars(body: PredictRequest, *, max_bars: int) -> list[Bar]:
    """Convert and check the window; a 422 names the first bad bar."""
    if len(body.bars) > max_bars:
        raise HTTPException(
            422, detail=f"bars: {len(body.bars)} bars, over the limit of {max_bars}"
        )
    bars: list[Bar] = []
    previous: datetime | None = None
    for i, b in enumerate(body.bars):
        if b.high < max(b.open, b.close, b.low) or b.low > min(b.open, b.close):
            raise HTTPException(422, detail=f"bars[{i}]: high/low do not contain open and close")
        if previous is not None and b.ts <= previous:
            raise HTTPException(
                422, detail=f"bars[{i}]: ts {b.ts.isoformat()} is not after the bar before"
            )
        previous = b.ts
        bars.append(
            Bar(
                symbol=body.symbol,
                ts=b.ts,
                open=b.open,
                high=b.high,
                low=b.low,
                close=b.close,
                volume=b.volume,
            )
        )
    return bars


def _command_responses() -> dict[int | str, dict[str, Any]]:
    return {
        401: {"description": "missing or wrong bearer token"},
        409: {"model": CommandOut, "description": "the daemon refused the command"},
        413: {"model": CommandOut, "description": "the command is too large"},
        422: {"model": CommandOut, "description": "the command is malformed"},
        503: {"description": "no API token is configured"},
    }


def _finite(value: float) -> float:
    return value if math.isfinite(value) else 0.0


def _json(value: Any, code: int) -> Response:
    return Response(encode_event(value), status_code=code, media_type="application/json")
