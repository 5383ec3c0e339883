"""Candlestick pattern detection with TA-Lib's CDL functions, as named hits with direction and strength."""

from __future__ import annotations

from typing import Final, Literal

import msgspec
import numpy as np
import talib

from vlm_engine.render.window import ChartWindow

Direction = Literal[1, 0, -1]


class PatternDef(msgspec.Struct, frozen=True, kw_only=True):
    """One named pattern: the TA-Lib function and the sign of its output that means this pattern."""

    name: str
    function: str
    sign: int
    direction: int
    bars: int
    reversal: bool = True


PATTERNS: Final[tuple[PatternDef, ...]] = (
    PatternDef(name="bullish_engulfing", function="CDLENGULFING", sign=1, direction=1, bars=2),
    PatternDef(name="bearish_engulfing", function="CDLENGULFING", sign=-1, direction=-1, bars=2),
    PatternDef(name="hammer", function="CDLHAMMER", sign=1, direction=1, bars=1),
    PatternDef(name="inverted_hammer", function="CDLINVERTEDHAMMER", sign=1, direction=1, bars=1),
    PatternDef(name="hanging_man", function="CDLHANGINGMAN", sign=-1, direction=-1, bars=1),
    PatternDef(name="shooting_star", function="CDLSHOOTINGSTAR", sign=-1, direction=-1, bars=1),
    PatternDef(name="doji", function="CDLDOJI", sign=1, direction=0, bars=1, reversal=False),
    PatternDef(name="dragonfly_doji", function="CDLDRAGONFLYDOJI", sign=1, direction=1, bars=1),
    PatternDef(name="gravestone_doji", function="CDLGRAVESTONEDOJI", sign=1, direction=-1, bars=1),
    PatternDef(name="morning_star", function="CDLMORNINGSTAR", sign=1, direction=1, bars=3),
    PatternDef(name="evening_star", function="CDLEVENINGSTAR", sign=-1, direction=-1, bars=3),
    PatternDef(
        name="three_white_soldiers", function="CDL3WHITESOLDIERS", sign=1, direction=1, bars=3
    ),
    PatternDef(name="three_black_crows", function="CDL3BLACKCROWS", sign=-1, direction=-1, bars=3),
    PatternDef(name="piercing_line", function="CDLPIERCING", sign=1, direction=1, bars=2),
    PatternDef(
        name="dark_cloud_cover", function="CDLDARKCLOUDCOVER", sign=-1, direction=-1, bars=2
    ),
    PatternDef(name="bullish_harami", function="CDLHARAMI", sign=1, direction=1, bars=2),
    PatternDef(name="bearish_harami", function="CDLHARAMI", sign=-1, direction=-1, bars=2),
)
PATTERN_NAMES: Final[tuple[str, ...]] = tuple(p.name for p in PATTERNS)
BY_NAME: Final[dict[str, PatternDef]] = {p.name: p for p in PATTERNS}

# The similar-but-wrong pattern for hard negatives (an involution: OPPOSITE[OPPOSITE[x]] == x).
OPPOSITE: Final[dict[str, str]] = {
    "bullish_engulfing": "bearish_engulfing",
    "hammer": "hanging_man",
    "inverted_hammer": "shooting_star",
    "dragonfly_doji": "gravestone_doji",
    "morning_star": "evening_star",
    "three_white_soldiers": "three_black_crows",
    "piercing_line": "dark_cloud_cover",
    "bullish_harami": "bearish_harami",
}
OPPOSITE.update({v: k for k, v in list(OPPOSITE.items())})

# A more specific pattern hides the generic one it implies on the same bar.
_HIDES: Final[dict[str, str]] = {"dragonfly_doji": "doji", "gravestone_doji": "doji"}


class PatternHit(msgspec.Struct, frozen=True, kw_only=True):
    """A pattern whose signal bar is `bars_ago` bars before the window's last bar (0 = last bar)."""

    name: str
    direction: int
    strength: float
    bars_ago: int


def detect_patterns(window: ChartWindow, *, recent_bars: int = 3) -> tuple[PatternHit, ...]:
    """Patterns signalled on the last `recent_bars` bars, most recent first, then by name."""
    o, h, lo, c = window.open, window.high, window.low, window.close
    outputs: dict[str, np.ndarray] = {}
    hits: list[PatternHit] = []
    n = len(window)
    for p in PATTERNS:
        if p.function not in outputs:
            outputs[p.function] = getattr(talib, p.function)(o, h, lo, c)
        values = outputs[p.function][max(0, n - recent_bars) :]
        for i, value in enumerate(values):
            if value != 0 and np.sign(value) == p.sign:
                hits.append(
                    PatternHit(
                        name=p.name,
                        direction=p.direction,
                        strength=float(abs(value)) / 100.0,
                        bars_ago=len(values) - 1 - i,
                    )
                )
    hidden = {(_HIDES[hit.name], hit.bars_ago) for hit in hits if hit.name in _HIDES}
    kept = [hit for hit in hits if (hit.name, hit.bars_ago) not in hidden]
    return tuple(sorted(kept, key=lambda hit: (hit.bars_ago, hit.name)))
