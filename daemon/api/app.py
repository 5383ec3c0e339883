"""The FastAPI app: health, readiness, metrics, status, predict, bundle reload and control commands."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Annotated, Any, Literal, Protocol

import msgspec
import structlog
from fastapi import Depends, FastAPI, HTTPException, Request, Response, status
from fastapi.exceptions import RequestValidationError
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

from daemon.api.auth import require_token
from daemon.api.config import ApiConfig
from daemon.api.form import multipart_png
from daemon.api.metrics import CONTENT_TYPE, Metrics
from daemon.bus.commands import CommandRejected, command_from_fields
from daemon.bus.publisher import encode_event
from daemon.control import CommandResult, Controller
from daemon.errors import InputError, TransientError
from strategy.bars import MAX_PRICE, MAX_VOLUME, MIN_PRICE
from strategy.types import Bar, Signal

log = structlog.get_logger("daemon.api")

CommandName = Literal["pause", "resume", "flatten", "set_state", "reload_bundle", "reload_strategy"]
FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]
# A price outside [MIN_PRICE, MAX_PRICE] is not a market price (1e308, 1e-300): refused with 422,
# by the bounds the bar validator applies to every feed (strategy/bars.py).
Price = Annotated[float, Field(allow_inf_nan=False, ge=MIN_PRICE, le=MAX_PRICE)]
_REJECTION_STATUS = {"too_large": 413, "failed": 409, "error": 500}
_OBJECT_BODY: dict[str, Any] = {
    "requestBody": {
        "required": False,
        "content": {
            "application/json": {"schema": {"type": "object", "additionalProperties": True}}
        },
    }
}


class BodyLimit:
    """ASGI middleware: a request body over max_bytes gets 413, by Content-Length or counted as
    it arrives (chunked bodies too); the app then reads the body from memory."""

    def __init__(self, app: Any, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope.get("headers") or ()).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_bytes):
            await self._refuse(send)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            body = message.get("body", b"")
            size += len(body)
            if size > self.max_bytes:
                await self._refuse(send)
                return
            chunks.append(body)
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Any:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, send: Any) -> None:
        body = encode_event({"detail": f"request body over {self.max_bytes} bytes"})
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


class Prediction(msgspec.Struct, frozen=True, kw_only=True):
    """A scored window or chart: the signal, the bundle that scored it (None for the rule scorer)
    and, for a chart PNG, the CLIP model's calibrated pattern probabilities."""

    signal: Signal
    bundle_id: str | None
    patterns: dict[str, float] | None = None


class Predictor(Protocol):
    """Scores one OHLCV window (oldest bar first); raise InputError when it cannot be scored."""

    async def predict(self, symbol: str, bars: Sequence[Bar]) -> Prediction: ...


class ChartRefused(InputError):
    """A chart PNG is fine as a file but cannot be scored by what is loaded (no bundle, other chart spec)."""


class ChartPredictor(Protocol):
    """Scores a chart PNG; InputError when it is unreadable, ChartRefused when it does not fit the model."""

    async def predict_chart(self, png: bytes) -> Prediction: ...


class BarIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    ts: AwareDatetime = Field(description="bar close time, with a timezone")
    open: Price
    high: Price
    low: Price
    close: Price
    volume: FiniteFloat = Field(ge=0, le=MAX_VOLUME)


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
    bundle_id: str | None = Field(
        default=None, description="the model bundle that scored it (null for the rule scorer)"
    )
    patterns: dict[str, float] | None = Field(
        default=None, description="calibrated pattern probabilities (chart PNG input)"
    )


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

    app.add_middleware(BodyLimit, max_bytes=cfg.max_body_bytes)

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
        openapi_extra=_PREDICT_BODY,
        responses={
            409: {
                "description": "a chart PNG the loaded model cannot score (no bundle, other spec)"
            },
            415: {"description": "the body is not JSON, image/png or multipart/form-data"},
            422: {"description": "the window or the PNG is malformed"},
            503: {"description": "no predictor is loaded, or it is busy: retry"},
        },
    )
    async def predict(request: Request) -> PredictResponse:
        """Score an OHLCV window (JSON) or a chart PNG (image/png body, or multipart field `file`)."""
        if predictor is None:
            raise HTTPException(
                status.HTTP_503_SERVICE_UNAVAILABLE, detail="no predictor is loaded"
            )
        kind = _media_type(request.headers.get("content-type", ""))
        if kind == "multipart/form-data":
            return await _predict_chart(predictor, await multipart_png(request))
        raw = await request.body()
        if kind == "image/png":
            return await _predict_chart(predictor, raw)
        if kind != "application/json" and not kind.endswith("+json") and kind:
            raise HTTPException(
                status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
                detail=f"content-type {kind}: send application/json, image/png or multipart/form-data",
            )
        try:
            body = PredictRequest.model_validate_json(raw)
        except ValidationError as e:
            raise RequestValidationError(_body_errors(e)) from None
        bars = _bars(body, max_bars=cfg.max_predict_bars)
        try:
            prediction = await predictor.predict(body.symbol, bars)
        except InputError as e:
            raise HTTPException(422, detail=str(e)) from None
        except TransientError as e:
            raise _busy(e) from None
        return _response(prediction)

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

    _document_models(app, PredictRequest)
    return app


_PREDICT_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/PredictRequest"}},
            "image/png": {"schema": {"type": "string", "format": "binary"}},
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {"file": {"type": "string", "format": "binary"}},
                    "required": ["file"],
                }
            },
        },
    }
}


def _document_models(app: FastAPI, *models: type[BaseModel]) -> None:
    """Add request models that are read by hand (not as FastAPI body parameters) to the schema."""
    generate: Callable[[], dict[str, Any]] = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = generate()
        schemas = schema.setdefault("components", {}).setdefault("schemas", {})
        for model in models:
            model_schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
            for name, definition in model_schema.pop("$defs", {}).items():
                schemas.setdefault(name, definition)
            schemas.setdefault(model.__name__, model_schema)
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def _body_errors(e: ValidationError) -> list[dict[str, Any]]:
    """pydantic's errors as FastAPI reports a body's: located under "body", without the raw input."""
    return [
        {"type": err["type"], "loc": ("body", *err["loc"]), "msg": err["msg"]}
        for err in e.errors(include_url=False, include_input=False, include_context=False)
    ]


def _media_type(header: str) -> str:
    return header.split(";", 1)[0].strip().lower()


async def _predict_chart(predictor: object, png: bytes) -> PredictResponse:
    predict_chart = getattr(predictor, "predict_chart", None)
    if predict_chart is None:
        raise HTTPException(
            409,
            detail="chart PNGs are scored by the CLIP model of a model bundle, and none is "
            "loaded here: send an OHLCV window as JSON, or serve a bundle "
            "(`vlmtrader serve --bundle DIR`)",
        )
    try:
        scored: Prediction = await predict_chart(png)
    except ChartRefused as e:
        raise HTTPException(409, detail=str(e)) from None
    except InputError as e:
        raise HTTPException(422, detail=str(e)) from None
    except TransientError as e:
        raise _busy(e) from None
    return _response(scored)


def _busy(e: TransientError) -> HTTPException:
    return HTTPException(
        status.HTTP_503_SERVICE_UNAVAILABLE, detail=str(e), headers={"Retry-After": "1"}
    )


def _response(prediction: Prediction) -> PredictResponse:
    signal, patterns = prediction.signal, prediction.patterns
    return PredictResponse(
        symbol=signal.symbol,
        ts=signal.ts,
        p_up=_finite(signal.p_up),
        confidence=_finite(signal.confidence),
        direction=signal.direction,
        scorer=signal.scorer,
        reasons=list(signal.reasons),
        bundle_id=prediction.bundle_id,
        patterns={k: _finite(v) for k, v in patterns.items()} if patterns is not None else None,
    )


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
    except RecursionError:
        msg = "body is nested too deeply"
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
