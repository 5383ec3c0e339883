"""Rolling windows of validated bars per symbol; a bad bar is rejected with a reason and never stored."""

from __future__ import annotations

import itertools
import math
from collections import deque
from collections.abc import Iterable
from datetime import UTC, datetime

import numpy as np
import numpy.typing as npt

from strategy.bars_types import (
    BarRejected as BarRejected,
)
from strategy.bars_types import (
    BarsAdded as BarsAdded,
)
from strategy.bars_types import (
    BarStoreConfig as BarStoreConfig,
)
from strategy.bars_types import (
    WindowReset as WindowReset,
)
from strategy.types import Bar
from vlm_engine.render.window import ChartWindow

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


# Bar times outside this range are not market data (a year-9999 or epoch -1 stamp): rejected.
EARLIEST_TS = datetime(1970, 1, 2, tzinfo=UTC)
LATEST_TS = datetime(2100, 1, 1, tzinfo=UTC)
_EARLIEST, _LATEST = int(EARLIEST_TS.timestamp()), int(LATEST_TS.timestamp())
_MAX_RESETS = 1024
# Prices and volumes outside these bounds are not market data (a 1e308 or 1e-300 print): rejected
# before any window, so that every derived value (ratios, squares, notionals, float32 model
# inputs, whose largest is 3.4e38) stays finite.
MIN_PRICE, MAX_PRICE, MAX_VOLUME = 1e-8, 1e9, 1e15

_DAY = 86_400
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


# The one window type, from the bar store to the chart renderer (vlm_engine.render.ChartWindow):
# the last bars of one symbol, oldest first, as read-only numpy arrays; ts is the last bar's close.
Window = ChartWindow


def bar_at(window: Window, index: int) -> Bar:
    """One bar of the window as a Bar value (negative indexes count from the end)."""
    return Bar(
        symbol=window.symbol,
        ts=datetime.fromtimestamp(int(window.timestamps[index]), tz=UTC),
        open=float(window.open[index]),
        high=float(window.high[index]),
        low=float(window.low[index]),
        close=float(window.close[index]),
        volume=float(window.volume[index]),
    )


# How much shorter each new ring's first chunk is: a stride of 97 over the pushes between copies.
_FIRST_CHUNK_CUTS = itertools.count(0, 97)


class _Ring:
    """A symbol's bars in append-only chunks, so a window is a read-only view that never changes.

    Bars are written one after another into the current chunk; a window is a slice of it. When
    the chunk is full, a new one is allocated and the last n - 1 bars are copied to its start:
    a chunk is never written at an index a window has seen, so windows handed out earlier stay
    as they were without copying them (the old chunk lives as long as its windows do).
    """

    __slots__ = (
        "atr",
        "cap",
        "close",
        "columns",
        "count",
        "end",
        "last_dt",
        "last_ts",
        "n",
        "pending",
        "ranges",
        "rows",
        "size",
        "stamps",
        "stamps_flat",
        "times",
        "values",
    )

    def __init__(self, n: int) -> None:
        self.n = n
        # n - 1 bars are copied per new chunk: at least 256 pushes between copies.
        self.size = max(2 * n, n + 256)  # a new chunk's capacity
        self.values: FloatArray = np.zeros((5, 0), dtype=np.float64)  # writable chunk
        self.times: IntArray = np.zeros(0, dtype=np.int64)
        # Memoryviews of the chunk's rows (open .. volume) and of its times: a bar is written
        # through them, a float per store at about a third of what a numpy item assignment
        # costs, one view per row so no index is computed; the arrays see the same memory.
        self.rows: tuple[memoryview[float], ...] = ()
        self.stamps_flat = memoryview(b"").cast("q")
        self.columns: tuple[FloatArray, ...] = ()  # read-only views of the five rows
        self.stamps: IntArray = self.times  # read-only view of times
        self.end = 0  # bars written into the chunk; the newest is at end - 1
        # The first chunk is cut short by a different amount per ring, so rings that start in
        # the same batch (every symbol at start-up) do not all need a new chunk in one later
        # batch: 100 at once cost ~1.2 ms of that batch's intake, ~12 us per ring.
        between_copies = self.size - n + 1
        self._new_chunk(0, self.size - next(_FIRST_CHUNK_CUTS) % between_copies)
        self.count = 0  # bars held, at most n
        self.last_ts = 0
        self.last_dt: datetime | None = None
        self.atr = 0.0  # average true range of the stored bars (running mean over the lookback)
        self.ranges = 0  # true ranges averaged into atr so far
        self.pending: float | None = None  # close of a rejected jump, waiting for confirmation
        self.close = 0.0  # the newest bar's close (a float: cheaper than reading the array)

    def _new_chunk(self, keep: int, cap: int) -> None:
        """Start a fresh chunk of `cap` bars holding the last `keep` bars of the current one."""
        self.cap = cap
        values = np.zeros((5, cap), dtype=np.float64)
        times = np.zeros(cap, dtype=np.int64)
        if keep:
            end = self.end
            values[:, :keep] = self.values[:, end - keep : end]
            times[:keep] = self.times[end - keep : end]
        self.values, self.times, self.end = values, times, keep
        self.rows = tuple(values[i].data.cast("B").cast("d") for i in range(5))
        self.stamps_flat = times.data.cast("B").cast("q")
        readonly = values.view()
        readonly.flags.writeable = False
        self.columns = tuple(readonly[i] for i in range(5))
        stamps = times.view()
        stamps.flags.writeable = False
        self.stamps = stamps

    def clear(self) -> None:
        self.count = 0
        self.last_ts = 0
        self.last_dt = None
        self.atr = 0.0
        self.ranges = 0
        self.pending = None

    def next_slot(self) -> int:
        """The chunk index the next bar goes to (a new chunk when this one is full)."""
        if self.end == self.cap:
            count = self.count
            self._new_chunk(count if count < self.n else self.n - 1, self.size)
        return self.end


