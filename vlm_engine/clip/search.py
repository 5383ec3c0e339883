"""Search charts with words: every chart window of some bars ranked by CLIP text-image cosine
similarity, and precision@k of pattern texts against the windows' labels.

A window is one chart the bundle's spec draws: the `bars_needed` bars ending on each bar of a
symbol. Its forward return is the close-to-close change over the bundle's horizon, NaN where the
horizon runs past the bars. Similarities are computed chunk by chunk, so a long bars file never
holds more than one chunk of charts or embeddings in memory.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import msgspec
import numpy as np
import numpy.typing as npt

from vlm_engine.clip.errors import ClipDataError
from vlm_engine.labels.outcome import forward_returns
from vlm_engine.render import ChartWindow

if TYPE_CHECKING:
    from vlm_engine.infer.engine import ChartEngine

Float32Array = npt.NDArray[np.float32]
MAX_QUERY_CHARS = 300
CHUNK = 256


class QueryError(ClipDataError):
    """The search words cannot be used (empty, or longer than MAX_QUERY_CHARS)."""


class WindowIndex(msgspec.Struct, frozen=True, kw_only=True, eq=False):
    """Every chart window of some bars: per window its symbol, the close time of its last bar
    (epoch s), its forward return and its label ("" none, or unknown); `series` holds each
    symbol's bars, a window being series[symbol].slice(end + 1 - bars_needed, end + 1)."""

    series: dict[str, ChartWindow]
    bars_needed: int
    horizon: int
    symbols: tuple[str, ...]
    ends: npt.NDArray[np.int64]
    ts: npt.NDArray[np.int64]
    forward_return: npt.NDArray[np.float64]
    labels: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.symbols)

    def windows(self, rows: Sequence[int] | npt.NDArray[np.int64]) -> list[ChartWindow]:
        need = self.bars_needed
        out = []
        for row in np.asarray(rows, dtype=np.int64).tolist():
            end = int(self.ends[row])
            out.append(self.series[self.symbols[row]].slice(end + 1 - need, end + 1))
        return out

    def chunks(self, size: int = CHUNK) -> list[slice]:
        return [slice(s, min(len(self), s + size)) for s in range(0, len(self), size)]

    def take(self, rows: npt.NDArray[np.int64]) -> WindowIndex:
        """The windows at `rows` (e.g. the held-out ones), in that order."""
        picked = np.asarray(rows, dtype=np.int64)
        return msgspec.structs.replace(
            self,
            symbols=tuple(self.symbols[i] for i in picked.tolist()),
            ends=self.ends[picked],
            ts=self.ts[picked],
            forward_return=self.forward_return[picked],
            labels=tuple(self.labels[i] for i in picked.tolist()),
        )

    def relabel(self, labels: Sequence[str]) -> WindowIndex:
        """The same windows with other labels (one per window)."""
        if len(labels) != len(self):
            msg = f"relabel: {len(labels)} labels for {len(self)} windows"
            raise ValueError(msg)
        return msgspec.structs.replace(self, labels=tuple(str(x) for x in labels))


class SearchHit(msgspec.Struct, frozen=True, kw_only=True):
    """One window in the ranking; forward_return is None where the horizon runs past the bars."""

    rank: int
    row: int
    symbol: str
    ts: datetime
    similarity: float
    forward_return: float | None
    label: str = ""


class PatternPrecision(msgspec.Struct, frozen=True, kw_only=True):
    """How many of the k windows most similar to a pattern's text carry that pattern's label,
    with the Wilson 95% interval and the pattern's base rate over the same windows."""

    pattern: str
    text: str
    k: int
    hits: int
    precision: float
    low: float
    high: float
    base_rate: float
    positives: int
    windows: int


def check_query(text: str) -> str:
    """The query with surrounding blanks removed; QueryError when empty or too long."""
    query = " ".join(str(text).split())
    if not query:
        msg = "query: empty; give words that describe a chart, e.g. 'hammer after a decline'"
        raise QueryError(msg)
    if len(query) > MAX_QUERY_CHARS:
        msg = f"query: {len(query)} characters, the limit is {MAX_QUERY_CHARS}"
        raise QueryError(msg)
    return query


def chart_windows(
    series: Mapping[str, ChartWindow],
    *,
    bars_needed: int,
    horizon: int,
    labels: Mapping[str, Sequence[str]] | None = None,
) -> WindowIndex:
    """Every window of `bars_needed` bars of each symbol's series (symbols in sorted order);
    labels (per symbol, one per bar) label each window by its last bar."""
    symbols: list[str] = []
    ends, stamps, forward, names = [], [], [], []
    for symbol in sorted(series):
        bars = series[symbol]
        n = len(bars)
        if n < bars_needed:
            continue
        end = np.arange(bars_needed - 1, n, dtype=np.int64)
        ret = forward_returns(np.asarray(bars.close, dtype=np.float64), horizon)[end]
        symbols += [symbol] * end.size
        ends.append(end)
        stamps.append(bars.timestamps[end])
        forward.append(ret)
        own = labels.get(symbol) if labels is not None else None
        names += [str(own[i]) for i in end.tolist()] if own is not None else [""] * end.size
    return WindowIndex(
        series=dict(series),
        bars_needed=bars_needed,
        horizon=horizon,
        symbols=tuple(symbols),
        ends=np.concatenate(ends) if ends else np.zeros(0, np.int64),
        ts=np.concatenate(stamps).astype(np.int64) if stamps else np.zeros(0, np.int64),
        forward_return=np.concatenate(forward) if forward else np.zeros(0),
        labels=tuple(names),
    )


