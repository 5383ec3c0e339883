"""Several scorers and buy-and-hold on the same bars, costs, capital and sizing rule, in one call.

Each result carries what a reader needs to trust it: the round trips, per-symbol totals, the risk
rejections by reason and the trading-state changes (halts) from its run, and, for a contender that
never traded, one sentence saying why.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime

import msgspec

from strategy.backtest.engine import (
    BacktestConfig,
    BacktestEngine,
    BacktestRun,
    JournalSink,
    LookupScorer,
)
from strategy.backtest.metrics import (
    BacktestMetrics,
    SymbolSummary,
    Trade,
    compute_metrics,
    round_trips,
    symbol_summaries,
)
from strategy.risk import RiskReason
from strategy.scoring import Scorer
from strategy.types import Bar, Signal, TradingState
from vlm_engine.shards import TaskMap

BUY_AND_HOLD = "buy_and_hold"


class StrategyResult(msgspec.Struct, kw_only=True):
    """One contender's run, its metrics, round trips and per-symbol totals, and why it made no
    trade (None when it traded)."""

    name: str
    run: BacktestRun
    metrics: BacktestMetrics
    trades: list[Trade] = msgspec.field(default_factory=list)
    symbols: list[SymbolSummary] = msgspec.field(default_factory=list)
    no_trade_reason: str | None = None


class AlwaysLong:
    """Buy-and-hold as a lookup scorer: a sure long signal on every bar, so the strategy enters
    once, sized by its own rule, and every confirming signal restarts the hold (never exits)."""

    def __init__(self) -> None:
        self.name = BUY_AND_HOLD
        self._stamp: tuple[int, datetime] = (0, datetime.fromtimestamp(0, tz=UTC))

    def lookup(self, symbol: str, ts: int) -> Signal:
        if self._stamp[0] != ts:
            self._stamp = (ts, datetime.fromtimestamp(ts, tz=UTC))
        return Signal(symbol=symbol, ts=self._stamp[1], p_up=1.0, confidence=1.0, scorer=self.name)


def buy_and_hold(
    batches: Sequence[Sequence[Bar]],
    config: BacktestConfig,
    *,
    trade_from: datetime | None = None,
) -> BacktestRun:
    """Each symbol bought once, with the strategies' capital, sizing rule, risk limits and costs
    (filled by the simulated broker like theirs), then held to the end."""
    engine = BacktestEngine(config=config, scorer=AlwaysLong(), name=BUY_AND_HOLD)
    return engine.run_batches(batches, trade_from=trade_from)


def strategy_result(name: str, run: BacktestRun, config: BacktestConfig) -> StrategyResult:
    """Metrics, round trips, per-symbol totals and the no-trade reason of one run."""
    reasons = {o.client_order_id: o.reason for o in run.orders}
    trades = round_trips(run.fills, reasons=reasons, marks=run.last_prices, bar_ts=run.ts)
    return StrategyResult(
        name=name,
        run=run,
        metrics=compute_metrics(
            run.ts,
            run.equity,
            fills=run.fills,
            exposure=run.exposure,
            starting_equity=config.starting_cash,
        ),
        trades=trades,
        symbols=symbol_summaries(trades, len(run.ts)),
        no_trade_reason=no_trade_reason(run, config),
    )


def no_trade_reason(run: BacktestRun, config: BacktestConfig) -> str | None:
    """Why a run made no fill, in one sentence naming the setting to look at; None if it traded."""
    if run.fills:
        return None
    if not run.ts:
        return "no bars in the traded period"
    if run.signals == 0:
        return (
            f"no signals: no symbol filled its {config.bars.window}-bar window in the traded period"
        )
    strategy = config.strategy
    if run.signals_cleared == 0:
        return (
            f"signals never cleared enter_threshold {strategy.enter_threshold:g} "
            f"(needs |2p-1| >= {2 * strategy.enter_threshold - 1:.3f} with confidence >= "
            f"min_confidence {strategy.min_confidence:g}): max |2p-1| {run.max_edge:.3f}, "
            f"max confidence {run.max_confidence:.3f} over {run.signals:,} signals"
        )
    parts: list[str] = []
    halts = [c for c in run.state_changes if c.current is TradingState.HALTED]
    if halts:
        first = halts[0]
        parts.append(f"halted at {first.ts.isoformat()} ({first.reason}: {first.detail})")
    elif run.rejections.get(RiskReason.HALTED):
        parts.append("halted before its first trade")
    sizing = sizing_note(run)
    if sizing is not None:
        parts.append(sizing)
    if run.rejections:
        parts.append("risk rejected " + _counts(run.rejections))
    if run.orders:
        parts.append(f"{len(run.orders):,} orders sent, none filled")
    if not parts:
        parts.append(
            f"{run.signals_cleared:,} signals cleared the entry rule but none became an order "
            "(short signals with allow_short false?)"
        )
    return "; ".join(parts)


def sizing_note(run: BacktestRun) -> str | None:
    """Entries skipped because their quantity rounds to 0 (whether or not the run traded)."""
    miss = run.last_sizing_miss
    if not run.sizing_misses or miss is None:
        return None
    return (
        f"quantity rounds to 0 at these prices ({run.sizing_misses:,} entries skipped; e.g. "
        f"{miss.symbol} at {miss.price:,.2f}: {miss.notional:,.2f} buys less than "
        f"quantity_step {miss.step:g}; set strategy.quantity_step, e.g. 1e-8 for crypto)"
    )


def _counts(counts: Mapping[str, int]) -> str:
    ordered = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return ", ".join(f"{reason} x{n:,}" for reason, n in ordered)


def run_comparison(
    batches: Sequence[Sequence[Bar]],
    scorers: Mapping[str, Scorer | LookupScorer],
    config: BacktestConfig,
    *,
    trade_from: datetime | None = None,
    journal_for: Callable[[str], JournalSink | None] | None = None,
    progress: Callable[[int], None] | None = None,
    include_buy_and_hold: bool = True,
    task_map: TaskMap | None = None,
) -> dict[str, StrategyResult]:
    """Run each scorer through the live stages, plus buy-and-hold; metrics over the traded period.

    task_map (no journal then) runs each contender as one independent piece of work, e.g. a Ray
    task (daemon/cluster); progress then advances by a contender's bars when it finishes."""
    if task_map is not None:
        if journal_for is not None:
            msg = "run_comparison: a journal is written in this process only (no task_map)"
            raise ValueError(msg)
        names = [*scorers, *([BUY_AND_HOLD] if include_buy_and_hold else [])]
        items = [(n, scorers.get(n)) for n in names]
        n_bars = sum(len(b) for b in batches)
        done = task_map(
            contender_result,
            items,
            shared={"batches": batches, "config": config, "trade_from": trade_from},
            desc="backtest",
            weights=[n_bars if n != BUY_AND_HOLD else 0 for n in names],
        )
        if progress is not None:
            progress(n_bars * len(scorers))
        return dict(zip(names, done, strict=True))
    results: dict[str, StrategyResult] = {}
    for name, scorer in scorers.items():
        engine = BacktestEngine(
            config=config,
            scorer=scorer,
            journal=journal_for(name) if journal_for is not None else None,
            name=name,
        )
        run = engine.run_batches(batches, trade_from=trade_from, progress=progress)
        results[name] = strategy_result(name, run, config)
    if include_buy_and_hold:
        run = buy_and_hold(batches, config, trade_from=trade_from)
        results[BUY_AND_HOLD] = strategy_result(BUY_AND_HOLD, run, config)
    return results


def contender_result(
    item: tuple[str, Scorer | LookupScorer | None],
    *,
    batches: Sequence[Sequence[Bar]],
    config: BacktestConfig,
    trade_from: datetime | None,
) -> StrategyResult:
    """One contender of run_comparison (scorer None: buy-and-hold), as one piece of work."""
    name, scorer = item
    if scorer is None:
        return strategy_result(name, buy_and_hold(batches, config, trade_from=trade_from), config)
    engine = BacktestEngine(config=config, scorer=scorer, name=name)
    return strategy_result(name, engine.run_batches(batches, trade_from=trade_from), config)
