"""Rolling windows of validated bars per symbol; a bad bar is rejected with a reason and never stored."""

from __future__ import annotations

import math
from collections import deque
from datetime import UTC, datetime
from typing import Annotated, Literal

import msgspec
import numpy as np
import numpy.typing as npt

from strategy.types import Bar

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

GapPolicy = Literal["reset", "reject", "accept"]

_MAX_RESETS = 1024

# Column order of the per-symbol ring buffer.
_OPEN, _HIGH, _LOW, _CLOSE, _VOLUME = range(5)


class BarStoreConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Window length, bar spacing and what to do when bars are missing.

    A gap is the number of missing bars between two consecutive bars of a symbol. Gaps of at
    most max_gap_bars are accepted; longer ones reset the symbol's window (reset), are
    rejected (reject), or are accepted anyway (accept).
    """

    window: Annotated[int, msgspec.Meta(ge=8)] = 64
    bar_seconds: Annotated[int, msgspec.Meta(gt=0)] = 60
    gap_policy: GapPolicy = "reset"
    max_gap_bars: Annotated[int, msgspec.Meta(ge=0)] = 5


class BarRejected(msgspec.Struct, frozen=True, kw_only=True):
    """Why one bar was refused: reason is a stable code, detail a sentence for humans."""

    symbol: str
    ts: datetime
    reason: str
    detail: str


class WindowReset(msgspec.Struct, frozen=True, kw_only=True):
    """A symbol's window was emptied because `missing_bars` bars were missing before the bar at ts."""

    symbol: str
    ts: datetime
    missing_bars: int
    policy: GapPolicy
    after: datetime | None  # the last bar before the gap


class Window(msgspec.Struct, frozen=True, kw_only=True, eq=False):
    """The last `len(window)` bars of one symbol, oldest first, as read-only numpy arrays.

    ts is the close time of the last bar; timestamps holds every bar's close as epoch seconds.
    """

    symbol: str
    ts: datetime
    bar_seconds: int
    timestamps: IntArray
    open: FloatArray
    high: FloatArray
    low: FloatArray
    close: FloatArray
    volume: FloatArray

    def __len__(self) -> int:
        return int(self.close.shape[0])

    def bar(self, index: int) -> Bar:
        """Return one bar of the window as a Bar value (negative indexes count from the end)."""
        return Bar(
            symbol=self.symbol,
            ts=datetime.fromtimestamp(int(self.timestamps[index]), tz=UTC),
            open=float(self.open[index]),
            high=float(self.high[index]),
            low=float(self.low[index]),
            close=float(self.close[index]),
            volume=float(self.volume[index]),
        )


class _Ring:
    """Fixed-size ring of bars, each written twice so the last n bars are always one contiguous slice."""

    __slots__ = ("count", "last_dt", "last_ts", "n", "pos", "times", "values")

    def __init__(self, n: int) -> None:
        self.n = n
        self.values: FloatArray = np.zeros((5, 2 * n), dtype=np.float64)
        self.times: IntArray = np.zeros(2 * n, dtype=np.int64)
        self.pos = -1  # index of the newest bar in [0, n)
        self.count = 0  # bars held, at most n
        self.last_ts = 0
        self.last_dt: datetime | None = None

    def clear(self) -> None:
        self.pos = -1
        self.count = 0
        self.last_ts = 0
        self.last_dt = None

    def push(self, bar: Bar, ts: int) -> None:
        n = self.n
        k = self.pos + 1
        if k == n:
            k = 0
        self.pos = k
        row = (bar.open, bar.high, bar.low, bar.close, bar.volume)
        values = self.values
        values[:, k] = row
        values[:, k + n] = row
        self.times[k] = ts
        self.times[k + n] = ts
        if self.count < n:
            self.count += 1
        self.last_ts = ts
        self.last_dt = bar.ts


