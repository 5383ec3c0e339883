"""Synthetic bars for vlm_engine tests: random walks and hand-built candle sequences."""

from __future__ import annotations

import numpy as np
import pandas as pd

from vlm_engine.render import ChartWindow, make_window

T0 = 1_700_000_000


def random_ohlcv(
    n: int, *, seed: int = 0, start: float = 100.0, vol: float = 0.01
) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    close = start * np.exp(np.cumsum(rng.normal(0.0, vol, n)))
    open_ = np.r_[start, close[:-1]]
    high = np.maximum(open_, close) * (1 + rng.uniform(0, vol / 2, n))
    low = np.minimum(open_, close) * (1 - rng.uniform(0, vol / 2, n))
    volume = rng.uniform(100, 1000, n)
    return {"open": open_, "high": high, "low": low, "close": close, "volume": volume}


def random_window(
    n: int = 120, *, seed: int = 0, symbol: str = "SIMA", bar_seconds: int = 60
) -> ChartWindow:
    return make_window(
        symbol=symbol,
        bar_seconds=bar_seconds,
        timestamps=T0 + np.arange(n) * bar_seconds,
        **random_ohlcv(n, seed=seed),
    )


def bars_frame(
    symbols: tuple[str, ...] = ("SIMA", "SIMB"), n: int = 400, *, bar_seconds: int = 60
) -> pd.DataFrame:
    frames = []
    for i, symbol in enumerate(symbols):
        data = random_ohlcv(n, seed=100 + i)
        frame = pd.DataFrame(data)
        frame.insert(0, "ts", pd.to_datetime(T0 + np.arange(n) * bar_seconds, unit="s", utc=True))
        frame.insert(0, "symbol", symbol)
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def candles(rows: list[tuple[float, float, float, float]], *, volume: float = 500.0) -> ChartWindow:
    """A window from (open, high, low, close) tuples."""
    arr = np.array(rows, dtype=np.float64)
    n = len(rows)
    return make_window(
        symbol="HAND",
        bar_seconds=60,
        timestamps=T0 + np.arange(n) * 60,
        open=arr[:, 0],
        high=arr[:, 1],
        low=arr[:, 2],
        close=arr[:, 3],
        volume=np.full(n, volume),
    )
