"""BarStore windows against a plain model of the store: the last n accepted bars since the last reset.

The model is what the copying ring (before windows became views into append-only chunks)
returned; this file passes against both. Windows handed out earlier must keep their values.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from strategy.bars import BarStore, BarStoreConfig, Window
from strategy.types import Bar

T0 = datetime(2024, 3, 1, 14, 30, tzinfo=UTC)
STEP = 60


def _columns(w: Window) -> list[list[float]]:
    return [a.tolist() for a in (w.timestamps, w.open, w.high, w.low, w.close, w.volume)]


def _model_columns(bars: list[Bar]) -> list[list[float]]:
    return [
        [int(b.ts.timestamp()) for b in bars],
        [b.open for b in bars],
        [b.high for b in bars],
        [b.low for b in bars],
        [b.close for b in bars],
        [b.volume for b in bars],
    ]


def _random_bars(rng: random.Random, symbols: list[str], steps: int) -> list[Bar]:
    """Interleaved symbols with gaps (some past max_gap_bars), repeats and the odd bad bar."""
    out: list[Bar] = []
    clock = dict.fromkeys(symbols, 0)
    price = dict.fromkeys(symbols, 100.0)
    for _ in range(steps):
        s = rng.choice(symbols)
        roll = rng.random()
        clock[s] += 12 if roll > 0.9985 else (3 if roll > 0.97 else 1)  # 12: a reset gap
        if rng.random() < 0.005:
            clock[s] -= 1  # a repeated timestamp: rejected as duplicate_ts
        bad = rng.random() < 0.01  # high below the body: rejected
        price[s] *= 1.0 + rng.uniform(-0.01, 0.01)
        p = price[s]
        high = p * 0.5 if bad else p * 1.002
        out.append(
            Bar(symbol=s, ts=T0 + timedelta(seconds=STEP * clock[s]), open=p, high=high,
                low=p * 0.998, close=p * (1 + rng.uniform(-0.001, 0.001)),
                volume=float(rng.randint(0, 10_000)))
        )  # fmt: skip
    return out


@pytest.mark.parametrize("window", [8, 30, 300])
def test_window_when_bars_stream_then_equals_model_and_earlier_windows_never_change(
    window: int,
) -> None:
    rng = random.Random(window)
    symbols = ["A", "B", "C"]
    store = BarStore(config=BarStoreConfig(window=window, bar_seconds=STEP, max_jump_atr=0.0))
    model: dict[str, list[Bar]] = {s: [] for s in symbols}
    kept: list[tuple[Window, list[list[float]]]] = []
    compared = 0
    bars = _random_bars(rng, symbols, 6 * window + 2_000)
    for i, bar in enumerate(bars):
        rejected = store.add(bar)
        for reset in store.pop_resets():
            model[reset.symbol] = []
        if rejected is None:
            model[bar.symbol].append(bar)
        expected = model[bar.symbol][-window:]
        got = store.window(bar.symbol)
        if len(expected) < window:
            assert got is None
            continue
        assert got is not None
        columns = _columns(got)
        assert columns == _model_columns(expected)
        assert got.symbol == bar.symbol
        assert got.ts == expected[-1].ts
        compared += 1
        if i % 97 == 0:
            kept.append((got, columns))
    assert compared > len(bars) // 3
    assert len(kept) > 10
    for w, columns in kept:  # later bars (and new chunks) left every earlier window as it was
        assert _columns(w) == columns
        for array in (w.timestamps, w.open, w.high, w.low, w.close, w.volume):
            assert not array.flags.writeable
            assert array.dtype == (np.int64 if array is w.timestamps else np.float64)
            assert array.flags.c_contiguous
