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
    close = bars.close
    shown = min(spec.window, len(bars))

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
