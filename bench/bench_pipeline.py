"""Bars/s and bar-to-broker latency through the whole paper-sim pipeline at 1, 10 and 100 symbols.

feed (simulated market) -> BarStore -> rule scorer -> strategy -> risk -> journal (SQLite WAL) -> paper
broker. The baseline, measured in the same run, is the pipeline's fixed floor: the same batches through
BarStore alone. Goals (issue 2): >= 20,000 bars/s and p99 <= 5 ms at 100 symbols with the rule scorer.
Usage: python bench/bench_pipeline.py [--bars N] [--symbols 1,10,100] [--synchronous normal|full]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from daemon.execution.paper import PaperExecution
from daemon.journal import Journal
from daemon.log_setup import configure_logging
from daemon.pipeline import Pipeline
from daemon.runtime import tune_gc
from strategy.bars import BarStore, BarStoreConfig
from strategy.book import Book
from strategy.market_sim import MarketSimulator, SimMarketConfig
from strategy.risk import RiskConfig, RiskEngine
from strategy.rule_scorer import RuleScorer, RuleScorerConfig
from strategy.sim_broker import SimBrokerConfig
from strategy.target_strategy import StrategyConfig, TargetStrategy
from strategy.types import Bar

START = datetime(2026, 1, 5, 14, 30, tzinfo=UTC)
WINDOW = 64


def make_batches(symbols: int, n_batches: int) -> list[list[Bar]]:
    market = SimMarketConfig(
        symbols=[f"S{i:03d}" for i in range(symbols)], seed=3, pattern_rate=0.03
    )
    sim = MarketSimulator(config=market, start=START)
    return [sim.next_batch() for _ in range(n_batches)]


def baseline(batches: list[list[Bar]]) -> float:
    """Bars/s of the floor: BarStore validation and windowing only."""
    store = BarStore(config=BarStoreConfig(window=WINDOW))
    started = time.perf_counter()
    n = 0
    for batch in batches:
        for bar in batch:
            store.add(bar)
            store.window(bar.symbol)
        n += len(batch)
    return n / (time.perf_counter() - started)


async def run_pipeline(
    batches: list[list[Bar]], workdir: Path, synchronous: str
) -> tuple[float, Pipeline]:
    journal = Journal(workdir / "journal.sqlite", synchronous=synchronous)  # type: ignore[arg-type]
    journal.open()
    with PaperExecution(config=SimBrokerConfig(), path=workdir / "venue.sqlite") as venue:
        pipeline = Pipeline(
            store=BarStore(config=BarStoreConfig(window=WINDOW)),
            scorer=RuleScorer(config=RuleScorerConfig()),
            strategy=TargetStrategy(config=StrategyConfig(position_notional=2_000, hold_bars=5)),
            risk=RiskEngine(
                config=RiskConfig(
                    max_gross_exposure=10_000_000,
                    max_orders_per_minute=100_000,
                    max_open_orders=100_000,
                )
            ),
            book=Book(starting_cash=10_000_000),
            journal=journal,
            execution=venue,
        )
        warm = WINDOW
        for batch in batches[:warm]:
            await pipeline.on_bars(batch)
        tune_gc()  # as the daemon does once it is warm
        pipeline.latency.reset()
        started = time.perf_counter()
        n = 0
        for batch in batches[warm:]:
            await pipeline.on_bars(batch)
            n += len(batch)
        elapsed = time.perf_counter() - started
    journal.close()
    return n / elapsed, pipeline


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--bars", type=int, default=60_000, help="bars per run (spread over the symbols)"
    )
    parser.add_argument("--symbols", default="1,10,100")
    parser.add_argument("--synchronous", choices=["normal", "full"], default="normal")
    args = parser.parse_args()
    configure_logging(
        level="info", fmt="json", stream=io.StringIO()
    )  # render logs, as the daemon does

    print(
        f"{'symbols':>7} {'bars/s':>10} {'baseline':>10} {'ratio':>6} {'orders':>7} "
        f"{'p50 ms':>7} {'p99 ms':>7}  (journal synchronous={args.synchronous})"
    )
    for symbols in (int(s) for s in args.symbols.split(",")):
        n_batches = max(WINDOW + 50, args.bars // symbols + WINDOW)
        batches = make_batches(symbols, n_batches)
        floor = baseline(batches)
        with tempfile.TemporaryDirectory() as tmp:
            rate, pipeline = asyncio.run(run_pipeline(batches, Path(tmp), args.synchronous))
        p50 = pipeline.latency.percentile_ms(50)
        p99 = pipeline.latency.percentile_ms(99)
        print(
            f"{symbols:>7} {rate:>10,.0f} {floor:>10,.0f} {rate / floor:>6.2f} "
            f"{pipeline.latency.count:>7} {p50 or float('nan'):>7.3f} {p99 or float('nan'):>7.3f}"
        )


if __name__ == "__main__":
    main()
