"""Search charts with words, as the CLI and the daemon run it: a bars file (`vlmtrader search`) or the
windows the daemon's bar store holds (GET /search), ranked by the bundle's CLIP text-image similarity
(the ranking itself: vlm_engine/clip/search.py; the HTML page: daemon/model/search_page.py).

The daemon's search reads the live engine but never holds the pipeline's score lock for long: it
takes the lock for one chunk of charts at a time (CHUNK_UNDER_LOCK) and releases it between
chunks, so a closing bar waits for at most one small chunk, never for the whole search. The
windows are copied from the bar store on the event loop (cheap array views), the charts are
rendered and embedded in a worker thread.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import msgspec
import numpy as np
import structlog

from daemon.errors import InputError
from daemon.model.loader import load_engine
from daemon.model.predict import ServesModels
from vlm_engine.clip.search import SearchHit

if TYPE_CHECKING:
    from strategy.bars import Window
    from vlm_engine.bundle import ModelCard
    from vlm_engine.clip.search import WindowIndex
    from vlm_engine.infer import ChartEngine

log = structlog.get_logger("daemon.model")

DEFAULT_HORIZON = 5
CHUNK_UNDER_LOCK = 16
MAX_TOP = 200  # GET /search's limit


class SearchInputError(InputError):
    """The search cannot run on what was given (bad bars file, empty query, too few bars)."""


class SearchUnavailable(InputError):
    """The daemon cannot search now (no bundle serves, no bars held, or too few yet): a 409 with why."""


class SearchWarming(SearchUnavailable):
    """The bundle is still loading: retry shortly (a 503 with Retry-After)."""


class SearchResult(msgspec.Struct, frozen=True, kw_only=True):
    """A ranking: the query, the bundle that scored it, how many windows were searched and the best
    hits; charts holds each hit's PNG (same order) when asked for."""

    query: str
    bundle_id: str
    horizon_bars: int
    windows: int
    seconds: float
    hits: list[SearchHit]
    charts: list[bytes] = msgspec.field(default_factory=list)


def bundle_horizon(card: ModelCard) -> int:
    """The bundle's label horizon in bars (the default for bundles that do not record one)."""
    return card.trained_on.horizon_bars if card.trained_on is not None else DEFAULT_HORIZON


def search_bars_file(
    bars: Path,
    bundle: Path,
    query: str,
    *,
    top: int = 20,
    charts: bool = False,
    progress: bool = False,
) -> SearchResult:
    """Rank every chart window of a bars file (CSV/Parquet file or directory) by similarity to the
    query; SearchInputError / BundleUnusable (one line) when the query, bars or bundle are unusable."""
    from tqdm import tqdm

    from vlm_engine.clip.search import QueryError, all_similarities, check_query
    from vlm_engine.dataset.bars import load_bars, symbol_windows
    from vlm_engine.dataset.errors import BarsInputError
    from vlm_engine.infer import InferenceConfig

    try:
        words = check_query(query)
        frame = load_bars(bars)
        series = symbol_windows(frame, where=str(bars))
    except (QueryError, BarsInputError) as e:
        raise SearchInputError(str(e)) from None
    engine = load_engine(bundle, spec_hash=None, inference=InferenceConfig(threads=1))
    started = time.perf_counter()
    index = _index(engine, series, where=str(bars))
    texts = _texts(engine, words)
    with tqdm(total=len(index), desc="charts", unit="chart", disable=not progress) as bar:
        scores = all_similarities(engine, index, texts, tick=bar.update)[:, 0]
    return _result(engine, index, scores, words, top=top, charts=charts, started=started)


def _index(engine: ChartEngine, series: dict[str, Window], *, where: str) -> WindowIndex:
    from vlm_engine.clip.search import chart_windows

    need = engine.spec.bars_needed
    index = chart_windows(series, bars_needed=need, horizon=bundle_horizon(engine.bundle.card))
    if not len(index):
        longest = max((len(w) for w in series.values()), default=0)
        msg = f"{where}: no symbol has the {need} bars one chart needs (longest: {longest})"
        raise SearchInputError(msg)
    return index


