"""Technical features of the last bar of each window (TA-Lib), computed for many windows at once.

Every feature of a window depends on that window's last `lookback` bars only, so scoring a batch
of windows and scoring them one by one give identical rows (the backtest relies on this).
Prices enter only as ratios (returns, indicator / close), so features do not depend on the
price level. Values that cannot be computed (too few bars) are NaN; XGBoost treats NaN as missing.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Sequence
from typing import Annotated, Any, Final

import msgspec
import numpy as np
import talib
from talib import abstract

from strategy.bars import FloatArray, Window

PositiveInt = Annotated[int, msgspec.Meta(gt=0)]
Period = Annotated[int, msgspec.Meta(ge=2)]

DEFAULT_PATTERNS: Final[tuple[str, ...]] = (
    "CDLENGULFING",
    "CDLHAMMER",
    "CDLSHOOTINGSTAR",
    "CDLMORNINGSTAR",
    "CDLEVENINGSTAR",
    "CDL3WHITESOLDIERS",
    "CDL3BLACKCROWS",
    "CDLHARAMI",
    "CDLPIERCING",
    "CDLDARKCLOUDCOVER",
)
_DAY: Final = 86_400
_WEEK: Final = 7 * _DAY
_EPOCH_WEEKDAY: Final = 3  # 1970-01-01 was a Thursday (Monday = 0)


class FeatureConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Which features and their periods; lookback bars of each window are used (the tail)."""

    lookback: Annotated[int, msgspec.Meta(ge=8)] = 64
    return_lags: Annotated[tuple[PositiveInt, ...], msgspec.Meta(min_length=1)] = (1, 3, 5, 10, 20)
    rsi_period: Period = 14
    macd_fast: Period = 12
    macd_slow: Period = 26
    macd_signal: Period = 9
    bb_period: Period = 20
    bb_std: Annotated[float, msgspec.Meta(gt=0)] = 2.0
    atr_period: Period = 14
    volume_period: Period = 20
    patterns: tuple[str, ...] = DEFAULT_PATTERNS
    time_features: bool = True

    def __post_init__(self) -> None:
        unknown = [p for p in self.patterns if not p.startswith("CDL") or not hasattr(talib, p)]
        if unknown:
            msg = f"features.patterns: {', '.join(unknown)} are not TA-Lib candlestick functions (e.g. CDLHAMMER)"
            raise ValueError(msg)
        if self.macd_fast >= self.macd_slow:
            msg = (
                f"features.macd_fast ({self.macd_fast}) must be below macd_slow ({self.macd_slow})"
            )
            raise ValueError(msg)


def feature_names(config: FeatureConfig, bar_seconds: int) -> tuple[str, ...]:
    """Column names of compute_features() for windows of bar_seconds bars, in order."""
    names = [f"ret_{lag}" for lag in config.return_lags]
    names += [
        "rsi",
        "macd",
        "macd_signal",
        "macd_hist",
        "bb_pctb",
        "bb_width",
        "atr",
        "volume_z",
        "body",
        "upper_wick",
        "lower_wick",
    ]
    names += [p.lower() for p in config.patterns]
    if config.time_features and bar_seconds < _DAY:
        names += ["tod_sin", "tod_cos"]
    if config.time_features and bar_seconds < _WEEK:
        names += ["dow_sin", "dow_cos"]
    return tuple(names)


def raw_talib(function: str) -> Callable[..., Any]:
    """A TA-Lib function without talib's pandas/polars wrapper (a few µs per call on the hot path)."""
    return inspect.unwrap(getattr(talib, function))  # type: ignore[no-any-return]


_RSI = raw_talib("RSI")
_MACD = raw_talib("MACD")
_ATR = raw_talib("ATR")