class BarStore:
    """Validates every incoming bar and keeps a rolling window per symbol."""

    def __init__(self, *, config: BarStoreConfig) -> None:
        self.config = config
        self._rings: dict[str, _Ring] = {}
        # Gap resets since the last pop_resets(), for the caller to log (bounded: nobody may drain).
        self._resets: deque[WindowReset] = deque(maxlen=_MAX_RESETS)

    @property
    def symbols(self) -> tuple[str, ...]:
        """Symbols that have at least one stored bar."""
        return tuple(s for s, r in self._rings.items() if r.count)

    def add(self, bar: Bar) -> BarRejected | None:
        """Validate and store one bar; returns the rejection, or None when the bar was stored."""
        problem = _check_values(bar)
        if problem is not None:
            return _rejected(bar, *problem)
        ts_dt = bar.ts
        step = self.config.bar_seconds
        ts = int(ts_dt.timestamp())
        if ts_dt.microsecond or ts % step:
            return _rejected(
                bar, "misaligned_ts", f"bar time {ts_dt.isoformat()} is not on a {step}s boundary"
            )
        ring = self._rings.get(bar.symbol)
        if ring is None:
            ring = self._rings[bar.symbol] = _Ring(self.config.window)
        elif ring.count:
            last = ring.last_ts
            if ts == last:
                return _rejected(
                    bar, "duplicate_ts", f"a bar at {ts_dt.isoformat()} is already stored"
                )
            if ts < last:
                return _rejected(
                    bar,
                    "out_of_order",
                    f"bar time {ts_dt.isoformat()} is before the last stored bar "
                    f"{_iso(ring.last_dt)}",
                )
            missing = (ts - last) // step - 1
            if missing > self.config.max_gap_bars:
                policy = self.config.gap_policy
                if policy == "reject":
                    return _rejected(
                        bar,
                        "gap",
                        f"{missing} bars missing after {_iso(ring.last_dt)} "
                        f"(max_gap_bars is {self.config.max_gap_bars})",
                    )
                if policy == "reset":
                    self._resets.append(
                        WindowReset(
                            symbol=bar.symbol,
                            ts=ts_dt,
                            missing_bars=missing,
                            policy=policy,
                            after=ring.last_dt,
                        )
                    )
                    ring.clear()
        ring.push(bar, ts)
        return None

    def pop_resets(self) -> list[WindowReset]:
        """The windows reset by a gap since the last call, oldest first."""
        out = list(self._resets)
        self._resets.clear()
        return out

    def window(self, symbol: str) -> Window | None:
        """The symbol's last `config.window` bars, or None until that many are stored."""
        ring = self._rings.get(symbol)
        if ring is None or ring.count < ring.n or ring.last_dt is None:
            return None
        start = ring.pos + 1
        stop = start + ring.n
        values = ring.values[:, start:stop].copy()
        values.flags.writeable = False
        times = ring.times[start:stop].copy()
        times.flags.writeable = False
        return Window(
            symbol=symbol,
            ts=ring.last_dt,
            bar_seconds=self.config.bar_seconds,
            timestamps=times,
            open=values[_OPEN],
            high=values[_HIGH],
            low=values[_LOW],
            close=values[_CLOSE],
            volume=values[_VOLUME],
        )

    def count(self, symbol: str) -> int:
        """Number of bars stored for a symbol (at most config.window)."""
        ring = self._rings.get(symbol)
        return ring.count if ring is not None else 0

    def last_ts(self, symbol: str) -> datetime | None:
        """Close time of the symbol's last stored bar."""
        ring = self._rings.get(symbol)
        return ring.last_dt if ring is not None else None

    def reset(self, symbol: str) -> None:
        """Forget a symbol's bars; the next bar starts a new window."""
        ring = self._rings.get(symbol)
        if ring is not None:
            ring.clear()


def _check_values(bar: Bar) -> tuple[str, str] | None:
    """The per-bar invariants, cheapest first; returns (reason, detail) for the first one broken."""
    if bar.ts.tzinfo is None or bar.ts.utcoffset() is None:
        return "naive_ts", f"bar time {bar.ts.isoformat()} has no timezone; send UTC"
    o, h, low, c, v = bar.open, bar.high, bar.low, bar.close, bar.volume
    isfinite = math.isfinite
    if not (isfinite(o) and isfinite(h) and isfinite(low) and isfinite(c) and isfinite(v)):
        return "non_finite", f"NaN or infinite value in o={o} h={h} l={low} c={c} v={v}"
    if o <= 0 or h <= 0 or low <= 0 or c <= 0:
        return "non_positive_price", f"prices must be > 0: o={o} h={h} l={low} c={c}"
    if v < 0:
        return "negative_volume", f"volume {v} is negative"
    if h < low:
        return "high_below_low", f"high {h} is below low {low}"
    if h < o or h < c:
        return "high_below_body", f"high {h} is below max(open, close) = {max(o, c)}"
    if low > o or low > c:
        return "low_above_body", f"low {low} is above min(open, close) = {min(o, c)}"
    return None


def _rejected(bar: Bar, reason: str, detail: str) -> BarRejected:
    return BarRejected(symbol=bar.symbol, ts=bar.ts, reason=reason, detail=detail)


def _iso(ts: datetime | None) -> str:
    return ts.isoformat() if ts is not None else "?"