def _texts(engine: ChartEngine, query: str) -> np.ndarray:
    from vlm_engine.clip.search import text_embeddings

    return text_embeddings(engine, [query])


def _result(
    engine: ChartEngine,
    index: WindowIndex,
    scores: np.ndarray,
    query: str,
    *,
    top: int,
    charts: bool,
    started: float,
) -> SearchResult:
    from vlm_engine.clip.analogs import png_bytes
    from vlm_engine.clip.search import top_hits

    hits = top_hits(index, scores, top)
    rows = [h.row for h in hits]
    images = list(engine.render(index.windows(rows))) if charts and hits else []
    result = SearchResult(
        query=query,
        bundle_id=engine.bundle_id,
        horizon_bars=index.horizon,
        windows=len(index),
        seconds=time.perf_counter() - started,
        hits=hits,
        charts=[png_bytes(image, compress_level=6) for image in images],
    )
    log.info(
        "search.ranked",
        query=query,
        bundle_id=result.bundle_id,
        windows=result.windows,
        top=len(hits),
        best=round(hits[0].similarity, 4) if hits else None,
        duration_ms=round(result.seconds * 1000, 1),
    )
    return result


class HoldsBars(Protocol):
    """What the daemon's search reads from its bar store."""

    @property
    def symbols(self) -> tuple[str, ...]: ...

    def window(self, symbol: str) -> Window | None: ...


class DaemonSearch:
    """GET /search over the windows the daemon's bar store holds, scored by the served bundle's CLIP
    (see the module docstring for the lock)."""

    def __init__(
        self, *, slot: ServesModels, store: HoldsBars | None, lock: asyncio.Lock | None = None
    ) -> None:
        self.slot = slot
        self.store = store
        self.lock = lock if lock is not None else asyncio.Lock()

    async def search(self, query: str, *, top: int, charts: bool = False) -> SearchResult:
        """The best `top` windows for the query; SearchUnavailable (409) when no bundle serves or too
        few bars are held, SearchInputError (422) for a bad query."""
        from vlm_engine.clip.search import QueryError, check_query, similarities

        try:
            words = check_query(query)
        except QueryError as e:
            raise SearchInputError(str(e)) from None
        bundle = self.slot.active.bundle  # read once: a swap never splits a search
        if bundle is None:
            if self.slot.loading:
                msg = "search needs a bundle's CLIP model and the bundle is still loading: retry"
                raise SearchWarming(msg)
            msg = "search needs a bundle's CLIP model and none is loaded (the rule scorer serves)"
            raise SearchUnavailable(msg)
        engine = bundle.engine
        try:
            index = _index(engine, self._series(), where="the daemon's bars")
        except SearchInputError as e:
            msg = f"{e} yet"
            raise SearchUnavailable(msg) from None
        started = time.perf_counter()
        async with self.lock:
            texts = await asyncio.to_thread(_texts, engine, words)
        parts = []
        for rows in index.chunks(CHUNK_UNDER_LOCK):
            async with self.lock:  # one small chunk at a time: bars never wait for the search
                parts.append(await asyncio.to_thread(similarities, engine, index, texts, rows=rows))
        scores = np.concatenate(parts)[:, 0]
        return await asyncio.to_thread(
            _result, engine, index, scores, words, top=top, charts=charts, started=started
        )

    def _series(self) -> dict[str, Window]:
        if self.store is None:
            msg = (
                "this process holds no bars (`vlmtrader serve`): search a bars file with "
                "`vlmtrader search WORDS --bars FILE --bundle DIR`"
            )
            raise SearchUnavailable(msg)
        held = {s: self.store.window(s) for s in self.store.symbols}
        return {s: w for s, w in held.items() if w is not None}


def hit_rows(result: SearchResult) -> list[dict[str, Any]]:
    """The hits as plain rows (JSON, tables)."""
    return [msgspec.to_builtins(h) for h in result.hits]


__all__: Sequence[str] = (
    "DaemonSearch",
    "SearchInputError",
    "SearchResult",
    "SearchUnavailable",
    "SearchWarming",
    "bundle_horizon",
    "hit_rows",
    "search_bars_file",
)
