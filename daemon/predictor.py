"""POST /predict: score one OHLCV window with whatever scorer the daemon is running now."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Protocol

from daemon.errors import InputError
from strategy.bars import BarStore, BarStoreConfig
from strategy.scoring import Scorer
from strategy.types import Bar, Signal

MIN_BARS = 8


class ScorerSource(Protocol):
    @property
    def current(self) -> Scorer: ...


class ScorerPredictor:
    """Builds a window through BarStore's own checks, then scores it off the event loop if needed."""

    def __init__(self, *, scorers: ScorerSource, bar_seconds: int) -> None:
        self.scorers = scorers
        self.bar_seconds = bar_seconds

    async def predict(self, symbol: str, bars: Sequence[Bar]) -> Signal:
        if len(bars) < MIN_BARS:
            msg = f"bars: {len(bars)} bars given, at least {MIN_BARS} needed"
            raise InputError(msg)
        store = BarStore(
            config=BarStoreConfig(
                window=len(bars), bar_seconds=self.bar_seconds, gap_policy="accept"
            )
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
        scorer = self.scorers.current
        if scorer.blocking:
            signals = await asyncio.to_thread(scorer.score, [window])
        else:
            signals = scorer.score([window])
        return signals[0]
