"""Several scorers and buy-and-hold on the same bars, costs and period, in one call."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime

import msgspec

from strategy.backtest.engine import (
    BacktestConfig,
    BacktestEngine,
    BacktestRun,
    JournalSink,
    LookupScorer,
)
from strategy.backtest.metrics import BacktestMetrics, compute_metrics
from strategy.scoring import Scorer
from strategy.sim_broker import SimBrokerConfig
from strategy.types import Bar

BUY_AND_HOLD = "buy_and_hold"


class StrategyResult(msgspec.Struct, kw_only=True):
    """One contender's run and its metrics."""

    name: str
    run: BacktestRun
    metrics: BacktestMetrics


def buy_and_hold(
    batches: Sequence[Sequence[Bar]],
    *,
    starting_cash: float,
    broker: SimBrokerConfig,
    trade_from: datetime | None = None,
) -> BacktestRun:
    """Equal cash per symbol bought at the first traded close (paying spread, slippage, commission), then held."""
    run = BacktestRun(name=BUY_AND_HOLD)
    symbols = sorted({b.symbol for batch in batches for b in batch})
    if not symbols:
        return run
    cost = (broker.spread_bps / 2 + broker.slippage_bps) / 10_000
    holdings: dict[str, float] = {}
    last: dict[str, float] = {}
    cash = starting_cash
    budget = starting_cash / len(symbols)
    for batch in batches:
        if not batch:
            continue
        for bar in batch:
            last[bar.symbol] = bar.close
        if trade_from is not None and batch[0].ts < trade_from:
            continue
        for bar in batch:
            if bar.symbol not in holdings:
                price = bar.close * (1 + cost)
                quantity = float(math.floor(budget / price))
                fee = min(
                    max(broker.min_commission, broker.commission_per_share * quantity),
                    broker.max_commission_fraction * quantity * price,
                )
                holdings[bar.symbol] = quantity
                cash -= quantity * price + fee
        value = sum(q * last[s] for s, q in holdings.items())
        run.ts.append(int(batch[0].ts.timestamp()))
        run.equity.append(cash + value)
        run.exposure.append(value)
    return run


def run_comparison(
    batches: Sequence[Sequence[Bar]],
    scorers: Mapping[str, Scorer | LookupScorer],
    config: BacktestConfig,
    *,
    trade_from: datetime | None = None,
    journal_for: Callable[[str], JournalSink | None] | None = None,
    progress: Callable[[int], None] | None = None,
    include_buy_and_hold: bool = True,
) -> dict[str, StrategyResult]:
    """Run each scorer through the live stages, plus buy-and-hold; metrics over the traded period."""
    results: dict[str, StrategyResult] = {}
    for name, scorer in scorers.items():
        engine = BacktestEngine(
            config=config,
            scorer=scorer,
            journal=journal_for(name) if journal_for is not None else None,
            name=name,
        )
        run = engine.run_batches(batches, trade_from=trade_from, progress=progress)
        results[name] = StrategyResult(
            name=name,
            run=run,
            metrics=compute_metrics(
                run.ts,
                run.equity,
                fills=run.fills,
                exposure=run.exposure,
                starting_equity=config.starting_cash,
            ),
        )
    if include_buy_and_hold:
        run = buy_and_hold(
            batches,
            starting_cash=config.starting_cash,
            broker=config.broker,
            trade_from=trade_from,
        )
        results[BUY_AND_HOLD] = StrategyResult(
            name=BUY_AND_HOLD,
            run=run,
            metrics=compute_metrics(
                run.ts, run.equity, exposure=run.exposure, starting_equity=config.starting_cash
            ),
        )
    return results
