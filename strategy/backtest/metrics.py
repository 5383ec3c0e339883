"""Performance metrics of an equity curve and its fills.

Returns are per bar batch; annualisation uses the bars per year observed in the curve itself
(count / span in years), so it is right for 24/7 simulated markets and exchange hours alike.
Annualised figures (annual return and volatility, Sharpe, Sortino) need a sample of at least
MIN_ANNUALISED_DAYS calendar days: on a shorter one they are NaN and `annualised_note` says why
(a 33-hour sample would otherwise report a Sharpe of 66).
A trade is a round trip per symbol, from flat to flat (a reversal closes one and opens another);
its P&L is realised P&L net of commissions (the reversing fill's commission goes to the closed one).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Mapping, Sequence
from typing import Literal

import msgspec
import numpy as np
import numpy.typing as npt

from strategy.types import Fill, Position

FloatArray = npt.NDArray[np.float64]
_YEAR_SECONDS = 365.25 * 86_400
MIN_ANNUALISED_DAYS = 90
SAMPLE_TOO_SHORT = "n/a (sample too short)"


class BacktestMetrics(msgspec.Struct, frozen=True, kw_only=True):
    """Return, risk and trading statistics of one run (fractions, not percent).

    annual_return, annual_volatility, sharpe and sortino are NaN when annualised_note is set
    (the sample spans fewer than MIN_ANNUALISED_DAYS days)."""

    total_return: float
    annual_return: float
    annual_volatility: float
    sharpe: float
    sortino: float
    max_drawdown: float
    max_drawdown_bars: int
    max_drawdown_seconds: int
    hit_rate: float
    profit_factor: float
    turnover: float
    exposure: float
    trades: int
    fills: int
    commission: float
    final_equity: float
    bars: int
    days: float = 0.0
    annualised_note: str = ""


def drawdown(equity: FloatArray) -> FloatArray:
    """Fractional drop below the running peak at each point."""
    if equity.size == 0:
        return equity
    peak = np.maximum.accumulate(equity)
    return np.asarray(1.0 - equity / peak, dtype=np.float64)


def _max_drawdown_duration(equity: FloatArray) -> tuple[int, int]:
    """Longest stretch (start index, length in bars) spent below a previous peak."""
    if equity.size == 0:
        return 0, 0
    peak = np.maximum.accumulate(equity)
    under = equity < peak
    best_start, best_len, start = 0, 0, -1
    for i, u in enumerate(under.tolist()):
        if u and start < 0:
            start = i
        if (not u or i == len(under) - 1) and start >= 0:
            length = (i if not u else i + 1) - start
            if length > best_len:
                best_start, best_len = start, length
            start = -1
    return best_start, best_len


class Trade(msgspec.Struct, frozen=True, kw_only=True):
    """One round trip of a symbol, flat to flat; an open one (exit_ts None) is marked at the end.

    entry_price is the position's average cost, exit_price the average price of the closing
    fills (the last mark while open); pnl is net of every commission of the trip, plus the
    unrealised part at the mark while open; bars_held counts bar batches from entry to exit."""

    symbol: str
    side: Literal["long", "short"]
    entry_ts: int
    exit_ts: int | None
    entry_price: float
    exit_price: float
    quantity: float
    pnl: float
    unrealized_pnl: float = 0.0
    bars_held: int
    exit_reason: str


class SymbolSummary(msgspec.Struct, frozen=True, kw_only=True):
    """One symbol's trading: closed round trips, P&L (realised as the journal has it, plus the
    open position marked at the end), hit rate of closed trips, and the fraction of bars held."""

    symbol: str
    trades: int
    pnl: float
    realized_pnl: float
    unrealized_pnl: float
    hit_rate: float
    exposure: float


class _Trip:
    __slots__ = ("entry_price", "entry_ts", "exit_notional", "exit_quantity", "pnl", "quantity")

    def __init__(self, ts: int, pnl: float, quantity: float, entry_price: float) -> None:
        self.entry_ts, self.pnl, self.quantity = ts, pnl, quantity
        self.entry_price = entry_price
        self.exit_notional = 0.0
        self.exit_quantity = 0.0


def round_trips(
    fills: Sequence[Fill],
    *,
    reasons: Mapping[str, str] | None = None,
    marks: Mapping[str, float] | None = None,
    bar_ts: Sequence[int] = (),
) -> list[Trade]:
    """Round trips of the fills in fill order (closed ones first as they close, open ones last).

    reasons: client order id -> order reason (the exit reason of a trip is its closing order's);
    marks: last price per symbol, to value open trips; bar_ts: the run's bar times, to count bars.
    """
    positions: dict[str, Position] = {}
    trips: dict[str, _Trip] = {}
    closed: list[Trade] = []
    reasons = reasons or {}
    for fill in fills:
        symbol = fill.symbol
        before = positions.get(symbol, Position(symbol=symbol))
        after = before.apply(fill)
        positions[symbol] = after
        delta = after.realized_pnl - before.realized_pnl
        ts = int(fill.ts.timestamp())
        trip = trips.get(symbol)
        if trip is None or before.quantity == 0:
            trips[symbol] = _Trip(ts, delta, abs(after.quantity), after.average_price)
            continue
        trip.pnl += delta
        if (before.quantity > 0) == (fill.signed_quantity > 0):  # adding to the position
            trip.quantity = max(trip.quantity, abs(after.quantity))
            trip.entry_price = after.average_price
            continue
        closing = min(fill.quantity, abs(before.quantity))
        trip.exit_notional += closing * fill.price
        trip.exit_quantity += closing
        flipped = after.quantity != 0 and (after.quantity > 0) != (before.quantity > 0)
        if after.quantity != 0 and not flipped:
            continue
        closed.append(
            _trade(trip, before.quantity, symbol, ts, reasons.get(fill.client_order_id, ""), bar_ts)
        )
        del trips[symbol]
        if flipped:
            trips[symbol] = _Trip(ts, 0.0, abs(after.quantity), after.average_price)
    for symbol, trip in trips.items():
        position = positions[symbol]
        mark = (marks or {}).get(symbol, position.average_price)
        unrealized = position.unrealized_pnl(mark)
        trip.pnl += unrealized
        trip.exit_notional, trip.exit_quantity = mark, 1.0
        closed.append(
            msgspec.structs.replace(
                _trade(trip, position.quantity, symbol, None, "open", bar_ts),
                unrealized_pnl=unrealized,
            )
        )
    return closed


def _trade(
    trip: _Trip,
    quantity: float,
    symbol: str,
    exit_ts: int | None,
    reason: str,
    bar_ts: Sequence[int],
) -> Trade:
    start = bisect.bisect_left(bar_ts, trip.entry_ts)
    end = len(bar_ts) if exit_ts is None else bisect.bisect_left(bar_ts, exit_ts)
    return Trade(
        symbol=symbol,
        side="long" if quantity > 0 else "short",
        entry_ts=trip.entry_ts,
        exit_ts=exit_ts,
        entry_price=trip.entry_price,
        exit_price=trip.exit_notional / trip.exit_quantity if trip.exit_quantity else 0.0,
        quantity=trip.quantity,
        pnl=trip.pnl,
        bars_held=max(end - start, 0),
        exit_reason=reason,
    )


def trade_pnls(fills: Sequence[Fill]) -> list[float]:
    """Net P&L of each closed round trip, in fill order."""
    return [t.pnl for t in round_trips(fills) if t.exit_ts is not None]


def symbol_summaries(trades: Sequence[Trade], bars: int) -> list[SymbolSummary]:
    """Per-symbol totals of round trips (sorted by symbol); exposure = bars held / bars."""
    out: list[SymbolSummary] = []
    for symbol in sorted({t.symbol for t in trades}):
        mine = [t for t in trades if t.symbol == symbol]
        done = [t.pnl for t in mine if t.exit_ts is not None]
        unrealized = sum(t.unrealized_pnl for t in mine)
        pnl = sum(t.pnl for t in mine)
        out.append(
            SymbolSummary(
                symbol=symbol,
                trades=len(done),
                pnl=pnl,
                realized_pnl=pnl - unrealized,
                unrealized_pnl=unrealized,
                hit_rate=sum(p > 0 for p in done) / len(done) if done else 0.0,
                exposure=min(sum(t.bars_held for t in mine) / bars, 1.0) if bars else 0.0,
            )
        )
    return out


def compute_metrics(
    ts: Sequence[int] | npt.NDArray[np.int64],
    equity: Sequence[float] | FloatArray,
    *,
    fills: Sequence[Fill] = (),
    exposure: Sequence[float] | FloatArray | None = None,
    starting_equity: float | None = None,
) -> BacktestMetrics:
    """Metrics of an equity curve sampled at ts (epoch seconds); starting_equity defaults to equity[0]."""
    times = np.asarray(ts, dtype=np.int64)
    eq = np.asarray(equity, dtype=np.float64)
    if eq.size and starting_equity is not None:
        eq = np.concatenate([[starting_equity], eq])
        times = np.concatenate([[times[0]], times]) if times.size else times
    n = eq.size
    if n < 2 or eq[0] <= 0:
        return _empty(eq, len(fills))
    returns = eq[1:] / eq[:-1] - 1.0
    span_seconds = max(float(times[-1] - times[0]), 1.0)
    span_years = span_seconds / _YEAR_SECONDS
    days = span_seconds / 86_400
    per_year = returns.size / span_years
    total = float(eq[-1] / eq[0] - 1.0)
    annual = math.expm1(min(math.log1p(total) / span_years, 700.0)) if total > -1 else -1.0
    mean, std = float(returns.mean()), float(returns.std())
    sharpe = mean / std * math.sqrt(per_year) if std > 0 else 0.0
    downside = float(np.sqrt(np.mean(np.minimum(returns, 0.0) ** 2)))
    sortino = mean / downside * math.sqrt(per_year) if downside > 0 else 0.0
    volatility = std * math.sqrt(per_year)
    note = ""
    if days < MIN_ANNUALISED_DAYS:
        note = f"{SAMPLE_TOO_SHORT}: {days:.1f} days of bars < {MIN_ANNUALISED_DAYS}"
        annual = volatility = sharpe = sortino = math.nan
    dd = drawdown(eq)
    _, length = _max_drawdown_duration(eq)
    bar_seconds = float(np.median(np.diff(times))) if times.size > 1 else 0.0
    pnls = trade_pnls(fills)
    wins = [p for p in pnls if p > 0]
    losses = [-p for p in pnls if p < 0]
    gross_loss = sum(losses)
    profit_factor = sum(wins) / gross_loss if gross_loss > 0 else (math.inf if wins else 0.0)
    traded = sum(abs(f.quantity * f.price) for f in fills)
    exp = np.asarray(exposure, dtype=np.float64) if exposure is not None else np.zeros(0)
    time_in_market = float(np.mean(exp > 0)) if exp.size else 0.0
    return BacktestMetrics(
        total_return=total,
        annual_return=annual,
        annual_volatility=volatility,
        sharpe=sharpe,
        sortino=sortino,
        max_drawdown=float(dd.max()),
        max_drawdown_bars=length,
        max_drawdown_seconds=round(length * bar_seconds),
        hit_rate=len(wins) / len(pnls) if pnls else 0.0,
        profit_factor=profit_factor,
        turnover=traded / float(eq.mean()),
        exposure=time_in_market,
        trades=len(pnls),
        fills=len(fills),
        commission=float(sum(f.commission for f in fills)),
        final_equity=float(eq[-1]),
        bars=int(returns.size),
        days=days,
        annualised_note=note,
    )


def _empty(eq: FloatArray, fills: int) -> BacktestMetrics:
    last = float(eq[-1]) if eq.size else 0.0
    return BacktestMetrics(
        total_return=0.0,
        annual_return=math.nan,
        annual_volatility=math.nan,
        sharpe=math.nan,
        sortino=math.nan,
        max_drawdown=0.0,
        max_drawdown_bars=0,
        max_drawdown_seconds=0,
        hit_rate=0.0,
        profit_factor=0.0,
        turnover=0.0,
        exposure=0.0,
        trades=0,
        fills=fills,
        commission=0.0,
        final_equity=last,
        bars=max(eq.size - 1, 0),
        annualised_note=f"{SAMPLE_TOO_SHORT}: fewer than 2 points",
    )
