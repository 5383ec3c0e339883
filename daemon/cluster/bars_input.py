"""Bars read by the workers themselves from a path every node sees (a shared directory).

The driver passes `BarsAt(path)` instead of the bars; a worker loads them once per process
(cached by path and modification time) with the same loader as the local run, so a task on
another machine sees exactly the rows the driver would have sent.
"""

from __future__ import annotations

import bisect
import functools
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import msgspec

from strategy.bars import BarStore, BarStoreConfig, Window
from strategy.types import Bar


class BarsAt(msgspec.Struct, frozen=True, kw_only=True):
    """All the bars at `path` as stream batches (frame_batches), loaded where the task runs."""

    path: str

    def stamp(self) -> float:
        p = Path(self.path)
        files = [p] if p.is_file() else sorted(p.rglob("*"))
        return max((f.stat().st_mtime for f in files if f.is_file()), default=0.0)


@functools.lru_cache(maxsize=2)
def _batches(path: str, stamp: float) -> list[list[Bar]]:
    from strategy.backtest.data import frame_batches
    from vlm_engine.dataset.bars import load_bars

    del stamp  # part of the cache key only: a rewritten file is read again
    return frame_batches(load_bars(Path(path)))


@functools.lru_cache(maxsize=4)
def _symbol_bars(path: str, stamp: float, symbol: str) -> list[Bar]:
    from strategy.backtest.data import frame_batches
    from vlm_engine.dataset.bars import load_bars

    del stamp
    own = Path(path) / symbol  # `vlmtrader ib history` layout: SYMBOL/YYYY-MM-DD.parquet
    frame = load_bars(own if own.is_dir() else Path(path))
    frame = frame[frame["symbol"].astype(str) == symbol]
    return [bar for batch in frame_batches(frame) for bar in batch]


class ChartWindowsAt(msgspec.Struct, frozen=True, kw_only=True):
    """All the bars at `path` as one ChartWindow per symbol (vlm_engine.dataset.bars.symbol_windows
    of the normalised bars: what `dataset build` renders from), loaded where the task runs."""

    path: str

    def stamp(self) -> float:
        return BarsAt(path=self.path).stamp()


@functools.lru_cache(maxsize=2)
def _chart_windows(path: str, stamp: float) -> dict[str, Any]:
    from vlm_engine.dataset.bars import load_bars, normalize_bars
    from vlm_engine.dataset.bars import symbol_windows as chart_windows

    del stamp
    return chart_windows(normalize_bars(load_bars(Path(path))))


def load_batches(source: BarsAt) -> list[list[Bar]]:
    """Every bar at the path, in stream batches (as the driver's run builds them)."""
    return _batches(source.path, source.stamp())


def symbol_windows(
    source: BarsAt, symbol: str, store: BarStoreConfig, *, start: int, stop: int
) -> list[Window]:
    """The windows the live BarStore builds for `symbol` whose last bar closes in [start, stop)
    (epoch s). The symbol's bars are replayed from its first: a window depends only on its own
    symbol's earlier bars (BarStore keeps one ring per symbol)."""
    bars_store = BarStore(config=store)
    out: list[Window] = []
    bars = _symbol_bars(source.path, source.stamp(), symbol)
    # The bars before start only fill the ring: stored in one batch call (same state as one by one).
    first = bisect.bisect_left(bars, start, key=lambda b: int(b.ts.timestamp()))
    bars_store.add_batch(bars[:first])
    for bar in bars[first:]:
        if bars_store.add(bar) is None:
            ts = int(bar.ts.timestamp())
            if start <= ts < stop:
                window = bars_store.window(symbol)
                if window is not None:
                    out.append(window)
            elif ts >= stop:
                break
    return out


PathInput = BarsAt | ChartWindowsAt


def load_input(source: PathInput) -> Any:
    """What a path-backed input stands for: stream batches (BarsAt) or chart windows."""
    if isinstance(source, BarsAt):
        return load_batches(source)
    return _chart_windows(source.path, source.stamp())


def resolve_inputs(shared: Mapping[str, Any]) -> dict[str, Any]:
    """A task's shared inputs with every BarsAt / ChartWindowsAt replaced by what it stands for."""
    return {
        k: load_input(v) if isinstance(v, BarsAt | ChartWindowsAt) else v for k, v in shared.items()
    }
