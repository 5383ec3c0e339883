"""A scorer from TA-Lib candlestick patterns on the last bar, weighed by RSI and Bollinger context."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Annotated, Any, Literal, NamedTuple, get_args

import msgspec
import numpy as np
from talib import abstract

from strategy.bars import Window
from strategy.features import raw_talib
from strategy.scoring import neutral_signal
from strategy.types import Signal

PatternName = Literal[
    "engulfing",
    "hammer",
    "inverted_hammer",
    "hanging_man",
    "shooting_star",
    "morning_star",
    "evening_star",
    "piercing",
    "dark_cloud_cover",
    "harami",
    "three_white_soldiers",
    "three_black_crows",
]
NonNegativeFloat = Annotated[float, msgspec.Meta(ge=0)]
PositiveFloat = Annotated[float, msgspec.Meta(gt=0)]
RsiLevel = Annotated[float, msgspec.Meta(gt=0, lt=100)]


class _Pattern(NamedTuple):
    function: str  # TA-Lib function name
    bullish: str  # reason when TA-Lib reports > 0
    bearish: str  # reason when TA-Lib reports < 0
    weight: float  # default weight: how much one textbook occurrence moves the score


_PATTERNS: dict[str, _Pattern] = {
    "engulfing": _Pattern("CDLENGULFING", "bullish_engulfing", "bearish_engulfing", 1.0),
    "hammer": _Pattern("CDLHAMMER", "hammer", "hammer", 0.7),
    "inverted_hammer": _Pattern("CDLINVERTEDHAMMER", "inverted_hammer", "inverted_hammer", 0.4),
    "hanging_man": _Pattern("CDLHANGINGMAN", "hanging_man", "hanging_man", 0.4),
    "shooting_star": _Pattern("CDLSHOOTINGSTAR", "shooting_star", "shooting_star", 0.7),
    "morning_star": _Pattern("CDLMORNINGSTAR", "morning_star", "morning_star", 1.2),
    "evening_star": _Pattern("CDLEVENINGSTAR", "evening_star", "evening_star", 1.2),
    "piercing": _Pattern("CDLPIERCING", "piercing", "piercing", 0.8),
    "dark_cloud_cover": _Pattern("CDLDARKCLOUDCOVER", "dark_cloud_cover", "dark_cloud_cover", 0.8),
    "harami": _Pattern("CDLHARAMI", "bullish_harami", "bearish_harami", 0.5),
    "three_white_soldiers": _Pattern(
        "CDL3WHITESOLDIERS", "three_white_soldiers", "three_white_soldiers", 1.0
    ),
    "three_black_crows": _Pattern("CDL3BLACKCROWS", "three_black_crows", "three_black_crows", 1.0),
}
ALL_PATTERNS: tuple[PatternName, ...] = get_args(PatternName)


class RuleScorerConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Which patterns count, their weights, and how RSI / Bollinger context scales them.

    strength = |sum of signed pattern weights| * (1 + context_boost * agreeing contexts
    - context_penalty * opposing contexts); below min_strength the signal is neutral;
    confidence = min(1, strength / full_strength); p_up = 0.5 +/- max_edge * confidence.
    RSI and Bollinger bands are computed on the last context_bars closes.
    """

    patterns: tuple[PatternName, ...] = ALL_PATTERNS
    weights: dict[PatternName, NonNegativeFloat] = msgspec.field(default_factory=dict)
    rsi_period: Annotated[int, msgspec.Meta(ge=2)] = 14
    rsi_oversold: RsiLevel = 35.0
    rsi_overbought: RsiLevel = 65.0
    bb_period: Annotated[int, msgspec.Meta(ge=2)] = 20
    bb_std: PositiveFloat = 2.0
    context_bars: Annotated[int, msgspec.Meta(ge=3)] = 40
    context_boost: NonNegativeFloat = 0.5
    context_penalty: NonNegativeFloat = 0.5
    min_strength: NonNegativeFloat = 0.3
    full_strength: PositiveFloat = 2.0
    max_edge: Annotated[float, msgspec.Meta(gt=0, le=0.5)] = 0.35

    def __post_init__(self) -> None:
        if self.rsi_oversold >= self.rsi_overbought:
            msg = (
                f"rsi_oversold ({self.rsi_oversold}) must be below rsi_overbought "
                f"({self.rsi_overbought})"
            )
            raise ValueError(msg)
        if self.context_bars < self.bb_period or self.context_bars <= self.rsi_period:
            msg = (
                f"context_bars ({self.context_bars}) must be >= bb_period ({self.bb_period}) "
                f"and > rsi_period ({self.rsi_period})"
            )
            raise ValueError(msg)

    def weight(self, pattern: PatternName) -> float:
        """The configured weight of a pattern, or its default."""
        return self.weights.get(pattern, _PATTERNS[pattern].weight)


