"""ChartWindow: the OHLCV arrays of one symbol's recent bars, the renderer's only input and the
strategy's window (strategy.bars.Window is this type: one window from the bar store to the chart)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import msgspec
import numpy as np
import numpy.typing as npt

from vlm_engine.render.errors import ChartInputError

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


class ChartWindow(msgspec.Struct, frozen=True, kw_only=True, eq=False):
    """Bars of one symbol, oldest first; timestamps are bar close times in epoch seconds (UTC)."""

    symbol: str
    bar_seconds: int
    timestamps: IntArray
    open: FloatArray
    high: FloatArray
    low: FloatArray
    close: FloatArray
    volume: FloatArray

    def __len__(self) -> int:
        return int(self.close.shape[0])

    @property
    def ts(self) -> datetime:
        """Close time of the last bar (UTC)."""
        return datetime.fromtimestamp(int(self.timestamps[-1]), tz=UTC)

    def tail(self, n: int) -> ChartWindow:
        """The last n bars (all of them when there are fewer)."""
        if n >= len(self):
            return self
        return ChartWindow(
            symbol=self.symbol,
            bar_seconds=self.bar_seconds,
            timestamps=self.timestamps[-n:],
            open=self.open[-n:],
            high=self.high[-n:],
            low=self.low[-n:],
            close=self.close[-n:],
            volume=self.volume[-n:],
        )

    def slice(self, start: int, stop: int) -> ChartWindow:
        return ChartWindow(
            symbol=self.symbol,
            bar_seconds=self.bar_seconds,
            timestamps=self.timestamps[start:stop],
            open=self.open[start:stop],
            high=self.high[start:stop],
            low=self.low[start:stop],
            close=self.close[start:stop],
            volume=self.volume[start:stop],
        )


def make_window(
    *,
    symbol: str,
    bar_seconds: int,
    timestamps: Sequence[int] | npt.ArrayLike,
    open: npt.ArrayLike,
    high: npt.ArrayLike,
    low: npt.ArrayLike,
    close: npt.ArrayLike,
    volume: npt.ArrayLike,
) -> ChartWindow:
    """Build and validate a window; bad input raises ChartInputError naming the symbol and bar."""
    arrays = {
        name: np.ascontiguousarray(np.asarray(values, dtype=np.float64))
        for name, values in (
            ("open", open),
            ("high", high),
            ("low", low),
            ("close", close),
            ("volume", volume),
        )
    }
    times = np.ascontiguousarray(np.asarray(timestamps, dtype=np.int64))
    window = ChartWindow(symbol=symbol, bar_seconds=bar_seconds, timestamps=times, **arrays)
    validate_window(window)
    return window


def validate_window(window: ChartWindow) -> None:
    """Raise ChartInputError on empty, ragged, non-finite, inverted or out-of-order bars."""
    where = f"window {window.symbol!r}"
    n = len(window)
    if n == 0:
        msg = f"{where}: no bars"
        raise ChartInputError(msg)
    if window.bar_seconds <= 0:
        msg = f"{where}: bar_seconds must be > 0, got {window.bar_seconds}"
        raise ChartInputError(msg)
    for name in ("timestamps", "open", "high", "low", "close", "volume"):
        arr = getattr(window, name)
        if arr.ndim != 1 or arr.shape[0] != n:
            msg = f"{where}: column {name} has shape {arr.shape}, expected ({n},)"
            raise ChartInputError(msg)
    ohlcv = np.stack([window.open, window.high, window.low, window.close, window.volume])
    bad = ~np.isfinite(ohlcv).all(axis=0)
    if bad.any():
        msg = f"{where}: non-finite value at bar {int(np.argmax(bad))}"
        raise ChartInputError(msg)
    inverted = (window.high < np.maximum(window.open, window.close)) | (
        window.low > np.minimum(window.open, window.close)
    )
    if inverted.any():
        msg = f"{where}: high/low do not bracket open/close at bar {int(np.argmax(inverted))}"
        raise ChartInputError(msg)
    if (window.low <= 0).any():
        msg = f"{where}: non-positive price at bar {int(np.argmax(window.low <= 0))}"
        raise ChartInputError(msg)
    if (window.volume < 0).any():
        msg = f"{where}: negative volume at bar {int(np.argmax(window.volume < 0))}"
        raise ChartInputError(msg)
    if n > 1 and (np.diff(window.timestamps) <= 0).any():
        msg = f"{where}: timestamps not strictly increasing at bar {int(np.argmax(np.diff(window.timestamps) <= 0)) + 1}"
        raise ChartInputError(msg)
