"""`vlmtrader evaluate` wall time on 5 simulated series x 15 years of daily bars, with load average.

Simulated daily bars (strategy/market_sim.py, bar_seconds 86400, 252 bars a year) are written to
a Parquet file and evaluated end to end through the CLI (bundle load, CLIP on every window,
walk-forward XGBoost with and without the CLIP columns, fusion, block bootstrap, backtests,
report.json / report.html / predictions.parquet), with the quick bundle unless --bundle is given
(built first with `vlmtrader model bootstrap --quick` into a temporary directory).

    .venv/bin/python bench/bench_evaluate.py [--symbols 5] [--years 15] [--bundle DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from harness import Session

from strategy.market_sim import SimMarketConfig, simulate_frame

DAY = 86400
BARS_PER_YEAR = 252


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--symbols", type=int, default=5)
    parser.add_argument("--years", type=int, default=15)
    parser.add_argument("--bundle", type=Path, help="bundle directory (default: a quick one)")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)
    from daemon.cli import main as cli

    work = Path(tempfile.mkdtemp(prefix="bench-evaluate-"))
    bundle = args.bundle
    if bundle is None:
        bundle = work / "bundle"
        t0 = time.perf_counter()
        cli(["model", "bootstrap", "--quick", "--out", str(bundle)])
        print(f"quick bundle built in {time.perf_counter() - t0:.1f} s")
    symbols = tuple(f"S{i}" for i in range(args.symbols))
    n_bars = args.years * BARS_PER_YEAR
    market = SimMarketConfig(symbols=symbols, bar_seconds=DAY, seed=11)
    frame = simulate_frame(market, datetime(2005, 1, 3, tzinfo=UTC), n_bars)
    bars = work / "daily.parquet"
    frame[["symbol", "ts", "open", "high", "low", "close", "volume"]].to_parquet(bars)
    with Session("evaluate", max_runs=3) as bench:
        bench.until_stable(
            lambda: measure(args, bars, bundle, work / "report", args.symbols * n_bars),
            key="wall_seconds",
        )


def measure(args, bars: Path, bundle: Path, report: Path, n_bars: int) -> dict[str, float]:
    from daemon.cli import main as cli

    shutil.rmtree(report, ignore_errors=True)
    t0 = time.perf_counter()
    code = cli(
        ["evaluate", "--bars", str(bars), "--bundle", str(bundle), "--report", str(report),
         "--no-progress"]
    )  # fmt: skip
    wall = time.perf_counter() - t0
    if code != 0:
        raise SystemExit(f"evaluate exited {code}")
    doc = json.loads((report / "report.json").read_text())
    print(
        f"evaluate: {args.symbols} series x {args.years} years daily ({n_bars} bars, "
        f"{doc.get('test_rows', '?')} scored rows): {wall:.1f} s wall, exit {code}"
    )
    print(f"verdict: {doc.get('verdict')}")
    return {"wall_seconds": wall}


if __name__ == "__main__":
    main()