class _Enabled(NamedTuple):
    compute: Callable[..., Any]
    bullish: str
    bearish: str
    weight: float


class RuleScorer:
    """Scores the last bar of each window from candlestick patterns with RSI/Bollinger context."""

    def __init__(self, *, config: RuleScorerConfig) -> None:
        self.config = config
        self.name = "rules"
        self.blocking = False
        self._enabled: list[_Enabled] = []
        lookback = 0
        for name in dict.fromkeys(config.patterns):
            spec = _PATTERNS[name]
            self._enabled.append(
                _Enabled(raw_talib(spec.function), spec.bullish, spec.bearish, config.weight(name))
            )
            lookback = max(lookback, int(abstract.Function(spec.function).lookback))  # type: ignore[attr-defined]
        # Bars a pattern needs to be judged on the last bar; windows are scored on this tail only.
        self.pattern_bars = lookback + 1
        self._nets: dict[tuple[float, ...], tuple[float, tuple[str, ...]]] = {}  # see _net

    def score(self, windows: Sequence[Window]) -> list[Signal]:
        """One Signal per window, in order; neutral where no enabled pattern completes on the last bar."""
        if not windows:
            return []
        if not self._enabled:
            return [neutral_signal(w, self.name) for w in windows]
        span = self.pattern_bars
        signals: list[Signal | None] = [None] * len(windows)
        batch = [i for i, w in enumerate(windows) if len(w) >= span]
        if batch:
            self._score_into(signals, windows, batch, span)
        for i, w in enumerate(windows):
            if signals[i] is not None:
                continue
            if len(w) == 0:
                signals[i] = neutral_signal(w, self.name)
            else:  # shorter than the patterns' lookback: score it on its own
                self._score_into(signals, windows, [i], len(w))
        return [s for s in signals if s is not None]

    def _score_into(
        self,
        signals: list[Signal | None],
        windows: Sequence[Window],
        indexes: list[int],
        span: int,
    ) -> None:
        """Run each pattern once over the windows' tails laid end to end, read each tail's last bar.

        TA-Lib looks back at most span - 1 bars, so the value at a tail's last bar depends on
        that tail only. Each tail is scaled by its last close (patterns are scale-free) so
        TA-Lib's running averages stay on one scale across tails.
        """
        tails = [windows[i] for i in indexes]
        prices = np.empty((4, len(tails), span), dtype=np.float64)
        opens, highs, lows, closes = prices  # row views: one fewer index per copy below
        for j, w in enumerate(tails):
            opens[j] = w.open[-span:]
            highs[j] = w.high[-span:]
            lows[j] = w.low[-span:]
            closes[j] = w.close[-span:]
        prices /= prices[3, :, -1:].copy()
        opens, highs, lows, closes = prices.reshape(4, -1)
        values = np.empty((len(self._enabled), len(tails)), dtype=np.float64)
        for k, pattern in enumerate(self._enabled):
            values[k] = pattern.compute(opens, highs, lows, closes)[span - 1 :: span]
        fired = np.any(values, axis=0).tolist()
        rows = values.T.tolist()  # one list of pattern values per tail
        flat = iter(self._flat_closes([tails[j] for j, hit in enumerate(fired) if hit]))
        stamps = [int(w.timestamps[-1]) for w in tails]
        times: dict[int, datetime] = {}  # the windows of a batch share their close time
        for j, i in enumerate(indexes):
            window = windows[i]
            ts = times.get(stamps[j])
            if ts is None:
                ts = times[stamps[j]] = window.ts
            signals[i] = (
                self._judge(window, rows[j], ts, next(flat))
                if fired[j]
                else neutral_signal(window, self.name, ts=ts)
            )

    def _flat_closes(self, windows: Sequence[Window]) -> list[bool | None]:
        """Per window, whether its context closes are all equal (no RSI/Bollinger reading), from
        one max and one min over the windows stacked, instead of two array reductions per window;
        None for a window shorter than context_bars (_context decides on its own)."""
        bars = self.config.context_bars
        full = [j for j, w in enumerate(windows) if w.close.shape[0] >= bars]
        out: list[bool | None] = [None] * len(windows)
        if full:
            closes = np.empty((len(full), bars), dtype=np.float64)
            for row, j in enumerate(full):
                closes[row] = windows[j].close[-bars:]
            for j, same in zip(
                full, (closes.max(axis=1) == closes.min(axis=1)).tolist(), strict=True
            ):
                out[j] = same
        return out

    def _judge(
        self, window: Window, values: list[float], ts: datetime, flat: bool | None
    ) -> Signal:
        """Turn the patterns that fired on the last bar, plus context, into one Signal (ts: the
        window's close time; flat: see _flat_closes)."""
        cfg = self.config
        net, found = self._net(values)
        reasons = list(found)
        direction = 1 if net > 1e-12 else -1 if net < -1e-12 else 0
        if direction == 0:
            return neutral_signal(window, self.name, found, ts=ts)
        agree, oppose = self._context(window, direction, reasons, flat)
        strength = abs(net) * max(
            0.0, 1.0 + cfg.context_boost * agree - cfg.context_penalty * oppose
        )
        if strength < cfg.min_strength:
            return neutral_signal(window, self.name, tuple(reasons), ts=ts)
        confidence = min(1.0, strength / cfg.full_strength)
        return Signal(
            symbol=window.symbol,
            ts=ts,
            p_up=0.5 + direction * cfg.max_edge * confidence,
            confidence=confidence,
            scorer=self.name,
            reasons=tuple(reasons),
        )

    def _net(self, values: list[float]) -> tuple[float, tuple[str, ...]]:
        """The signed sum of the weights of the patterns that fired and their reasons, in pattern
        order; memoized: TA-Lib's pattern outputs take a few values (+-100, +-200), so a batch's
        windows share a handful of combinations."""
        key = tuple(values)
        hit = self._nets.get(key)
        if hit is not None:
            return hit
        net = 0.0
        reasons: list[str] = []
        for pattern, value in zip(self._enabled, values, strict=True):
            if value == 0 or pattern.weight == 0:
                continue
            net += math.copysign(pattern.weight * min(abs(value) / 100.0, 1.0), value)
            reasons.append(pattern.bullish if value > 0 else pattern.bearish)
        if len(self._nets) >= _NETS_KEPT:
            self._nets.clear()
        hit = self._nets[key] = (net, tuple(reasons))
        return hit

    def _context(
        self, window: Window, direction: int, reasons: list[str], flat: bool | None = None
    ) -> tuple[int, int]:
        """Count RSI/Bollinger readings that agree or disagree with direction; append their reasons."""
        cfg = self.config
        closes = window.close[-cfg.context_bars :]
        if flat is None:
            flat = closes.shape[0] <= cfg.rsi_period or closes.max() == closes.min()
        if flat:
            return 0, 0
        agree = oppose = 0
        # Positional arguments: TA-Lib's Cython wrappers parse keywords at a µs per call.
        rsi = float(_RSI(closes, cfg.rsi_period)[-1])
        if rsi < cfg.rsi_oversold:
            reasons.append("rsi_oversold")
            agree, oppose = (agree + 1, oppose) if direction > 0 else (agree, oppose + 1)
        elif rsi > cfg.rsi_overbought:
            reasons.append("rsi_overbought")
            agree, oppose = (agree + 1, oppose) if direction < 0 else (agree, oppose + 1)
        if closes.shape[0] >= cfg.bb_period:
            upper, _, lower = _BBANDS(closes, cfg.bb_period, cfg.bb_std, cfg.bb_std)
            last = float(closes[-1])
            if last < float(lower[-1]):
                reasons.append("below_lower_band")
                agree, oppose = (agree + 1, oppose) if direction > 0 else (agree, oppose + 1)
            elif last > float(upper[-1]):
                reasons.append("above_upper_band")
                agree, oppose = (agree + 1, oppose) if direction < 0 else (agree, oppose + 1)
        return agree, oppose


_NETS_KEPT = 4096  # pattern combinations _net remembers (cleared when full)
_RSI = raw_talib("RSI")
_BBANDS = raw_talib("BBANDS")