class BarStore:
    """Validates every incoming bar and keeps a rolling window per symbol."""

    def __init__(self, *, config: BarStoreConfig) -> None:
        self.config = config
        self._rings: dict[str, _Ring] = {}
        # What add_batch reads per call, in one tuple: a one-bar batch (the 1-symbol backtest,
        # add()) would otherwise spend more on reading the config than on the bar.
        self._settings = (
            config.bar_seconds,
            config.bar_seconds < _DAY,  # intraday: bars sit on a bar_seconds boundary
            config.window,
            config.max_gap_bars,
            config.gap_policy,
            config.max_jump_atr,
            config.min_jump_fraction,
            config.jump_lookback,
            min(config.jump_lookback, 5),  # ranges seen before the jump check starts
        )
        self._epoch: tuple[datetime | None, int] = (None, 0)  # the last bar time converted
        # The last whole-second UTC bar time converted and its epoch seconds (add_batch counts
        # from it); the epoch itself to start.
        self._whole_utc: tuple[datetime, int] = (_EPOCH, 0)
        # Gap resets since the last pop_resets(), for the caller to log (bounded: nobody may drain).
        self._resets: deque[WindowReset] = deque(maxlen=_MAX_RESETS)

    @property
    def symbols(self) -> tuple[str, ...]:
        """Symbols that have at least one stored bar."""
        return tuple(s for s, r in self._rings.items() if r.count)

    def add(self, bar: Bar, *, now: datetime | None = None) -> BarRejected | None:
        """Validate and store one bar; returns the rejection, or None when the bar was stored.

        now: the receiving clock of a live feed; a bar closing more than max_future_seconds
        after it is rejected (future_ts). Replays and backtests pass nothing."""
        rejected = self.add_batch((bar,), now=now).rejected
        return rejected[0] if rejected else None

    def add_batch(self, bars: Iterable[Bar], *, now: datetime | None = None) -> BarsAdded:
        """Validate and store bars in order: exactly what add() does bar by bar, in one loop.

        A symbol may appear more than once (a second bar of it sees the first one stored). The
        checks that depend on the bar time alone are made once per distinct ts object (a feed's
        batch shares one), and the per-bar work is written out with the store's settings read
        once: this loop runs for every bar of every symbol."""
        step, intraday, window, max_gap, policy, jump, jump_fraction, lookback, min_ranges = (
            self._settings
        )
        gap_span = (max_gap + 2) * step  # the smallest move past last that is a long gap
        rings = self._rings
        accepted: list[Bar] = []
        symbols: list[str] = []
        rejected: list[BarRejected] = []
        seen_dt: datetime | None = None  # the last distinct bar time, and what it gave:
        seen_ts = 0  # its epoch seconds,
        seen_problem: tuple[str, str] | None = None  # and why it is refused (None: usable)
        whole_dt, whole_ts = self._whole_utc
        for bar in bars:
            ts_dt = bar.ts
            o, h, low, c, v = bar.open, bar.high, bar.low, bar.close, bar.volume
            # One chained comparison that holds exactly when _check_values finds nothing for a
            # UTC bar (NaN fails every comparison); anything else takes the per-invariant checks.
            if not (
                ts_dt.tzinfo is UTC
                and MIN_PRICE <= low <= o <= h <= MAX_PRICE
                and low <= c <= h
                and 0.0 <= v <= MAX_VOLUME
            ):
                problem = _check_values(bar)
                if problem is not None:
                    rejected.append(_rejected(bar, *problem))
                    continue
            if ts_dt is not seen_dt:
                seen_dt = ts_dt
                if ts_dt.tzinfo is UTC and not ts_dt.microsecond:
                    # int(ts_dt.timestamp()) as the last whole UTC second converted moved by the
                    # difference (same tzinfo: no utcoffset call), at a third of the cost; exact,
                    # both being whole seconds.
                    move = ts_dt - whole_dt
                    seen_ts = whole_ts + move.days * _DAY + move.seconds
                    whole_dt, whole_ts = ts_dt, seen_ts
                else:
                    seen_ts = int(ts_dt.timestamp())
                # The usual case in one test; _time_problem says what is wrong otherwise.
                if (
                    now is None
                    and _EARLIEST <= seen_ts < _LATEST
                    and not ts_dt.microsecond
                    and not (intraday and seen_ts % step)
                ):
                    seen_problem = None
                else:
                    seen_problem = _time_problem(ts_dt, seen_ts, now, self.config, intraday)
            if seen_problem is not None:
                rejected.append(_rejected(bar, *seen_problem))
                continue
            ts = seen_ts
            symbol = bar.symbol
            ring = rings.get(symbol)
            if ring is None:
                ring = rings[symbol] = _Ring(window)
            elif ring.count:
                last = ring.last_ts
                if ts <= last:
                    rejected.append(_order_rejected(bar, ring, ts == last))
                    continue
                # missing = (ts - last) // step - 1 > max_gap, as one integer comparison.
                if ts - last >= gap_span:
                    missing = (ts - last) // step - 1
                    if policy == "reject":
                        rejected.append(
                            _rejected(
                                bar,
                                "gap",
                                f"{missing} bars missing after {_iso(ring.last_dt)} "
                                f"(max_gap_bars is {max_gap})",
                            )
                        )
                        continue
                    if policy == "reset":
                        self._resets.append(
                            WindowReset(
                                symbol=symbol,
                                ts=ts_dt,
                                missing_bars=missing,
                                policy=policy,
                                after=ring.last_dt,
                            )
                        )
                        ring.clear()
                    else:  # accepted across a long gap: the old range says nothing about this bar
                        ring.atr, ring.ranges, ring.pending = 0.0, 0, None
            # Cross-bar check.
            previous = ring.close
            if jump and ring.ranges >= min_ranges:
                up, down = h - previous, previous - low
                distance = up if up > down else down  # max(|high - close|, |low - close|)
                limit = jump * ring.atr
                floor = jump_fraction * previous
                if distance > (limit if limit > floor else floor):
                    refused = self._jump_rejected(ring, bar, distance)
                    if refused is not None:
                        rejected.append(refused)
                        continue
                else:
                    ring.pending = None
            if ring.count:  # fold the true range into the running ATR
                top = h if h > previous else previous
                bottom = low if low < previous else previous
                true_range = top - bottom
            else:
                true_range = h - low
            ranges = ring.ranges = ring.ranges + 1
            ring.atr += (true_range - ring.atr) / (ranges if ranges < lookback else lookback)
            # Store it: the ring's state written here (not a method call per bar).
            k = ring.next_slot() if ring.end == ring.cap else ring.end
            row_o, row_h, row_l, row_c, row_v = ring.rows
            row_o[k] = o
            row_h[k] = h
            row_l[k] = low
            row_c[k] = c
            row_v[k] = v
            ring.stamps_flat[k] = ts
            ring.end = k + 1
            if ring.count < window:
                ring.count += 1
            ring.last_ts, ring.last_dt, ring.close = ts, ts_dt, c
            accepted.append(bar)
            symbols.append(symbol)
        if seen_dt is not None:
            self._epoch = (seen_dt, seen_ts)
            self._whole_utc = (whole_dt, whole_ts)
        return BarsAdded(accepted, rejected, symbols)

    def epoch(self, ts: datetime) -> int:
        """int(ts.timestamp()), taken from the last bar time add_batch converted when it is ts."""
        seen_dt, seen_ts = self._epoch
        return seen_ts if ts is seen_dt else int(ts.timestamp())

    def _jump_rejected(self, ring: _Ring, bar: Bar, distance: float) -> BarRejected | None:
        """A bar far outside the recent range: rejected, unless it confirms a rejected jump."""
        cfg = self.config
        previous = ring.close
        limit = max(cfg.max_jump_atr * ring.atr, cfg.min_jump_fraction * previous)
        pending = ring.pending
        if pending is not None:
            from_pending = max(abs(bar.high - pending), abs(bar.low - pending))
            if from_pending <= max(cfg.max_jump_atr * ring.atr, cfg.min_jump_fraction * pending):
                ring.pending = None  # two bars agree on the new level: a real move
                return None
        ring.pending = bar.close
        return _rejected(
            bar,
            "price_jump",
            f"high {bar.high} / low {bar.low} lie {distance:.6g} from the previous close "
            f"{previous}, over the limit {limit:.6g} ({cfg.max_jump_atr} x ATR {ring.atr:.6g}, "
            f"at least {cfg.min_jump_fraction} x close); the next bar at this level confirms it",
        )

    def pop_resets(self) -> list[WindowReset]:
        """The windows reset by a gap since the last call, oldest first."""
        out = list(self._resets)
        self._resets.clear()
        return out

    def window(self, symbol: str) -> Window | None:
        """The symbol's last `config.window` bars, or None until that many are stored.

        The arrays are read-only views that later bars never change (see _Ring)."""
        return self.windows((symbol,))[0]

    def windows(self, symbols: Iterable[str]) -> list[Window | None]:
        """window() for each symbol, in order, in one loop (None where a symbol has no full window)."""
        return self._windows(symbols, full_only=False)

    def full_windows(self, symbols: Iterable[str]) -> list[Window]:
        """The full windows of these symbols, in order: windows() without the Nones."""
        return self._windows(symbols, full_only=True)  # type: ignore[return-value]

    def _windows(self, symbols: Iterable[str], *, full_only: bool) -> list[Window | None]:
        rings = self._rings
        bar_seconds = self.config.bar_seconds
        out: list[Window | None] = []
        for symbol in symbols:
            ring = rings.get(symbol)
            if ring is None or ring.count < ring.n or ring.last_dt is None:
                if not full_only:
                    out.append(None)
                continue
            stop = ring.end
            part = slice(stop - ring.n, stop)
            o, h, low, c, v = ring.columns
            out.append(
                Window(
                    symbol=symbol,
                    bar_seconds=bar_seconds,
                    timestamps=ring.stamps[part],
                    open=o[part],
                    high=h[part],
                    low=low[part],
                    close=c[part],
                    volume=v[part],
                )
            )
        return out

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


