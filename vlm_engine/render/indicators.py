"""The chart's indicator lines, computed with TA-Lib on the bars the spec allows (window + warmup)."""

from __future__ import annotations

import msgspec
import numpy as np
import numpy.typing as npt
import talib
from talib import MA_Type  # type: ignore[attr-defined]

from vlm_engine.render.spec import ChartSpec
from vlm_engine.render.window import ChartWindow

FloatArray = npt.NDArray[np.float64]


class ChartLines(msgspec.Struct, frozen=True, kw_only=True):
    """Indicator arrays aligned with the shown bars (NaN where TA-Lib has no value yet)."""

    sma: tuple[FloatArray, ...] = ()
    bollinger_upper: FloatArray | None = None
    bollinger_middle: FloatArray | None = None
    bollinger_lower: FloatArray | None = None
    rsi: FloatArray | None = None
    macd: FloatArray | None = None
    macd_signal: FloatArray | None = None
    macd_hist: FloatArray | None = None


def compute_lines(spec: ChartSpec, window: ChartWindow) -> ChartLines:
    """Indicators over the last bars_needed bars, cut to the last `window` bars."""
    bars = window.tail(spec.bars_needed)
    return _lines(spec, np.ascontiguousarray(bars.close), min(spec.window, len(bars)))


def compute_lines_batch(spec: ChartSpec, close: FloatArray) -> ChartLines:
    """compute_lines for a (B, n) stack of close series (the last bars_needed bars each): (B, shown) arrays.

    TA-Lib works on one series at a time, so this calls it per row; values are identical to
    compute_lines on each window.
    """
    close = close[:, -spec.bars_needed :]
    shown = min(spec.window, close.shape[1])
    if not (spec.sma or spec.bollinger or spec.rsi or spec.macd):
        # no line asked for: the per-row loop below would build and stack B empty ChartLines
        return ChartLines()
    rows = [_lines(spec, np.ascontiguousarray(row), shown) for row in close]

    def stack(values: list[FloatArray | None]) -> FloatArray | None:
        if values and values[0] is None:
            return None
        arrays = [v for v in values if v is not None]
        out: FloatArray = np.stack(arrays) if arrays else np.empty((0, shown))
        return out

    def field(name: str) -> FloatArray | None:
        return stack([getattr(r, name) for r in rows])

    return ChartLines(
        sma=tuple(
            np.stack([r.sma[k] for r in rows]) if rows else np.empty((0, shown))
            for k in range(len(spec.sma))
        ),
        bollinger_upper=field("bollinger_upper"),
        bollinger_middle=field("bollinger_middle"),
        bollinger_lower=field("bollinger_lower"),
        rsi=field("rsi"),
        macd=field("macd"),
        macd_signal=field("macd_signal"),
        macd_hist=field("macd_hist"),
    )


def _lines(spec: ChartSpec, close: FloatArray, shown: int) -> ChartLines:
    """Every indicator the spec asks for over one close series, cut to its last `shown` values."""

    def cut(values: FloatArray) -> FloatArray:
        return np.ascontiguousarray(values[-shown:])

    sma = tuple(cut(talib.SMA(close, timeperiod=p)) for p in spec.sma)
    upper = middle = lower = rsi = macd = signal = hist = None
    if spec.bollinger:
        u, m, lo = talib.BBANDS(
            close,
            timeperiod=spec.bollinger_period,
            nbdevup=spec.bollinger_std,
            nbdevdn=spec.bollinger_std,
            matype=MA_Type.SMA,
        )
        upper, middle, lower = cut(u), cut(m), cut(lo)
    if spec.rsi:
        rsi = cut(talib.RSI(close, timeperiod=spec.rsi_period))
    if spec.macd:
        mc, sg, hs = talib.MACD(
            close,
            fastperiod=spec.macd_fast,
            slowperiod=spec.macd_slow,
            signalperiod=spec.macd_signal,
        )
        macd, signal, hist = cut(mc), cut(sg), cut(hs)
    return ChartLines(
        sma=sma,
        bollinger_upper=upper,
        bollinger_middle=middle,
        bollinger_lower=lower,
        rsi=rsi,
        macd=macd,
        macd_signal=signal,
        macd_hist=hist,
    )
