"""Bars/s and bar-to-broker latency through the whole paper-sim pipeline at 1, 10 and 100 symbols.

feed (simulated market) -> BarStore -> rule scorer -> strategy -> risk -> journal (SQLite WAL) -> paper
broker. The baseline, measured in the same run, is the pipeline's fixed floor: the same batches through
BarStore alone. Goals: >= 20,000 bars/s (issue 2) and p99 <= 5 ms at 100 symbols with the rule
scorer, also with journal synchronous=full (issue 16). Each symbol count runs with both journal
modes, alternating, in one run; repeats until two runs agree within 10% on the full-mode p99 at the
largest symbol count. At the largest count it prints a stage table (venue = the paper venue matching
the bars, intake = validation/store/book/risk state, windows, score, decide = strategy + risk, journal
= the write-ahead commit, submit = the paper venue taking the orders, after = what follows once the orders are out),
per batch in wall time, in the pipeline thread's CPU time and in its run delay (runnable but
waiting for a CPU), and the order path per order split into CPU, run delay and blocked (locks, the
GIL, fsync), and the batches at or above the p99 against all. --paced stands for bars seconds apart, as live: before each batch, untimed, the journal's writer commits the previous one and the journal's
and the venue's background checkpoints run their pass (as they do every second); without it
batches follow at once, the writer competes with the next batch and the WALs only grow.
Each run ends with the disk's fdatasync of one 4 KB page overwritten in place (what a commit under
synchronous=full waits for at least, the journal's WAL being reused in place) measured beside it: the
floor under the full-mode order latency, and most of its tail.
--realtime runs each journal mode twice in turn, the second (`<mode>_rt`) with the order path at
real-time priority (daemon/runtime.py OrderPathPriority).
Journal modes: normal, full, and normal_process / full_process with the journal's process writer.
Each symbol count runs at least --min-batches timed batches (1,200; --bars alone gave 600 at 100
symbols): the p99 per order is the slowest 1% of the batches weighted by their orders, a dozen
batches at 1,200 rather than six, which one CPU spike moved by a millisecond.
Usage: python bench/bench_pipeline.py [--bars N] [--min-batches N] [--symbols 1,10,100]
    [--synchronous normal,full] [--paced] [--realtime]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from harness import Session, quick

from daemon.execution.paper import PaperExecution
from daemon.journal import Journal
from daemon.latency import StageClock
from daemon.log_setup import configure_logging
from daemon.pipeline import ORDER_PATH_STAGES, Pipeline
from daemon.runtime import OrderPathPriority, tune_gc
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
        symbols=tuple(f"S{i:03d}" for i in range(symbols)), seed=3, pattern_rate=0.03
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
    batches: list[list[Bar]],
    workdir: Path,
    synchronous: str,
    *,
    paced: bool = False,
    realtime: bool = False,
    before_batch: Callable[[int], None] | None = None,
) -> tuple[float, Pipeline, list[int]]:
    """bars/s, the pipeline with its latency figures and each timed batch's order count. paced: before each batch, untimed, what
    a gap of seconds between live bars does: the journal's writer commits the previous batch and
    both WAL checkpoints run; otherwise batches follow each other at once and the writer works
    during the next batch. realtime: the order path at real-time priority (Pipeline.priority).
    before_batch(j): called untimed before the j-th timed batch (bench_order_path_arms.py)."""
    # "full_process": synchronous full with the journal's process writer (daemon/journal_process.py)
    synchronous, _, writer = synchronous.partition("_")
    journal = Journal(
        workdir / "journal.sqlite", synchronous=synchronous, writer=writer or "thread"
    )  # type: ignore[arg-type]
    journal.open()
    with PaperExecution(config=SimBrokerConfig(), path=workdir / "venue.sqlite") as venue:
        pipeline = Pipeline(
            store=BarStore(config=BarStoreConfig(window=WINDOW)),
            scorer=RuleScorer(config=RuleScorerConfig()),
            strategy=TargetStrategy(config=StrategyConfig(position_notional=2_000, hold_bars=5)),
            risk=RiskEngine(
                config=RiskConfig(
                    # No loss limits: the simulated bars lose money, and the default daily loss
                    # (5,000) halted trading part-way, after which only position-reducing orders
                    # (and a log line per refused intent) made the order latencies.
                    max_daily_loss=None,
                    max_drawdown=None,
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
        pipeline.priority = OrderPathPriority(enabled=realtime)
        pipeline.latency.reset()
        # A fresh clock that also reads each lap's run delay (the daemon's does not).
        pipeline.stage_clock = StageClock(pipeline.stage_clock.names, run_delay=True)
        n, elapsed = 0, 0.0
        orders: list[int] = []
        for j, batch in enumerate(batches[warm:]):
            if before_batch is not None:
                before_batch(j)
            if paced:
                journal.flush()
                journal.checkpoint()
                venue.checkpoint()
            started = time.perf_counter()
            orders.append(len(await pipeline.on_bars(batch)))
            elapsed += time.perf_counter() - started
            n += len(batch)
    journal.close()
    return n / elapsed, pipeline, orders


def fsync_floor(workdir: Path, samples: int = 200) -> tuple[float, float]:
    """p50 and p99 ms of fdatasync after overwriting one 4 KB page of a file in place."""
    path = workdir / "fsync.probe"
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC)
    try:
        os.write(fd, b"\0" * (4096 * 16))
        os.fsync(fd)
        laps = np.empty(samples)
        for i in range(samples):
            os.pwrite(fd, os.urandom(4096), (i % 16) * 4096)
            started = time.perf_counter()
            os.fdatasync(fd)
            laps[i] = time.perf_counter() - started
    finally:
        os.close(fd)
    p50, p99 = np.percentile(laps, [50, 99]) * 1000.0
    return float(p50), float(p99)


def stage_table(
    results: dict[str, Pipeline], orders: dict[str, list[int]], symbols: int
) -> dict[str, float]:
    """Per-batch p50/p99 of each order-path stage: wall time, the pipeline thread's CPU time and
    its run delay (runnable, waiting for a CPU: other processes' share of a busy machine); the
    journal modes side by side; then per order (each batch's laps counted once per order it
    sent: the batches that make the order latency); then the order path per order split into
    cpu + run delay + blocked (the rest of wall: locks, the GIL, fsync); returns figures."""
    modes = list(results)
    head = "".join(f" {m + ' p50':>11} {m + ' p99':>11}" for m in modes)
    figures: dict[str, float] = {}
    kinds = {"wall": "", "cpu": "_cpu", "delay": "_delay"}
    for kind, per_order in [(k, False) for k in kinds] + [("wall", True), ("cpu", True)]:
        unit = "per order" if per_order else "per batch"
        print(f"  stages at {symbols} symbols, {kind} ms {unit}:\n  {'stage':<8}{head}")
        for stage in ORDER_PATH_STAGES:
            cells = ""
            for mode, pipeline in results.items():
                laps = _laps(pipeline, kind, stage)
                if per_order:
                    laps = np.repeat(laps, orders[mode])
                p50, p99 = _percentiles(laps)
                suffix = kinds[kind] + ("_per_order" if per_order else "")
                figures[f"{mode}_{symbols}_{stage}{suffix}_p50_ms"] = p50
                figures[f"{mode}_{symbols}_{stage}{suffix}_p99_ms"] = p99
                cells += f" {p50:>11.3f} {p99:>11.3f}"
            print(f"  {stage:<8}{cells}")
    print(
        f"  order path at {symbols} symbols (arrival to broker), ms per order:\n  {'part':<8}{head}"
    )
    to_broker = [s for s in ORDER_PATH_STAGES if s != "after"]
    parts: dict[str, dict[str, np.ndarray]] = {}
    for mode, pipeline in results.items():
        wall, cpu, delay = (
            sum(_laps(pipeline, kind, stage) for stage in to_broker) for kind in kinds
        )
        split = {"wall": wall, "cpu": cpu, "delay": delay, "blocked": wall - cpu - delay}
        parts[mode] = {k: np.repeat(v, orders[mode]) for k, v in split.items()}
    for part in ("wall", "cpu", "delay", "blocked"):
        cells = ""
        for mode in modes:
            p50, p99 = _percentiles(parts[mode][part])
            figures[f"{mode}_{symbols}_order_path_{part}_p50_ms"] = p50
            figures[f"{mode}_{symbols}_order_path_{part}_p99_ms"] = p99
            cells += f" {p50:>11.3f} {p99:>11.3f}"
        print(f"  {part:<8}{cells}")
    figures |= tail_table(results, orders, symbols)
    return figures


def tail_table(
    results: dict[str, Pipeline], orders: dict[str, list[int]], symbols: int
) -> dict[str, float]:
    """What the batches that make the p99 per order are made of: those at or above it (weighted by
    their orders) against all batches: their orders, their order path split into CPU, run delay
    and blocked, and `slower`, the median over the stages of each stage's CPU over its median
    (1.0: as usual; 1.4 everywhere: the whole batch ran slower, not more work in one stage)."""
    to_broker = [s for s in ORDER_PATH_STAGES if s != "after"]
    head = "".join(f" {m + ' tail':>11} {m + ' all':>11}" for m in results)
    print(
        f"  batches at or above the p99 at {symbols} symbols, mean per batch:\n  {'part':<8}{head}"
    )
    rows: dict[str, str] = {}
    figures: dict[str, float] = {}
    for mode, pipeline in results.items():
        counts = np.asarray(orders[mode])
        split: dict[str, np.ndarray] = {
            k: np.sum([_laps(pipeline, k, s) for s in to_broker], axis=0)
            for k in ("wall", "cpu", "delay")
        }
        split["blocked"] = split["wall"] - split["cpu"] - split["delay"]
        p99 = _percentiles(np.repeat(split["wall"], counts))[1]
        tail: np.ndarray = split["wall"] >= p99
        cpu = np.array([_laps(pipeline, "cpu", s) for s in to_broker])
        slower = np.median(cpu / np.maximum(np.median(cpu, axis=1, keepdims=True), 1e-9), axis=0)
        parts = {"batches": tail.astype(float), "orders": counts, **split, "slower": slower}
        for part, values in parts.items():
            everywhere = float(values.size) if part == "batches" else values.mean()
            mine = values.sum() if part == "batches" else values[tail].mean()
            figures[f"{mode}_{symbols}_tail_{part}"] = float(mine)
            rows[part] = rows.get(part, "") + f" {mine:>11.2f} {everywhere:>11.2f}"
    for part, cells in rows.items():
        print(f"  {part:<8}{cells}")
    return figures


def _laps(pipeline: Pipeline, kind: str, stage: str) -> np.ndarray:
    """One stage's per-batch laps in ms (zeros where the kernel reports no run delay)."""
    clock = pipeline.stage_clock
    recorders = {"wall": clock.stages, "cpu": clock.cpu_stages, "delay": clock.delay_stages}
    laps: np.ndarray = recorders[kind][stage].samples() * 1000.0
    if kind == "delay" and laps.size == 0:
        return np.zeros(clock.stages[stage].count)
    return laps


def _percentiles(laps: np.ndarray) -> tuple[float, float]:
    if not laps.size:
        return 0.0, 0.0
    p50, p99 = np.percentile(laps, [50, 99])
    return float(p50), float(p99)


def measure(
    symbol_counts: list[int],
    modes: list[str],
    bars: int,
    *,
    paced: bool = False,
    realtime: bool = False,
    min_batches: int = 50,
) -> dict[str, float]:
    """One run: every symbol count with every journal mode (and each again with the order path
    at real-time priority, `<mode>_rt`, when realtime); prints the table, returns figures."""
    arms = [(mode, rt) for mode in modes for rt in ((False, True) if realtime else (False,))]
    print(
        f"{'symbols':>7} {'journal':>7} {'bars/s':>10} {'baseline':>10} {'ratio':>6} "
        f"{'orders':>7} {'p50 ms':>7} {'p99 ms':>7} {'batches':>7}"
    )
    figures: dict[str, float] = {}
    for symbols in symbol_counts:
        n_batches = max(min_batches, bars // symbols) + WINDOW
        batches = make_batches(symbols, n_batches)
        floor = baseline(batches)
        results: dict[str, Pipeline] = {}
        orders: dict[str, list[int]] = {}
        for journal_mode, rt in arms:
            mode = journal_mode + ("_rt" if rt else "")
            with tempfile.TemporaryDirectory() as tmp:
                rate, pipeline, orders[mode] = asyncio.run(
                    run_pipeline(batches, Path(tmp), journal_mode, paced=paced, realtime=rt)
                )
            p50 = pipeline.latency.percentile_ms(50) or float("nan")
            p99 = pipeline.latency.percentile_ms(99) or float("nan")
            print(
                f"{symbols:>7} {mode:>7} {rate:>10,.0f} {floor:>10,.0f} {rate / floor:>6.2f} "
                f"{pipeline.latency.count:>7} {p50:>7.3f} {p99:>7.3f} {n_batches - WINDOW:>7}"
            )
            figures[f"{mode}_{symbols}_bars_per_s"] = rate
            figures[f"{mode}_{symbols}_p50_ms"] = p50
            figures[f"{mode}_{symbols}_p99_ms"] = p99
            results[mode] = pipeline
        figures[f"baseline_{symbols}_bars_per_s"] = floor
        if symbols == symbol_counts[-1]:
            figures |= stage_table(results, orders, symbols)
    with tempfile.TemporaryDirectory() as tmp:
        figures["fsync_p50_ms"], figures["fsync_p99_ms"] = fsync_floor(Path(tmp))
    print(
        f"  fdatasync, 4 KB in place: p50 {figures['fsync_p50_ms']:.3f} ms, "
        f"p99 {figures['fsync_p99_ms']:.3f} ms"
    )
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--bars",
        type=int,
        default=15_000 if quick() else 60_000,
        help="bars per run (spread over the symbols)",
    )
    parser.add_argument(
        "--min-batches",
        type=int,
        default=150 if quick() else 1200,
        help="timed batches at least per symbol count (the p99 reads the slowest 1%% of them)",
    )
    parser.add_argument("--symbols", default="10,100" if quick() else "1,10,100")
    parser.add_argument("--synchronous", default="normal,full", help="journal modes to run")
    parser.add_argument(
        "--paced",
        action="store_true",
        help="each batch after the journal writer and both WAL checkpoints ran (bars seconds apart)",
    )
    parser.add_argument(
        "--realtime",
        action="store_true",
        help="each journal mode also with the order path at real-time priority (needs root or "
        "RLIMIT_RTPRIO >= 1; refused: one line, normal priority)",
    )
    args = parser.parse_args()
    modes = args.synchronous.split(",")
    if not set(modes) <= {"normal", "full", "normal_process", "full_process"}:
        parser.error(
            f"--synchronous takes normal and/or full (each also as <mode>_process: the journal's "
            f"process writer), got {args.synchronous!r}"
        )
    configure_logging(
        level="info", fmt="json", stream=io.StringIO()
    )  # render logs, as the daemon does
    symbol_counts = [int(s) for s in args.symbols.split(",")]
    with Session("pipeline") as bench:
        bench.until_stable(
            lambda: measure(
                symbol_counts,
                modes,
                args.bars,
                paced=args.paced,
                realtime=args.realtime,
                min_batches=args.min_batches,
            ),
            key=f"{modes[-1]}_{symbol_counts[-1]}_p99_ms",
            prefix="paced_" if args.paced else "",
        )


if __name__ == "__main__":
    main()
