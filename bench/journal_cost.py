"""Where the live journal's cost per bar goes in bench_nautilus.py's run: wall time by arm.

    python bench/journal_cost.py [--bars 200000] [--instruments 1] [--rounds 3] [--data F.npz]

Each arm is bench_nautilus's `ours` worker in a fresh process, arms alternating round by round:
  none     no journal
  rows     the engine builds each batch's journal rows (kernel.journal_rows) and hands them to a
           sink that drops them
  orders   the live Journal with the writer's queue dropped: the per-bar call and the order path's
           write-ahead commits, no signals, decisions, fills, events or positions
  journal  the live Journal as bench_nautilus runs it
Printed: each arm's seconds per round and median, then the differences per bar (rows - none: the
rows; orders - rows: the call and the order commits; journal - orders: the queued rows, their
hand-off and group writes, mostly carried by order commits), and the CPU seconds of the journal
arm's threads (main, the group writer, the WAL checkpointer: how much the journal's own threads
take from the engine). Load average at start and end: the box is shared, compare arms of one run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

ARMS = ("none", "rows", "orders", "journal")


def thread_cpu(native_id: int) -> float:
    """CPU seconds (user + system) of one thread of this process, from /proc."""
    fields = Path(f"/proc/self/task/{native_id}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_arm(arm: str, data: Path) -> dict[str, Any]:
    """One arm in this process: bench_nautilus.run_ours with the journal cut where the arm says."""
    import bench_nautilus

    import daemon.journal as journal_module
    from daemon.journal_writer import GroupWriter
    from strategy.backtest.engine import BacktestEngine

    if arm == "rows":

        class DropRows:
            """A sink that takes each batch's rows and keeps nothing."""

            def __init__(self, path: Path, **_: object) -> None:
                self.path = path

            def open(self) -> None: ...
            def flush(self) -> None: ...
            def close(self) -> None: ...
            def record_orders_ahead(self, **_: object) -> None: ...

        journal_module.Journal = DropRows  # type: ignore[misc,assignment]
    elif arm == "orders":
        GroupWriter.submit = lambda self, item: None  # type: ignore[method-assign]
    threads: dict[str, float] = {}
    run_batches = BacktestEngine.run_batches

    def timed(self: BacktestEngine, *args: Any, **kwargs: Any) -> Any:
        before = {t.name: (t.native_id, thread_cpu(t.native_id)) for t in threading.enumerate()
                  if t.native_id is not None}  # fmt: skip
        out = run_batches(self, *args, **kwargs)
        if self.journal is not None:
            self.journal.flush()  # type: ignore[attr-defined]
        for name, (tid, cpu) in before.items():
            threads[name.split(":")[0]] = thread_cpu(tid) - cpu
        return out

    BacktestEngine.run_batches = timed  # type: ignore[method-assign]
    result = bench_nautilus.run_ours(data, journal=arm != "none")
    return {"arm": arm, "seconds": result["seconds"], "bars": result["bars"], "threads": threads}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bars", type=int, default=200_000)
    p.add_argument("--instruments", type=int, default=1)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--data", type=Path, help="an .npz from bench_nautilus.write_bars")
    p.add_argument("--worker", choices=ARMS, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker is not None:
        print(json.dumps(run_arm(args.worker, args.data)))
        return
    print(f"# load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    with tempfile.TemporaryDirectory() as tmp:
        data = args.data
        if data is None:
            from bench_nautilus import write_bars

            data = Path(tmp) / "bars.npz"
            write_bars(data, args.instruments, args.bars)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            [str(Path(__file__).parent.parent), str(Path(__file__).parent)])}  # fmt: skip
        seconds: dict[str, list[float]] = {arm: [] for arm in ARMS}
        bars, threads = 0, {}
        for _ in range(args.rounds):
            for arm in ARMS:
                cmd = [sys.executable, __file__, "--worker", arm, "--data", str(data)]
                done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
                out = json.loads(done.stdout.strip().splitlines()[-1])
                seconds[arm].append(out["seconds"])
                bars = out["bars"]
                if arm == "journal":
                    threads = out["threads"]
    median = {arm: statistics.median(s) for arm, s in seconds.items()}
    print(f"# {bars:,} bars, {args.rounds} rounds, arms alternating in fresh processes")
    for arm in ARMS:
        runs = " ".join(f"{s:.3f}" for s in seconds[arm])
        print(f"{arm:<8} median {median[arm]:.3f} s   runs {runs}")
    for label, a, b in (("rows", "rows", "none"), ("call + order commits", "orders", "rows"),
                        ("queued rows", "journal", "orders"), ("journal in all", "journal", "none")):  # fmt: skip
        print(f"{label:<21} {(median[a] - median[b]) / bars * 1e6:6.2f} us per bar")
    print("journal arm, CPU s by thread: "
          + ", ".join(f"{name} {cpu:.3f}" for name, cpu in threads.items()))  # fmt: skip
    print(f"# load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
