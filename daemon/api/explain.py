"""Read-only explanation routes (no token): GET /orders/{client_order_id}/explain,
/charts/{sha256}.png and /analogs/{row}.png.

Every path parameter is matched whole against a strict pattern before it names anything, and a
chart is only ever a file directly inside the charts dir (ChartStore.path), so `..`, encoded dots,
absolute paths, NUL or over-long ids answer 404 (422 for a malformed order id), never a file
elsewhere. Reads run in FastAPI's thread pool (sync handlers), off the event loop."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fastapi import APIRouter, HTTPException, Response

from daemon.api.asgi import json_response
from daemon.explain.charts import ChartStore
from daemon.explain.store import ExplanationStoreError, read_explanation
from daemon.explain.values import CHARTS_DIR, EXPLAIN_DB

ORDER_ID = re.compile(r"^[A-Za-z0-9._-]{1,80}$")
CHART_NAME = re.compile(r"^([0-9a-f]{64})\.png$")
ANALOG_NAME = re.compile(r"^([0-9]{1,9})\.png$")
_PNG = "image/png"
_CACHE = {"Cache-Control": "public, max-age=31536000, immutable"}


def _not_found(what: str) -> HTTPException:
    return HTTPException(404, detail=what)


def explain_routes(*, state_dir: Path, analogs: Callable[[], Any] | None = None) -> APIRouter:
    """The routes over <state_dir>/explanations.sqlite, <state_dir>/charts and the loaded
    bundle's analog index (analogs() returns it, or None)."""
    router = APIRouter()
    db = Path(state_dir) / EXPLAIN_DB
    charts = ChartStore(directory=Path(state_dir) / CHARTS_DIR)

    @router.get(
        "/orders/{client_order_id}/explain",
        tags=["explain"],
        responses={200: {"content": {"application/json": {}}}},
    )
    def explain_order(client_order_id: str) -> Response:
        """Why the order was placed: chart, CLIP texts and patterns, analogs, contributions, fusion, risk."""
        if not ORDER_ID.fullmatch(client_order_id):
            raise HTTPException(
                422, detail="client_order_id: use 1-80 letters, digits, '.', '_' or '-'"
            )
        try:
            doc = read_explanation(db, client_order_id)
        except ExplanationStoreError as e:
            raise HTTPException(503, detail=str(e)) from None
        if doc is None:
            msg = f"order {client_order_id}: no explanation"
            raise _not_found(msg)
        chart = doc.get("chart")
        if isinstance(chart, dict) and charts.path(str(chart.get("hash", ""))) is None:
            doc["chart"] = None  # removed by retention since
        return json_response(doc, 200)

    @router.get("/charts/{name}", tags=["explain"], response_class=Response,
                responses={200: {"content": {_PNG: {}}}})  # fmt: skip
    def chart_png(name: str) -> Response:
        """A chart an explanation names, by the sha256 of its PNG."""
        match = CHART_NAME.fullmatch(name)
        data = charts.read(match[1]) if match else None
        if data is None:
            msg = "chart: no such chart"
            raise _not_found(msg)
        return Response(data, media_type=_PNG, headers=_CACHE)

    @router.get("/analogs/{name}", tags=["explain"], response_class=Response,
                responses={200: {"content": {_PNG: {}}}})  # fmt: skip
    def analog_png(name: str) -> Response:
        """A training chart of the loaded bundle's analog index, by row."""
        match = ANALOG_NAME.fullmatch(name)
        index = analogs() if analogs is not None and match else None
        if match is None or index is None:
            msg = "analog: no such chart (or the bundle has no analog index)"
            raise _not_found(msg)
        try:
            data = index.chart_png(int(match[1]))
        except Exception:  # the index's own error for a bad row: not found
            msg = f"analog: no row {match[1]}"
            raise _not_found(msg) from None
        return Response(bytes(data), media_type=_PNG)

    return router
