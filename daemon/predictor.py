"""POST /predict: score one OHLCV window with whatever scorer the daemon is running now."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Protocol

from daemon.api.app import ChartPrediction
from daemon.errors import InputError
from strategy.bars import BarStore, BarStoreConfig, Window
from strategy.scoring import Scorer
from strategy.types import Bar, Signal

MIN_BARS = 8


def build_window(symbol: str, bars: Sequence[Bar], *, bar_seconds: int, min_bars: int) -> Window:
    """One window through BarStore's own checks; InputError names the first bad bar."""
    if len(bars) < min_bars:
        msg = f"bars: {len(bars)} bars given, the model needs at least {min_bars}"
        raise InputError(msg)
    store = BarStore(
        config=BarStoreConfig(window=len(bars), bar_seconds=bar_seconds, gap_policy="accept")
    )
    for i, bar in enumerate(bars):
        problem = store.add(bar)
        if problem is not None:
            msg = f"bars[{i}]: {problem.reason}: {problem.detail}"
            raise InputError(msg)
    window = store.window(symbol)
    if window is None:  # pragma: no cover - a full store always has a window
        msg = "bars: window incomplete"
        raise InputError(msg)
    return window


class ScorerSource(Protocol):
    @property
    def current(self) -> Scorer: ...

    @property
    def bundle_id(self) -> str | None: ...


class ScorerPredictor:
    """Builds a window through BarStore's own checks, then scores it off the event loop if needed."""

    def __init__(
        self, *, scorers: ScorerSource, bar_seconds: int, lock: asyncio.Lock | None = None
    ) -> None:
        self.scorers = scorers
        self.bar_seconds = bar_seconds
        self.lock = lock if lock is not None else asyncio.Lock()  # shared with the pipeline

    async def predict(self, symbol: str, bars: Sequence[Bar]) -> Signal:
        window = build_window(symbol, bars, bar_seconds=self.bar_seconds, min_bars=MIN_BARS)
        scorer = self.scorers.current
        if scorer.blocking:
            async with self.lock:
                signals = await asyncio.to_thread(scorer.score, [window])
        else:
            signals = scorer.score([window])
        return signals[0]

    async def predict_chart(self, png: bytes) -> ChartPrediction:
        """Score a chart PNG with the running bundle's CLIP model (refused while rules serve)."""
        from daemon.serve import ServedModel, decode_chart, score_charts
        from strategy.clip_scorer import ClipScorerConfig

        scorer = self.scorers.current
        server = getattr(getattr(scorer, "vision", None), "server", None)
        model = ServedModel(
            scorer=scorer,
            bar_seconds=self.bar_seconds,
            min_bars=MIN_BARS,
            bundle_id=self.scorers.bundle_id,
            server=server,
        )
        pixels, meta = await asyncio.to_thread(decode_chart, model, png)
        async with self.lock:
            scored = await asyncio.to_thread(
                score_charts, model, [(pixels, meta)], ClipScorerConfig()
            )
        return scored[0]
