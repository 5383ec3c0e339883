"""`vlmtrader backtest` tunes the collector once it is warm, as the daemon does (daemon/runtime.py):
what start-up loaded frozen out of the scans, collections less often."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

from daemon.runtime import GC_THRESHOLDS
from strategy.market_sim import SimMarketConfig, simulate_frame

_RUN = """
import gc, json, sys
from daemon.cli import backtest
before = gc.get_freeze_count(), gc.get_threshold()
code = backtest.main(["backtest", "--config", sys.argv[1], "--bars", sys.argv[2],
                      "--report", sys.argv[3], "--no-progress"])
print("gc:" + json.dumps([code, *before, gc.get_freeze_count(), gc.get_threshold()]))
"""


def test_backtest_when_warm_then_gc_frozen_and_thresholds_tuned(tmp_path: Path) -> None:
    bars = tmp_path / "bars.csv"
    market = SimMarketConfig(symbols=("A", "B"), seed=3)
    frame = simulate_frame(market, datetime(2024, 1, 1, tzinfo=UTC), 300)
    frame.drop(columns=["pattern", "direction"]).to_csv(bars, index=False)
    config = tmp_path / "cfg.yaml"
    config.write_text("bars:\n  window: 40\n")
    # A fresh interpreter: the collector's settings are process-wide.
    done = subprocess.run(
        [sys.executable, "-c", _RUN, str(config), str(bars), str(tmp_path / "report")],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    line = next(x for x in done.stdout.splitlines() if x.startswith("gc:"))
    code, frozen_before, _, frozen_after, threshold_after = json.loads(line.removeprefix("gc:"))
    assert code == 0, done.stderr[-2000:]
    assert frozen_before == 0
    assert frozen_after > 0  # start-up's objects frozen out of the collector's scans
    assert tuple(threshold_after) == GC_THRESHOLDS