def _time_problem(
    ts_dt: datetime, ts: int, now: datetime | None, cfg: BarStoreConfig, intraday: bool
) -> tuple[str, str] | None:
    """What is wrong with a bar time on its own (range, clock, alignment), or None."""
    if not _EARLIEST <= ts < _LATEST or now is not None:
        problem = _check_time(ts_dt, now, cfg.max_future_seconds)
        if problem is not None:
            return problem
    # Daily and longer bars close at the exchange's close (e.g. 21:00 or 20:00 UTC with DST):
    # only intraday bars must sit on a bar_seconds boundary.
    step = cfg.bar_seconds
    if ts_dt.microsecond or (intraday and ts % step):
        return "misaligned_ts", f"bar time {ts_dt.isoformat()} is not on a {step}s boundary"
    return None


def _order_rejected(bar: Bar, ring: _Ring, duplicate: bool) -> BarRejected:
    """A bar at or before the symbol's last stored bar."""
    ts = bar.ts.isoformat()
    if duplicate:
        return _rejected(bar, "duplicate_ts", f"a bar at {ts} is already stored")
    return _rejected(
        bar,
        "out_of_order",
        f"bar time {ts} is before the last stored bar {_iso(ring.last_dt)}",
    )


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
    if h > MAX_PRICE or low < MIN_PRICE:
        return (
            "implausible_price",
            f"prices must lie in [{MIN_PRICE:g}, {MAX_PRICE:g}]: o={o} h={h} l={low} c={c}",
        )
    if v > MAX_VOLUME:
        return "implausible_volume", f"volume {v} is over {MAX_VOLUME:g}"
    if h < low:
        return "high_below_low", f"high {h} is below low {low}"
    if h < o or h < c:
        return "high_below_body", f"high {h} is below max(open, close) = {max(o, c)}"
    if low > o or low > c:
        return "low_above_body", f"low {low} is above min(open, close) = {min(o, c)}"
    return None


def _check_time(
    ts: datetime, now: datetime | None, max_future_seconds: float
) -> tuple[str, str] | None:
    """A plausible bar time: within [EARLIEST_TS, LATEST_TS), and not after now + tolerance."""
    if not EARLIEST_TS <= ts < LATEST_TS:
        return (
            "implausible_ts",
            f"bar time {ts.isoformat()} is outside {EARLIEST_TS.date()} .. {LATEST_TS.date()}",
        )
    if now is not None and (ts - now).total_seconds() > max_future_seconds:
        return (
            "future_ts",
            f"bar time {ts.isoformat()} is more than {max_future_seconds:g}s after the clock "
            f"{now.isoformat()}",
        )
    return None


def _rejected(bar: Bar, reason: str, detail: str) -> BarRejected:
    return BarRejected(symbol=bar.symbol, ts=bar.ts, reason=reason, detail=detail)


def _iso(ts: datetime | None) -> str:
    return ts.isoformat() if ts is not None else "?"
