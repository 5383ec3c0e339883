"""The patterns the simulated market plants: their names, the TA-Lib function that detects each,
their direction, and the shape each is drawn with (strategy/market_sim.py sizes and places them).

| pattern | TA-Lib | dir | shape (after a short counter-move of 2-3 bars) |
| --- | --- | --- | --- |
| bullish_engulfing | CDLENGULFING | +1 | black bar, then a white body opening below its close, closing above its open |
| bearish_engulfing | CDLENGULFING | -1 | mirror image of bullish_engulfing |
| hammer | CDLHAMMER | +1 | small body gapping below the prior low, lower shadow 2-3x the average body, almost no upper shadow |
| shooting_star | CDLSHOOTINGSTAR | -1 | small body gapping above the prior body, long upper shadow, almost no lower shadow |
| morning_star | CDLMORNINGSTAR | +1 | long black body, small body gapping below it, white body closing deep into the first |
| evening_star | CDLEVENINGSTAR | -1 | mirror image of morning_star |
| three_white_soldiers | CDL3WHITESOLDIERS | +1 | three long white bodies, each opening inside the previous one, tiny upper shadows |
| three_black_crows | CDL3BLACKCROWS | -1 | after a white bar, three long black bodies, each opening inside the previous one |
| double_bottom (opt-in) | none | +1 | a W over 11 bars: decline, bounce, retest of the low, rise through the middle |
| double_top (opt-in) | none | -1 | mirror image of double_bottom |
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final, Literal, get_args

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]

PatternName = Literal[
    "bullish_engulfing",
    "bearish_engulfing",
    "hammer",
    "shooting_star",
    "morning_star",
    "evening_star",
    "three_white_soldiers",
    "three_black_crows",
    "double_bottom",
    "double_top",
]
# Chart shapes no TA-Lib candlestick function names: opt in with `patterns`. They test what the
# chart adds beyond the candle patterns the technical features flag.
CHART_SHAPES: Final[tuple[PatternName, ...]] = ("double_bottom", "double_top")
# The candlestick patterns (the default): every name of the Literal but the chart shapes.
ALL_PATTERNS: Final[tuple[PatternName, ...]] = tuple(
    p for p in get_args(PatternName) if p not in CHART_SHAPES
)
PATTERN_TALIB: Final[dict[PatternName, str]] = {
    "bullish_engulfing": "CDLENGULFING",
    "bearish_engulfing": "CDLENGULFING",
    "hammer": "CDLHAMMER",
    "shooting_star": "CDLSHOOTINGSTAR",
    "morning_star": "CDLMORNINGSTAR",
    "evening_star": "CDLEVENINGSTAR",
    "three_white_soldiers": "CDL3WHITESOLDIERS",
    "three_black_crows": "CDL3BLACKCROWS",
}
PATTERN_DIRECTION: Final[dict[PatternName, int]] = {
    "bullish_engulfing": 1,
    "bearish_engulfing": -1,
    "hammer": 1,
    "shooting_star": -1,
    "morning_star": 1,
    "evening_star": -1,
    "three_white_soldiers": 1,
    "three_black_crows": -1,
    "double_bottom": 1,
    "double_top": -1,
}

# ---- pattern shapes -------------------------------------------------------------------------
# A shape is (gap, body, upper wick, lower wick, volume factor) per bar, in log-price units:
# open = previous close * exp(gap), close = open * exp(body), high = max(open, close) * exp(upper).
_Shape = tuple[list[float], list[float], list[float], list[float], list[float]]
_Builder = Callable[[float, float, FloatArray], _Shape]


def _jit(q: float, low: float, high: float) -> float:
    return low + (high - low) * q


def _engulfing(b: float, h: float, q: FloatArray) -> _Shape:
    lead = [-b * _jit(q[0], 0.7, 1.1), -b * _jit(q[1], 0.7, 1.1)]
    black = -b * _jit(q[2], 0.9, 1.3)
    gap = -b * _jit(q[3], 0.02, 0.12)
    white = -black - gap + b * _jit(q[4], 0.3, 0.8)
    return (
        [0.0, 0.0, 0.0, gap],
        [*lead, black, white],
        [0.4 * b, 0.3 * b, 0.3 * b, 0.2 * b],
        [0.3 * b, 0.3 * b, 0.2 * b, 0.2 * b],
        [1.0, 1.0, 1.2, 2.0],
    )


def _hammer(b: float, h: float, q: FloatArray) -> _Shape:
    lead = [-b * _jit(q[i], 0.8, 1.2) for i in range(3)]
    return (
        [0.0, 0.0, 0.0, -b * _jit(q[3], 0.4, 0.55)],
        [*lead, b * _jit(q[4], 0.1, 0.35)],
        [0.3 * b, 0.3 * b, 0.3 * b, 0.02 * h * q[5]],
        [0.2 * b, 0.2 * b, 0.05 * b, b * _jit(q[6], 2.0, 3.0)],
        [1.0, 1.0, 1.0, 2.0],
    )


def _morning_star(b: float, h: float, q: FloatArray) -> _Shape:
    star = b * _jit(q[3], 0.05, 0.25) * (1.0 if q[4] < 0.5 else -1.0)
    return (
        [0.0, 0.0, 0.0, -b * _jit(q[5], 0.3, 0.5), b * _jit(q[6], 0.0, 0.1)],
        [
            -b * _jit(q[0], 0.7, 1.0),
            -b * _jit(q[1], 0.7, 1.0),
            -b * _jit(q[2], 2.2, 3.0),
            star,
            b * _jit(q[7], 1.8, 2.4),
        ],
        [0.3 * b, 0.3 * b, 0.2 * b, 0.3 * b, 0.2 * b],
        [0.3 * b, 0.3 * b, 0.2 * b, 0.3 * b, 0.2 * b],
        [1.0, 1.0, 1.5, 1.0, 2.0],
    )


def _three_white_soldiers(b: float, h: float, q: FloatArray) -> _Shape:
    bodies = [b * _jit(q[2], 1.4, 1.8) * f for f in (1.0, 1.05, 1.1)]
    return (
        [0.0, 0.0, 0.0, -bodies[0] * _jit(q[3], 0.05, 0.3), -bodies[1] * _jit(q[4], 0.05, 0.3)],
        [-b * _jit(q[0], 0.7, 1.0), -b * _jit(q[1], 0.7, 1.0), *bodies],
        [0.3 * b, 0.3 * b, 0.02 * h * q[5], 0.02 * h * q[6], 0.02 * h * q[7]],
        [0.3 * b, 0.3 * b, 0.2 * b, 0.2 * b, 0.2 * b],
        [1.0, 1.0, 1.3, 1.5, 2.0],
    )


def _double_bottom(b: float, h: float, q: FloatArray) -> _Shape:
    """A W over 11 bars: a decline, a bounce, a second decline to the same low, a rise through
    the middle. Bodies alternate in size and the rise mixes a doji in, so no candlestick
    function sees a pattern on the signal bar; only the shape of the path tells."""
    down = [-b * _jit(q[0], 1.0, 1.3), -b * _jit(q[1], 1.2, 1.6), -b * _jit(q[2], 0.9, 1.2)]
    bounce = [b * _jit(q[3], 1.3, 1.7), b * _jit(q[4], 1.1, 1.5)]
    retest = [-bounce[0] * 0.95, -bounce[1] * 0.95]
    rise = [b * _jit(q[5], 1.0, 1.4), b * 0.05, b * _jit(q[6], 1.2, 1.6), b * _jit(q[7], 0.5, 0.8)]
    bodies = [*down, *bounce, *retest, *rise]
    return (
        [0.0] * len(bodies),
        bodies,
        [0.4 * b] * len(bodies),
        [0.4 * b] * len(bodies),
        [1.0, 1.1, 1.2, 1.0, 1.0, 1.1, 1.2, 1.0, 1.0, 1.3, 1.5],
    )


def _mirror(builder: _Builder) -> _Builder:
    """The bearish twin of a bullish shape: gaps and bodies negated, wicks swapped."""

    def build(b: float, h: float, q: FloatArray) -> _Shape:
        gaps, bodies, upper, lower, volume = builder(b, h, q)
        return [-x for x in gaps], [-x for x in bodies], lower, upper, volume

    return build


BUILDERS: Final[dict[PatternName, _Builder]] = {
    "bullish_engulfing": _engulfing,
    "bearish_engulfing": _mirror(_engulfing),
    "hammer": _hammer,
    "shooting_star": _mirror(_hammer),
    "morning_star": _morning_star,
    "evening_star": _mirror(_morning_star),
    "three_white_soldiers": _three_white_soldiers,
    "three_black_crows": _mirror(_three_white_soldiers),
    "double_bottom": _double_bottom,
    "double_top": _mirror(_double_bottom),
}
SPAN: Final[dict[PatternName, int]] = {
    "bullish_engulfing": 4,
    "bearish_engulfing": 4,
    "hammer": 4,
    "shooting_star": 4,
    "morning_star": 5,
    "evening_star": 5,
    "three_white_soldiers": 5,
    "three_black_crows": 5,
    "double_bottom": 11,
    "double_top": 11,
}
SHAPE_DRAWS = 8
