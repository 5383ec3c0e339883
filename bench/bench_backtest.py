"""Backtest throughput: event-driven bars/s once scores exist, against a baseline measured in the same run.

Prints: the baseline (BarStore + Book marks only), the event-driven loop (strategy, risk, simulated
broker; without a journal, and with the daemon's write-ahead journal under synchronous normal and
full) for precomputed rule scores and for an SMA-cross scorer, and scoring throughput of the
features + XGBoost scorer. The same SMA cross against NautilusTrader, measured in one run, is
bench/bench_nautilus.py.

    .venv/bin/python bench/bench_backtest.py [--bars 20000] [--symbols 4]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from harness import Session, quick
from sma_cross import SmaCross

from daemon.journal import Journal
from strategy.backtest.data import build_dataset, frame_batches, precompute_signals
from strategy.backtest.engine import BacktestConfig, BacktestEngine
from strategy.bars import BarStore, BarStoreConfig
from strategy.book import Book
from strategy.features import FeatureConfig, FeatureEngine
from strategy.fusion import FusionConfig, FusionEngine
from strategy.market_sim import SimMarketConfig, simulate_frame
from strategy.ml_scorer import MLScorer
from strategy.risk import RiskConfig
from strategy.rule_scorer import RuleScorer, RuleScorerConfig
from strategy.target_strategy import StrategyConfig
from vlm_engine.xgb import XgbTrainConfig, train_xgb

START = datetime(2024, 1, 1, tzinfo=UTC)


def _baseline(batches, store_cfg) -> float:
    store, book = BarStore(config=store_cfg), Book(starting_cash=100_000.0)
    t = time.perf_counter()
    for batch in batches:
        for bar in batch:
            if store.add(bar) is None:
                book.mark(bar)
    return time.perf_counter() - t


def _loop(batches, cfg, scorer, journal=None) -> tuple[float, int]:
    engine = BacktestEngine(config=cfg, scorer=scorer, journal=journal)
    t = time.perf_counter()
    run = engine.run_batches(batches)
    if journal is not None:
        journal.flush()  # the group-committing writer's last commit counts too
    return time.perf_counter() - t, len(run.orders)


def measure(batches, cfg, store) -> dict[str, float]:
    """One run of the event-driven loop, with and without the journal; prints, returns figures."""
    n = sum(len(b) for b in batches)
    base = _baseline(batches, store)
    print(f"baseline (BarStore + Book.mark only): {n / base:,.0f} bars/s")
    figures = {"baseline_bars_per_s": n / base}
    t = time.perf_counter()
    rules = precompute_signals(RuleScorer(config=RuleScorerConfig()), batches, store)
    figures["rule_scoring_bars_per_s"] = n / (time.perf_counter() - t)
    print(
        f"rule scoring, batched ahead of the loop: {figures['rule_scoring_bars_per_s']:,.0f} bars/s"
    )
    sma = precompute_signals(SmaCross(), batches, store)
    for name, scorer in (("rules", rules), ("sma_cross", sma)):
        seconds, orders = _loop(batches, cfg, scorer)
        seconds_plain = seconds
        figures[f"{name}_bars_per_s"] = n / seconds
        print(
            f"event-driven {name:9s}: {n / seconds:,.0f} bars/s  ({orders} orders)  "
            f"ratio to baseline {base / seconds:.2f}"
        )
        for synchronous in ("normal", "full"):
            with (
                tempfile.TemporaryDirectory() as d,
                Journal(Path(d) / "j.sqlite", synchronous=synchronous) as journal,
            ):
                seconds, _ = _loop(batches, cfg, scorer, journal)
            figures[f"{name}_journal_{synchronous}_bars_per_s"] = n / seconds
            print(
                f"event-driven {name:9s} + write-ahead journal (as live), synchronous "
                f"{synchronous}: {n / seconds:,.0f} bars/s  ratio to no journal "
                f"{seconds_plain / seconds:.2f}"
            )
    return figures


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--bars", type=int, default=4_000 if quick() else 20_000, help="bars per symbol"
    )
    parser.add_argument("--symbols", type=int, default=4)
    args = parser.parse_args()
    market = SimMarketConfig(symbols=tuple(f"S{i}" for i in range(args.symbols)), seed=1)
    batches = frame_batches(simulate_frame(market, START, args.bars))
    n = sum(len(b) for b in batches)
    store = BarStoreConfig(window=64)
    cfg = BacktestConfig(
        bars=store,
        strategy=StrategyConfig(min_confidence=0.0),
        risk=RiskConfig(max_drawdown=None, max_daily_loss=None, max_orders_per_minute=None),
    )
    print(f"bars: {n} ({args.symbols} symbols x {args.bars})")
    with Session("backtest") as bench:
        bench.until_stable(lambda: measure(batches, cfg, store), key="sma_cross_bars_per_s")
        ml_scoring(batches, cfg, store, bench)


def ml_scoring(batches, cfg, store, bench: Session) -> None:
    """Features + XGBoost scoring throughput (the model trained once, the scoring repeated)."""
    small = batches[: min(len(batches), 6000)]
    fe = FeatureEngine(config=FeatureConfig())
    ds = build_dataset(small, store, fe, horizon=5)
    m = ds.labelled()
    model = train_xgb(
        ds.x[m],
        ds.y[m],
        ts=ds.ts[m],
        label_end=ds.label_end[m],
        feature_names=ds.feature_names,
        config=XgbTrainConfig(n_folds=2, num_boost_round=100),
        bar_seconds=60,
        horizon_bars=5,
    ).model
    scorer = MLScorer(
        features=fe, fusion=FusionEngine(config=FusionConfig()), xgb=model, mode="xgb"
    )
    n_small = sum(len(b) for b in small)
    n_live = sum(len(b) for b in small[:1500])

    def measure_scoring() -> dict[str, float]:
        t = time.perf_counter()
        precompute_signals(scorer, small, store)
        batched = n_small / (time.perf_counter() - t)
        print(
            f"features + XGBoost scoring, batched: {batched:,.0f} bars/s "
            "(CLIP rendering/inference not included)"
        )
        t = time.perf_counter()
        BacktestEngine(config=cfg, scorer=scorer).run_batches(small[:1500])
        in_loop = n_live / (time.perf_counter() - t)
        print(f"features + XGBoost scoring, bar by bar in the loop: {in_loop:,.0f} bars/s")
        return {
            "xgb_scoring_batched_bars_per_s": batched,
            "xgb_scoring_in_loop_bars_per_s": in_loop,
        }

    bench.until_stable(measure_scoring, key="xgb_scoring_in_loop_bars_per_s")


if __name__ == "__main__":
    main()
