"""POST /predict: an OHLCV window (JSON) or a chart PNG scored by the loaded model, and the
protocols the model package answers it through (its values live in daemon/model/prediction.py)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime
from typing import Annotated, Any, Protocol

from fastapi import APIRouter, HTTPException, Request, status
from fastapi.exceptions import RequestValidationError
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

from daemon.api.config import ApiConfig
from daemon.api.form import multipart_png
from daemon.errors import InputError, TransientError
from daemon.model.prediction import ChartRefused, Prediction
from strategy.bars import MAX_PRICE, MAX_VOLUME, MIN_PRICE
from strategy.types import Bar

FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]
# A price outside [MIN_PRICE, MAX_PRICE] is not a market price (1e308, 1e-300): refused with 422,
# by the bounds the bar validator applies to every feed (strategy/bars.py).
Price = Annotated[float, Field(allow_inf_nan=False, ge=MIN_PRICE, le=MAX_PRICE)]


class Predictor(Protocol):
    """Scores one OHLCV window (oldest bar first); raise InputError when it cannot be scored."""

    async def predict(self, symbol: str, bars: Sequence[Bar]) -> Prediction: ...


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


def predict_routes(*, predictor: Predictor | None, cfg: ApiConfig) -> APIRouter:
    """POST /predict (503 while no predictor is loaded)."""
    router = APIRouter()

    @router.post(
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

    return router


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


def _bars(body: PredictRequest, *, max_bars: int) -> list[Bar]:
    """The window as Bars (at most max_bars). Each bar's invariants (high/low around the body,
    times strictly increasing, on the bar size) are checked once, by the bar validator every feed
    goes through (strategy/bars.py, via build_window), whose 422 names the first bad bar."""
    if len(body.bars) > max_bars:
        raise HTTPException(
            422, detail=f"bars: {len(body.bars)} bars, over the limit of {max_bars}"
        )
    return [Bar(symbol=body.symbol, **b.model_dump()) for b in body.bars]  # BarIn: Bar's fields


def _finite(value: float) -> float:
    return value if math.isfinite(value) else 0.0
