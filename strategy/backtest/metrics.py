"""Performance metrics of an equity curve and its fills.

Returns are per bar batch; annualisation uses the bars per year observed in the curve itself
(count / span in years), so it is right for 24/7 simulated markets and exchange hours alike.
A trade is a round trip per symbol, from flat to flat (a reversal closes one and opens another);
its P&L is realised P&L net of commissions.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import msgspec
import numpy as np
import numpy.typing as npt

from strategy.types import Fill, Position

FloatArray = npt.NDArray[np.float64]
_YEAR_SECONDS = 365.25 * 86_400


class BacktestMetrics(msgspec.Struct, frozen=True, kw_only=True):
    """Return, risk and trading statistics of one run (fractions, not percent)."""

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


def trade_pnls(fills: Sequence[Fill]) -> list[float]:
    """Net P&L of each closed round trip, in fill order."""
    positions: dict[str, Position] = {}
    open_pnl: dict[str, float] = {}
    closed: list[float] = []
    for fill in fills:
        before = positions.get(fill.symbol, Position(symbol=fill.symbol))
        after = before.apply(fill)
        positions[fill.symbol] = after
        pnl = open_pnl.get(fill.symbol, 0.0) + after.realized_pnl - before.realized_pnl
        flipped = (
            before.quantity != 0
            and after.quantity != 0
            and (before.quantity > 0) != (after.quantity > 0)
        )
        if before.quantity != 0 and (after.quantity == 0 or flipped):
            closed.append(pnl)
            pnl = 0.0
        open_pnl[fill.symbol] = pnl
    return closed


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
    span_years = max(float(times[-1] - times[0]), 1.0) / _YEAR_SECONDS
    per_year = returns.size / span_years
    total = float(eq[-1] / eq[0] - 1.0)
    annual = math.expm1(min(math.log1p(total) / span_years, 700.0)) if total > -1 else -1.0
    mean, std = float(returns.mean()), float(returns.std())
    sharpe = mean / std * math.sqrt(per_year) if std > 0 else 0.0
    downside = float(np.sqrt(np.mean(np.minimum(returns, 0.0) ** 2)))
    sortino = mean / downside * math.sqrt(per_year) if downside > 0 else 0.0
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
        annual_volatility=std * math.sqrt(per_year),
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
    )


def _empty(eq: FloatArray, fills: int) -> BacktestMetrics:
    last = float(eq[-1]) if eq.size else 0.0
    return BacktestMetrics(
        total_return=0.0,
        annual_return=0.0,
        annual_volatility=0.0,
        sharpe=0.0,
        sortino=0.0,
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
    )
