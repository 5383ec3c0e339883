"""The SMA-cross scorer the backtest benches run (bench_backtest.py, and bench_nautilus.py against
NautilusTrader's SimpleMovingAverage indicators, which are incremental too).

Long when the 10-bar SMA of the close is above the 30-bar one, short otherwise. The sums are kept
per symbol and moved by one bar when a window is its predecessor plus one bar (checked on the
window's own timestamps and closes); any other window (the first, after a gap reset, another
store) is summed afresh. When the two averages are too close for a running sum's rounding to be
trusted, the window is summed afresh too, so every signal is the one summing the window gives.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from strategy.bars import Window
from strategy.types import Signal

FAST, SLOW = 10, 30
_CLOSE_CALL = 1e-9  # relative gap between the averages under which the window is summed afresh


class _Sums:
    """One symbol's last SLOW closes and their running fast and slow sums."""

    __slots__ = ("closes", "fast", "last_ts", "slow")

    def __init__(self, closes: list[float], last_ts: int) -> None:
        self.closes: deque[float] = deque(closes, maxlen=SLOW)
        self.fast = sum(closes[-FAST:])
        self.slow = sum(closes)
        self.last_ts = last_ts


def window_averages(window: Window) -> tuple[float, float]:
    """The fast and slow averages summed over the window (numpy's pairwise sum)."""
    close = window.close
    return float(close[-FAST:].sum()) / FAST, float(close[-SLOW:].sum()) / SLOW


class SmaCross:
    """Long when the 10-bar SMA is above the 30-bar SMA, short otherwise."""

    name = "sma_cross"
    blocking = False

    def __init__(self) -> None:
        self._sums: dict[str, _Sums] = {}
        self._stamp = (0, datetime.fromtimestamp(0, tz=UTC))  # the last window end, as a datetime
        self._step = (0, timedelta(0))  # the last move between two window ends, in seconds

    def score(self, windows: Sequence[Window]) -> list[Signal]:
        """One signal per window; the sums moved by one bar where the window allows (one loop,
        written out: it runs for every window of every batch)."""
        out = []
        name, sums_of = self.name, self._sums
        stamp_ts, stamp = self._stamp  # the last window end, and it as a datetime
        for w in windows:
            # .item() reads one element as a Python number: cheaper than indexing to a numpy
            # scalar and converting it.
            times, close = w.timestamps, w.close
            last_ts = times.item(-1)
            sums = sums_of.get(w.symbol)
            if (
                sums is not None
                and len(close) >= SLOW
                and times.item(-2) == sums.last_ts
                and close.item(-2) == sums.closes[-1]
            ):
                closes = sums.closes
                x = close.item(-1)
                sums.fast += x - closes[-FAST]
                sums.slow += x - closes[0]
                closes.append(x)
                sums.last_ts = last_ts
                fast, slow = sums.fast / FAST, sums.slow / SLOW
                if not abs(fast - slow) > _CLOSE_CALL * abs(slow):
                    fast, slow = window_averages(w)
            else:
                if len(close) >= SLOW:
                    sums_of[w.symbol] = _Sums(close[-SLOW:].tolist(), last_ts)
                fast, slow = window_averages(w)
            if last_ts != stamp_ts:
                # The new end as the last one moved by the whole seconds between them: the
                # datetime fromtimestamp(last_ts, tz=UTC) gives, at a tenth of its cost when the
                # move is the last one again (the next bar).
                seconds = last_ts - stamp_ts
                if seconds != self._step[0]:
                    self._step = (seconds, timedelta(seconds=seconds))
                stamp_ts, stamp = last_ts, stamp + self._step[1]
            out.append(
                Signal(
                    symbol=w.symbol,
                    ts=stamp,
                    p_up=0.7 if fast > slow else 0.3,
                    confidence=0.4,
                    scorer=name,
                )
            )
        self._stamp = (stamp_ts, stamp)
        return out
