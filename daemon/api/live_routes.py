"""GET /events (server-sent events) and the read-only JSON the dashboard draws from (/api/*).

No `from __future__ import annotations` here: FastAPI reads the routes' Annotated parameters, whose
limits and dependency are local to live_routes(), at run time."""

from collections.abc import AsyncIterator
from typing import Annotated, Any

import structlog
from fastapi import APIRouter, Depends, HTTPException, Query, Response
from fastapi.sse import EventSourceResponse, ServerSentEvent

from daemon.api.asgi import json_response
from daemon.api.config import ApiConfig
from daemon.api.journal_reader import JournalReader
from daemon.api.live import EventStream, LiveHub, StatusSource
from daemon.bus.publisher import encode_event
from daemon.errors import InputError

log = structlog.get_logger("daemon.api.live")

SYMBOL = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,31}$"
MAX_ORDERS = 1_000
MAX_DAYS = 3_660


def live_routes(
    *, hub: LiveHub, status: StatusSource, reader: JournalReader | None, cfg: ApiConfig
) -> APIRouter:
    """GET /events, /api/bars, /api/orders, /api/equity and /api/risk."""
    router = APIRouter(tags=["dashboard"])
    Symbol = Annotated[str | None, Query(pattern=SYMBOL, description="one symbol")]

    def snapshot() -> str:
        return encode_event({**status(), "drift": hub.last_drift, "live": hub.stats}).decode()

    async def stream() -> AsyncIterator[EventStream]:
        opened = hub.open_stream()
        if opened is None:
            raise HTTPException(
                503, detail=f"{cfg.events_clients} event streams are open already, or stopping"
            )
        try:
            yield opened
        finally:
            hub.close_stream(opened)

    # Not in the OpenAPI schema: a stream that never ends is nothing a client generator can call.
    @router.get("/events", response_class=EventSourceResponse, include_in_schema=False)
    async def events(
        opened: Annotated[EventStream, Depends(stream)],
    ) -> AsyncIterator[ServerSentEvent]:
        """Live updates: `status` first and every few seconds, then `bar`, `order`, `fill` and
        `notice` events as the daemon makes them; a client that falls behind is dropped."""
        yield ServerSentEvent(event="status", raw_data=snapshot(), retry=2_000)
        async for item in opened.items(status_seconds=cfg.events_status_seconds):
            if item is None:
                yield ServerSentEvent(event="status", raw_data=snapshot())
            else:
                yield ServerSentEvent(event=item[0], raw_data=item[1])

    @router.get("/api/bars")
    async def bars(
        symbol: Symbol = None,
        limit: Annotated[int, Query(ge=1, le=cfg.chart_bars)] = min(200, cfg.chart_bars),
    ) -> Response:
        """The last `limit` bars of one symbol (or of every symbol), oldest first."""
        symbols = [symbol] if symbol else hub.symbols()
        return json_response({"bars": {s: hub.bars(s, limit) for s in symbols}}, 200)

    @router.get("/api/orders")
    async def orders(
        symbol: Symbol = None,
        limit: Annotated[int, Query(ge=1, le=MAX_ORDERS)] = 50,
    ) -> Response:
        """The journal's newest orders first."""
        rows = await _journal(reader, "orders", lambda r: r.orders(limit=limit, symbol=symbol))
        return json_response({"orders": rows}, 200)

    @router.get("/api/equity")
    async def equity(
        limit: Annotated[int, Query(ge=1, le=cfg.equity_points)] = min(2_000, cfg.equity_points),
        days: Annotated[int, Query(ge=1, le=MAX_DAYS)] = 90,
    ) -> Response:
        """Equity after each bar batch since the daemon started, and the journaled daily P&L."""
        daily = await _journal(reader, "daily P&L", lambda r: r.daily_equity(limit=days))
        return json_response({"points": hub.equity(limit), "daily": daily}, 200)

    @router.get("/api/risk")
    async def risk() -> Response:
        """Risk rejections by reason over the whole journal, with the trading state."""
        current = status()
        rejections = await _journal(reader, "rejections", lambda r: r.rejections())
        return json_response(
            {
                "trading_state": current.get("trading_state"),
                "paused": current.get("paused"),
                "rejections": rejections or {},
            },
            200,
        )

    return router


async def _journal(reader: JournalReader | None, what: str, query: Any) -> Any:
    """Run one read; a journal that cannot be read answers 503 with one log line."""
    if reader is None:
        return []
    try:
        return await query(reader)
    except InputError as e:
        log.warning("dashboard.read_failed", what=what, error=str(e))
        raise HTTPException(503, detail=str(e)) from None
