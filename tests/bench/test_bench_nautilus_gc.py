"""bench_nautilus runs our engine with the collector tuned once warm, as `vlmtrader backtest` and the
daemon do (daemon.runtime.tune_gc), and the run then needs no collection at all."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from daemon.runtime import GC_THRESHOLDS

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))
from bench_nautilus import write_bars  # noqa: E402  (bench/ is not a package)

_RUN = """
import gc, json, sys
from pathlib import Path
sys.path.insert(0, sys.argv[2])
from bench_nautilus import run_ours
from strategy.backtest.engine import BacktestEngine
collections = []
def counted(phase, info):
    if phase == "start" and running:
        collections.append(info["generation"])
running = False
run_batches = BacktestEngine.run_batches
def watched(self, *args, **kwargs):
    global running
    seen = (gc.get_threshold(), gc.get_freeze_count())
    running = True
    try:
        return run_batches(self, *args, **kwargs)
    finally:
        running = False
        watched.seen = seen
BacktestEngine.run_batches = watched
gc.callbacks.append(counted)
before = gc.get_threshold(), gc.get_freeze_count()
result = run_ours(Path(sys.argv[1]), journal=True)
threshold, frozen = watched.seen
print(json.dumps({"before": before, "threshold": threshold, "frozen": frozen,
                  "collections": collections, "orders": result["orders"]}))
"""


def test_run_ours_when_warm_then_collector_tuned_as_the_daemon_and_no_collection(
    tmp_path: Path,
) -> None:
    data = tmp_path / "bars.npz"
    write_bars(data, 20, 20_000)
    done = subprocess.run(
        [sys.executable, "-c", _RUN, str(data), str(ROOT / "bench")],
        cwd=ROOT, capture_output=True, text=True, check=False, timeout=240,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["before"][1] == 0  # nothing frozen before the worker warmed up
    assert tuple(out["threshold"]) == GC_THRESHOLDS
    assert out["frozen"] > 0  # the bars and the imports frozen out of the collector's scans
    assert out["orders"] > 0
    assert out["collections"] == []  # none during the run