class FeatureEngine:
    """Computes the feature matrix of a batch of windows; one row per window, same order."""

    def __init__(self, *, config: FeatureConfig) -> None:
        self.config = config
        self._patterns = [raw_talib(p) for p in config.patterns]
        lookback = max(
            (int(abstract.Function(p).lookback) for p in config.patterns),  # type: ignore[attr-defined]
            default=0,
        )
        self.pattern_bars = lookback + 1

    def names(self, bar_seconds: int) -> tuple[str, ...]:
        return feature_names(self.config, bar_seconds)

    def compute(self, windows: Sequence[Window]) -> FloatArray:
        """Feature rows (len(windows), len(names)); every window must share one bar_seconds."""
        if not windows:
            return np.empty((0, 0), dtype=np.float64)
        bar_seconds = windows[0].bar_seconds
        if any(w.bar_seconds != bar_seconds for w in windows):
            msg = "features: windows of one batch must share bar_seconds"
            raise ValueError(msg)
        names = self.names(bar_seconds)
        out = np.full((len(windows), len(names)), np.nan, dtype=np.float64)
        by_length: dict[int, list[int]] = {}
        for i, w in enumerate(windows):
            by_length.setdefault(min(len(w), self.config.lookback), []).append(i)
        for length, indexes in by_length.items():
            if length >= 2:
                out[indexes] = self._compute_group([windows[i] for i in indexes], length, names)
        return out

    def _compute_group(
        self, windows: list[Window], length: int, names: tuple[str, ...]
    ) -> FloatArray:
        """Features of windows whose tails have the same length (stacked as 2-D arrays)."""
        cfg = self.config
        n = len(windows)
        o, h, lo, c, v = _stacked_tails(windows, length)
        last = c[:, -1]
        cols: list[FloatArray] = []
        log_c = np.log(c)
        for lag in cfg.return_lags:
            cols.append(log_c[:, -1] - log_c[:, -1 - lag] if lag < length else np.full(n, np.nan))

        # Divided by the last close once for the batch (the same floats as row by row).
        scale = last[:, None]
        cn, hn, ln = c / scale, h / scale, lo / scale
        # Recursive indicators: one TA-Lib call per window keeps them exact (laid end to end,
        # as the patterns are, each window would start from the one before). The last values
        # are collected in lists and made arrays once, not assigned into arrays window by window.
        rows = list(cn)
        nan = np.full(n, np.nan)
        rsi, macd, signal, hist, atr = nan, nan, nan, nan, nan
        if length > cfg.rsi_period:
            period = cfg.rsi_period
            rsi = np.array([_RSI(ck, timeperiod=period)[-1] for ck in rows])
        if length >= cfg.macd_slow + cfg.macd_signal - 1:
            fast, slow, smooth = cfg.macd_fast, cfg.macd_slow, cfg.macd_signal
            last_macd = [
                [a[-1] for a in _MACD(ck, fastperiod=fast, slowperiod=slow, signalperiod=smooth)]
                for ck in rows
            ]
            macd, signal, hist = np.array(last_macd, dtype=np.float64).T
        if length > cfg.atr_period:
            period = cfg.atr_period
            atr = np.array(
                [
                    _ATR(hk, lk, ck, timeperiod=period)[-1]
                    for hk, lk, ck in zip(hn, ln, rows, strict=True)
                ]
            )
        cols += [rsi / 100.0, macd, signal, hist]

        if length >= cfg.bb_period:
            tail = c[:, -cfg.bb_period :]
            mid = tail.mean(axis=1)
            band = cfg.bb_std * tail.std(axis=1)
            with np.errstate(divide="ignore", invalid="ignore"):
                pctb = np.where(band > 0, (last - (mid - band)) / (2 * band), 0.5)
            cols += [pctb, 2 * band / mid]
        else:
            cols += [np.full(n, np.nan), np.full(n, np.nan)]
        cols.append(atr)

        vt = v[:, -min(cfg.volume_period, length) :]
        vstd = vt.std(axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            cols.append(np.where(vstd > 0, (v[:, -1] - vt.mean(axis=1)) / vstd, 0.0))
            scale = np.where(atr > 0, atr * last, np.nan)
            cols.append((c[:, -1] - o[:, -1]) / scale)
            cols.append((h[:, -1] - np.maximum(o[:, -1], c[:, -1])) / scale)
            cols.append((np.minimum(o[:, -1], c[:, -1]) - lo[:, -1]) / scale)

        cols += self._pattern_columns(o, h, lo, c, length)

        ts = np.array([int(w.timestamps[-1]) for w in windows], dtype=np.int64)
        if "tod_sin" in names:
            angle = 2 * math.pi * (ts % _DAY) / _DAY
            cols += [np.sin(angle), np.cos(angle)]
        if "dow_sin" in names:
            angle = 2 * math.pi * ((ts // _DAY + _EPOCH_WEEKDAY) % 7) / 7
            cols += [np.sin(angle), np.cos(angle)]
        return np.column_stack(cols)

    def _pattern_columns(
        self, o: FloatArray, h: FloatArray, lo: FloatArray, c: FloatArray, length: int
    ) -> list[FloatArray]:
        """Pattern flags in [-1, 1] on the last bar, one TA-Lib call per pattern for the whole batch.

        Tails of pattern_bars bars are laid end to end; TA-Lib looks back at most pattern_bars - 1
        bars, so each tail's last value depends on that tail only (scaled by its last close).
        """
        n = c.shape[0]
        if not self._patterns:
            return []
        span = min(self.pattern_bars, length)
        if span < self.pattern_bars:
            return [np.full(n, np.nan) for _ in self._patterns]
        scale = c[:, -1:]
        args = [(x[:, -span:] / scale).ravel() for x in (o, h, lo, c)]
        return [
            np.asarray(f(*args)[span - 1 :: span], dtype=np.float64) / 100.0 for f in self._patterns
        ]


def _stacked_tails(
    windows: Sequence[Window], length: int
) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray, FloatArray]:
    """open, high, low, close, volume of the windows' last `length` bars as (n, length) arrays.

    One np.array over the 5n columns (each a 1-D array of length bars) rather than np.stack per
    column: np.stack's per-array Python work was most of it. Windows all `length` bars long (the
    live batch) are taken whole, without a slice per column."""
    if all(len(w) == length for w in windows):
        columns = [w.open for w in windows]
        columns += [w.high for w in windows]
        columns += [w.low for w in windows]
        columns += [w.close for w in windows]
        columns += [w.volume for w in windows]
    else:
        columns = [w.open[-length:] for w in windows]
        columns += [w.high[-length:] for w in windows]
        columns += [w.low[-length:] for w in windows]
        columns += [w.close[-length:] for w in windows]
        columns += [w.volume[-length:] for w in windows]
    o, h, lo, c, v = np.array(columns, dtype=np.float64).reshape(5, len(windows), length)
    return o, h, lo, c, v
