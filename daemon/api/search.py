"""GET /search?q=WORDS&top=20: the charts of the windows the daemon holds, ranked by how well they
match the words (read-only, no token; the work: daemon/model/search.py, which explains why the
scoring never holds the order path's score lock for more than one small chunk of charts)."""

from __future__ import annotations

import asyncio
import base64
from datetime import datetime
from typing import Annotated, Protocol

from fastapi import APIRouter, HTTPException, Query, status
from pydantic import BaseModel

from daemon.model.search import (
    MAX_TOP,
    SearchInputError,
    SearchResult,
    SearchUnavailable,
    SearchWarming,
)
from vlm_engine.clip.search import MAX_QUERY_CHARS


class Searcher(Protocol):
    async def search(self, query: str, *, top: int, charts: bool = False) -> SearchResult: ...


class SearchHitOut(BaseModel):
    rank: int
    symbol: str
    ts: datetime
    similarity: float
    forward_return: float | None
    chart_png: str | None = None  # base64, when charts=true


class SearchOut(BaseModel):
    query: str
    bundle_id: str
    horizon_bars: int
    windows: int
    seconds: float
    hits: list[SearchHitOut]


def search_routes(*, searcher: Searcher | None) -> APIRouter:
    """GET /search (409 without a bundle or bars, 503 while the bundle loads or another search runs)."""
    router = APIRouter()
    one_at_a_time = asyncio.Lock()  # a search renders every held window: never two at once

    @router.get(
        "/search",
        response_model=SearchOut,
        tags=["model"],
        responses={
            409: {"description": "no bundle is loaded, or too few bars are held yet"},
            422: {"description": "q is empty or too long, top out of range"},
            503: {"description": "the bundle is loading or another search runs: retry"},
        },
    )
    async def search(
        q: Annotated[str, Query(min_length=1, max_length=MAX_QUERY_CHARS)],
        top: Annotated[int, Query(ge=1, le=MAX_TOP)] = 20,
        charts: bool = False,
    ) -> SearchOut:
        """Rank every chart window of the bars the daemon holds by CLIP similarity to the words q."""
        if searcher is None:
            raise HTTPException(status.HTTP_409_CONFLICT, detail="search is not served here")
        if one_at_a_time.locked():
            busy = "another search is running: retry"
            raise _retry(busy)
        async with one_at_a_time:
            try:
                result = await searcher.search(q, top=top, charts=charts)
            except SearchWarming as e:
                raise _retry(str(e)) from None
            except SearchUnavailable as e:
                raise HTTPException(status.HTTP_409_CONFLICT, detail=str(e)) from None
            except SearchInputError as e:
                raise HTTPException(422, detail=str(e)) from None
        return _out(result)

    return router


def _retry(detail: str) -> HTTPException:
    return HTTPException(
        status.HTTP_503_SERVICE_UNAVAILABLE, detail=detail, headers={"Retry-After": "1"}
    )


def _out(result: SearchResult) -> SearchOut:
    charts = result.charts
    return SearchOut(
        query=result.query,
        bundle_id=result.bundle_id,
        horizon_bars=result.horizon_bars,
        windows=result.windows,
        seconds=round(result.seconds, 3),
        hits=[
            SearchHitOut(
                rank=h.rank,
                symbol=h.symbol,
                ts=h.ts,
                similarity=h.similarity,
                forward_return=h.forward_return,
                chart_png=base64.b64encode(charts[i]).decode() if i < len(charts) else None,
            )
            for i, h in enumerate(result.hits)
        ],
    )
