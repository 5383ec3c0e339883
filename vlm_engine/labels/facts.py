"""ChartFacts: what a chart shows (patterns plus context), computed from its bars with TA-Lib."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
import numpy as np
import talib

from vlm_engine.labels.patterns import BY_NAME, PatternHit, detect_patterns
from vlm_engine.render.window import ChartWindow, validate_window

Trend = Literal["up", "down", "sideways"]
Level = Literal["heavy", "average", "light"]
RsiZone = Literal["oversold", "neutral", "overbought"]
Cross = Literal["bullish", "bearish", "none"]
BandPosition = Literal["above_upper", "upper_half", "lower_half", "below_lower", "unknown"]
Regime = Literal["high", "normal", "low"]


class FactsConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Thresholds of the context detectors."""

    recent_bars: Annotated[int, msgspec.Meta(ge=1, le=10)] = 3
    trend_bars: Annotated[int, msgspec.Meta(ge=5)] = 20
    trend_z: Annotated[float, msgspec.Meta(gt=0)] = 1.0
    volume_bars: Annotated[int, msgspec.Meta(ge=2)] = 20
    heavy_volume: Annotated[float, msgspec.Meta(gt=1)] = 1.5
    light_volume: Annotated[float, msgspec.Meta(gt=0, lt=1)] = 0.67
    rsi_period: Annotated[int, msgspec.Meta(ge=2)] = 14
    rsi_low: float = 30.0
    rsi_high: float = 70.0
    cross_bars: Annotated[int, msgspec.Meta(ge=1)] = 3
    bollinger_period: Annotated[int, msgspec.Meta(ge=2)] = 20
    squeeze_quantile: Annotated[float, msgspec.Meta(gt=0, lt=1)] = 0.2
    atr_period: Annotated[int, msgspec.Meta(ge=2)] = 14
    high_volatility: Annotated[float, msgspec.Meta(gt=1)] = 1.5
    low_volatility: Annotated[float, msgspec.Meta(gt=0, lt=1)] = 0.67


class ChartFacts(msgspec.Struct, frozen=True, kw_only=True):
    """Patterns and context at the window's last bar.

    prior_run: signed count of same-direction closes ending just before the most recent
    pattern (or before the last bar), e.g. -3 = three falling closes.
    """

    symbol: str
    ts: int
    bar_seconds: int
    patterns: tuple[PatternHit, ...]
    trend: Trend
    trend_strength: float
    prior_run: int
    volume_ratio: float
    volume_level: Level
    rsi: float
    rsi_zone: RsiZone
    macd_cross: Cross
    bollinger_position: BandPosition
    bollinger_squeeze: bool
    volatility_regime: Regime

    @property
    def pattern_names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.patterns)


def _last(values: np.ndarray) -> float:
    v = float(values[-1]) if values.size else float("nan")
    return v


def chart_facts(window: ChartWindow, *, config: FactsConfig | None = None) -> ChartFacts:
    """Detect patterns on the last bars and describe the context from the whole window."""
    cfg = config or FactsConfig()
    validate_window(window)
    h, lo, c, v = window.high, window.low, window.close, window.volume
    n = len(window)
    patterns = detect_patterns(window, recent_bars=cfg.recent_bars)

    trend, strength = _trend(c, cfg)
    # the run of closes that ends where the most recent pattern starts (or at the last bar)
    stop = n
    if patterns:
        stop = n - patterns[0].bars_ago - BY_NAME[patterns[0].name].bars
    prior_run = _run(c[: max(stop, 0)])

    vol_avg = float(np.mean(v[-cfg.volume_bars - 1 : -1])) if n > 1 else float(v[-1])
    ratio = float(v[-1] / vol_avg) if vol_avg > 0 else 1.0
    level: Level = (
        "heavy"
        if ratio >= cfg.heavy_volume
        else "light"
        if ratio <= cfg.light_volume
        else "average"
    )

    rsi = _last(talib.RSI(c, timeperiod=cfg.rsi_period)) if n > cfg.rsi_period else float("nan")
    zone: RsiZone = "neutral"
    if np.isfinite(rsi):
        zone = (
            "oversold" if rsi <= cfg.rsi_low else "overbought" if rsi >= cfg.rsi_high else "neutral"
        )

    _, _, hist = talib.MACD(c)
    cross: Cross = "none"
    recent = hist[-cfg.cross_bars - 1 :]
    recent = recent[np.isfinite(recent)]
    if recent.size >= 2:
        signs = np.sign(recent)
        if (np.diff(signs) > 0).any() and signs[-1] > 0:
            cross = "bullish"
        elif (np.diff(signs) < 0).any() and signs[-1] < 0:
            cross = "bearish"

    upper, middle, lower = talib.BBANDS(c, timeperiod=cfg.bollinger_period)
    position: BandPosition = "unknown"
    squeeze = False
    if np.isfinite(upper[-1]):
        last = c[-1]
        position = (
            "above_upper"
            if last > upper[-1]
            else "below_lower"
            if last < lower[-1]
            else "upper_half"
            if last >= middle[-1]
            else "lower_half"
        )
        width = (upper - lower) / middle
        width = width[np.isfinite(width)]
        if width.size >= cfg.bollinger_period:
            squeeze = bool(width[-1] <= np.quantile(width, cfg.squeeze_quantile))

    atr = talib.ATR(h, lo, c, timeperiod=cfg.atr_period) / c
    atr = atr[np.isfinite(atr)]
    regime: Regime = "normal"
    if atr.size >= 2:
        rel = float(atr[-1] / np.median(atr)) if np.median(atr) > 0 else 1.0
        regime = (
            "high"
            if rel >= cfg.high_volatility
            else "low"
            if rel <= cfg.low_volatility
            else "normal"
        )
    return ChartFacts(
        symbol=window.symbol,
        ts=int(window.timestamps[-1]),
        bar_seconds=window.bar_seconds,
        patterns=patterns,
        trend=trend,
        trend_strength=float(strength),
        prior_run=prior_run,
        volume_ratio=float(round(ratio, 4)),
        volume_level=level,
        rsi=float(round(rsi, 4)) if np.isfinite(rsi) else 50.0,
        rsi_zone=zone,
        macd_cross=cross,
        bollinger_position=position,
        bollinger_squeeze=squeeze,
        volatility_regime=regime,
    )


def _trend(close: np.ndarray, cfg: FactsConfig) -> tuple[Trend, float]:
    """Least-squares slope of log close over trend_bars, as a z-score against bar volatility."""
    logc = np.log(close[-cfg.trend_bars :])
    m = logc.size
    if m < 3:
        return "sideways", 0.0
    x = np.arange(m, dtype=np.float64)
    slope = float(np.polyfit(x, logc, 1)[0])
    noise = float(np.std(np.diff(logc))) or 1e-12
    z = slope * m / (noise * np.sqrt(m))
    strength = float(round(min(abs(z) / (3.0 * cfg.trend_z), 1.0), 4))
    if z >= cfg.trend_z:
        return "up", strength
    if z <= -cfg.trend_z:
        return "down", strength
    return "sideways", strength


def _run(close: np.ndarray) -> int:
    """Signed length of the last run of same-direction closes (+3 = three rising closes)."""
    if close.size < 2:
        return 0
    steps = np.sign(np.diff(close))
    last = steps[-1]
    if last == 0:
        return 0
    count = 0
    for s in steps[::-1]:
        if s != last:
            break
        count += 1
    return int(count * last)