def text_embeddings(engine: ChartEngine, texts: Sequence[str]) -> Float32Array:
    """(T, D) unit embeddings of texts by the engine's bundle's own text tower."""
    from vlm_engine.clip.encode import encode_texts

    return encode_texts(engine.bundle.parts, list(texts))


def similarities(
    engine: ChartEngine,
    index: WindowIndex,
    texts: Float32Array,
    *,
    rows: slice | None = None,
) -> Float32Array:
    """(rows, T) cosine similarity of each window's chart (rendered and embedded by the engine)
    to each of the T unit text embeddings."""
    part = rows or slice(0, len(index))
    windows = index.windows(np.arange(len(index))[part])
    if not windows:
        return np.zeros((0, texts.shape[0]), dtype=np.float32)
    images = engine.score_batch(windows).embeddings
    return (images @ texts.T).astype(np.float32)


def all_similarities(
    engine: ChartEngine,
    index: WindowIndex,
    texts: Float32Array,
    *,
    chunk: int = CHUNK,
    tick: Callable[[int], object] | None = None,
) -> Float32Array:
    """similarities() over every window, chunk by chunk; tick(n) after each chunk of n windows."""
    out = []
    for rows in index.chunks(chunk):
        out.append(similarities(engine, index, texts, rows=rows))
        if tick is not None:
            tick(rows.stop - rows.start)
    return np.concatenate(out) if out else np.zeros((0, texts.shape[0]), dtype=np.float32)


def top_hits(index: WindowIndex, scores: npt.NDArray[np.floating], top: int) -> list[SearchHit]:
    """The `top` windows by score, best first (ties: earlier row first)."""
    top = min(max(int(top), 0), len(index))
    if top == 0:
        return []
    order = np.lexsort((np.arange(scores.size), -scores))[:top]
    return [
        SearchHit(
            rank=rank,
            row=int(row),
            symbol=index.symbols[row],
            ts=datetime.fromtimestamp(int(index.ts[row]), tz=UTC),
            similarity=float(scores[row]),
            forward_return=_finite_or_none(float(index.forward_return[row])),
            label=index.labels[row],
        )
        for rank, row in enumerate(order.tolist(), start=1)
    ]


def wilson_interval(hits: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """The Wilson score interval of a proportion (scipy's binomtest)."""
    from scipy.stats import binomtest  # scipy.stats loads in ~0.5 s: only for the bench's figures

    if n == 0:
        return (0.0, 1.0)
    ci = binomtest(hits, n).proportion_ci(confidence_level=confidence, method="wilson")
    return float(ci.low), float(ci.high)


def precision_at_k(
    index: WindowIndex, scores: Float32Array, texts: Mapping[str, str], *, k: int = 20
) -> list[PatternPrecision]:
    """For each pattern (column of scores, in `texts` order: pattern -> its text), the share of
    the k best-scored windows labelled with it, its Wilson 95% interval and the base rate."""
    labels = np.asarray(index.labels, dtype=object)
    out = []
    for column, (pattern, text) in enumerate(texts.items()):
        hits_rows = top_hits(index, scores[:, column], k)
        hits = sum(h.label == pattern for h in hits_rows)
        n = len(hits_rows)
        low, high = wilson_interval(hits, n)
        positives = int((labels == pattern).sum())
        out.append(
            PatternPrecision(
                pattern=pattern,
                text=text,
                k=n,
                hits=hits,
                precision=hits / n if n else math.nan,
                low=low,
                high=high,
                base_rate=positives / len(index) if len(index) else math.nan,
                positives=positives,
                windows=len(index),
            )
        )
    return out


def pattern_precision(
    engine: ChartEngine,
    index: WindowIndex,
    texts: Mapping[str, str],
    *,
    k: int = 20,
    tick: Callable[[int], object] | None = None,
) -> tuple[list[PatternPrecision], Float32Array]:
    """precision@k of each pattern's text (pattern -> text) over the windows, scored by the
    engine's CLIP; also the (windows, patterns) similarities, for other label sets."""
    scores = all_similarities(
        engine, index, text_embeddings(engine, list(texts.values())), tick=tick
    )
    return precision_at_k(index, scores, texts, k=k), scores


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None
