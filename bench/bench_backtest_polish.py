"""`vlmtrader backtest`'s warm-path costs, each arm against its peer in the same run.

gc:      the whole `vlmtrader backtest` (rules, no bundle) on a simulated bars file, with tune_gc()
         once warm (as it runs now) and with it switched off; each run a fresh process (the
         collector's settings are process-wide), the arms interleaved; CPU seconds of the run
         (bars loaded -> report written) measured inside the process.
windows: iter_windows (one add_batch per batch) against the one-by-one add()+window() loop it
         replaced, on the same batches, interleaved in one process; the windows are checked equal.
Prints medians, after/before ratios and the load average.

    python bench/bench_backtest_polish.py [--bars 6000] [--symbols 4] [--runs 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from harness import Session, load_line

from strategy.backtest.data import frame_batches, iter_windows
from strategy.bars import BarStore, BarStoreConfig, Window
from strategy.market_sim import SimMarketConfig, simulate_frame
from strategy.types import Bar

REPO = Path(__file__).resolve().parents[1]
START = datetime(2024, 1, 1, tzinfo=UTC)

# One backtest in a fresh interpreter; argv: config, bars, report, "on"/"off" (tune_gc).
_ONE_RUN = """
import json, sys, time
import daemon.backtest
if sys.argv[4] == "off":
    daemon.backtest.tune_gc = lambda: None
from daemon.cli import backtest
cpu, wall = time.process_time(), time.perf_counter()
code = backtest.main(["backtest", "--config", sys.argv[1], "--bars", sys.argv[2],
                      "--report", sys.argv[3], "--no-progress"])
print("run:" + json.dumps([code, time.process_time() - cpu, time.perf_counter() - wall]))
"""


def gc_arms(bars: Path, config: Path, report: Path, runs: int) -> dict[str, float]:
    cpu: dict[str, list[float]] = {"off": [], "on": []}
    for i in range(runs):
        for arm in ("off", "on"):
            done = subprocess.run(
                [sys.executable, "-c", _ONE_RUN, str(config), str(bars), str(report), arm],
                cwd=REPO,
                capture_output=True,
                text=True,
                check=True,
            )
            line = next(x for x in done.stdout.splitlines() if x.startswith("run:"))
            code, seconds, wall = json.loads(line.removeprefix("run:"))
            assert code == 0, done.stderr[-2000:]
            cpu[arm].append(seconds)
            print(
                f"# gc run {i + 1} tune_gc {arm:<3} cpu {seconds:.3f} s wall {wall:.3f} s  {load_line()}"
            )
    off, on = statistics.median(cpu["off"]), statistics.median(cpu["on"])
    print(
        f"backtest CPU s (median of {runs}): tune_gc off {off:.3f}, on {on:.3f}, on/off {on / off:.3f}"
    )
    return {"backtest_cpu_s_gc_off": off, "backtest_cpu_s_gc_on": on, "gc_on_over_off": on / off}


def _one_by_one(batches: Sequence[Sequence[Bar]], config: BarStoreConfig) -> list[Window]:
    """The loop iter_windows ran before add_batch served it (the peer)."""
    store = BarStore(config=config)
    out: list[Window] = []
    for batch in batches:
        for bar in batch:
            if store.add(bar) is None and (window := store.window(bar.symbol)) is not None:
                out.append(window)
    return out


def window_arms(batches: list[list[Bar]], config: BarStoreConfig, runs: int) -> dict[str, float]:
    seconds: dict[str, list[float]] = {"one_by_one": [], "batched": []}
    for _ in range(runs):
        start = time.process_time()
        before = _one_by_one(batches, config)
        seconds["one_by_one"].append(time.process_time() - start)
        start = time.process_time()
        after = [w for chunk in iter_windows(batches, config) for w in chunk]
        seconds["batched"].append(time.process_time() - start)
        assert [w.close.tolist() for w in after] == [w.close.tolist() for w in before]
    old, new = statistics.median(seconds["one_by_one"]), statistics.median(seconds["batched"])
    print(
        f"iter_windows CPU s (median of {runs}): one by one {old:.3f}, batched {new:.3f}, "
        f"batched/one by one {new / old:.3f}  {load_line()}"
    )
    return {
        "windows_cpu_s_one_by_one": old,
        "windows_cpu_s_batched": new,
        "windows_ratio": new / old,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bars", type=int, default=6000, help="bars per symbol")
    parser.add_argument("--symbols", type=int, default=4)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    market = SimMarketConfig(symbols=tuple(f"S{i}" for i in range(args.symbols)), seed=5)
    frame = simulate_frame(market, START, args.bars).drop(columns=["pattern", "direction"])
    with Session("backtest_polish") as bench, tempfile.TemporaryDirectory() as tmp:
        bars = Path(tmp) / "bars.csv"
        frame.to_csv(bars, index=False)
        config = Path(tmp) / "cfg.yaml"
        config.write_text("bars:\n  window: 40\n")
        store = BarStoreConfig(window=40, bar_seconds=market.bar_seconds)
        bench.add(**window_arms(frame_batches(frame), store, args.runs))
        bench.add(**gc_arms(bars, config, Path(tmp) / "report", args.runs))


if __name__ == "__main__":
    main()
