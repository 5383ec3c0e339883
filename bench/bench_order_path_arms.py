"""What the rule order path's tail is made of on a busy machine, and which scheduling lever moves it.

One paced run of bench_pipeline's pipeline (100 symbols, journal synchronous=full by default); the
arms alternate batch by batch, so every arm sees the same bars under the same load: `base`, and
any of `si<ms>` (sys.setswitchinterval: the GIL hand-off), `nice<n>` (the thread's nice value;
below 0 needs root), `fifo` (SCHED_FIFO 1, as daemon/runtime.py OrderPathPriority; root or
RLIMIT_RTPRIO), `gap<ms>` (an idle sleep before the batch, as between live bars). Per arm, the
order path of each batch (arrival to the broker, Pipeline.stage_clock) split into CPU, run delay
(runnable, waiting for a CPU) and blocked (the rest: locks, the GIL, fsync): p50/p99 ms.
Usage: python bench/bench_order_path_arms.py [--arms base,si0.5,fifo] [--symbols 100]
    [--batches 1200] [--synchronous full]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from bench_pipeline import WINDOW, make_batches, run_pipeline
from harness import load_line

from daemon.log_setup import configure_logging
from daemon.pipeline import ORDER_PATH_STAGES

TO_BROKER = [s for s in ORDER_PATH_STAGES if s != "after"]
_FIFO = getattr(os, "SCHED_FIFO", 0) | getattr(os, "SCHED_RESET_ON_FORK", 0)
_OTHER = getattr(os, "SCHED_OTHER", 0) | getattr(os, "SCHED_RESET_ON_FORK", 0)


def apply_arm(arm: str) -> None:
    """Put the calling thread in the arm's state (every knob back to its default first)."""
    sys.setswitchinterval(0.005)
    os.sched_setscheduler(0, _OTHER, os.sched_param(0))
    os.setpriority(os.PRIO_PROCESS, 0, 0)  # 0: the calling thread (Linux)
    for part in arm.split("+"):
        if part.startswith("si"):
            sys.setswitchinterval(float(part[2:]) / 1000)
        elif part.startswith("nice"):
            os.setpriority(os.PRIO_PROCESS, 0, int(part[4:]))
        elif part == "fifo":
            os.sched_setscheduler(0, _FIFO, os.sched_param(1))
        elif part.startswith("gap"):
            time.sleep(float(part[3:]) / 1000)
        elif part != "base":
            msg = f"unknown arm part {part!r}"
            raise SystemExit(msg)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arms", default="base,si0.5,fifo")
    parser.add_argument("--symbols", type=int, default=100)
    parser.add_argument("--batches", type=int, default=1200, help="timed batches (all arms)")
    parser.add_argument("--synchronous", default="full", choices=("normal", "full"))
    args = parser.parse_args()
    arms = args.arms.split(",")
    configure_logging(level="info", fmt="json", stream=io.StringIO())  # render logs, as the daemon
    batches = make_batches(args.symbols, args.batches + WINDOW)
    print(f"{args.symbols} symbols, {args.synchronous}, arms {arms}; {load_line()}")

    def before_batch(j: int) -> None:
        apply_arm(arms[j % len(arms)])

    try:
        with tempfile.TemporaryDirectory() as tmp:
            _, pipeline, _ = asyncio.run(
                run_pipeline(batches, Path(tmp), args.synchronous, paced=True,
                             before_batch=before_batch)
            )  # fmt: skip
    finally:
        apply_arm("base")
    clock = pipeline.stage_clock
    parts = {
        kind: sum(recorders[s].samples() for s in TO_BROKER) * 1000.0
        for kind, recorders in (
            ("wall", clock.stages),
            ("cpu", clock.cpu_stages),
            ("delay", clock.delay_stages),
        )
    }
    parts["blocked"] = parts["wall"] - parts["cpu"] - parts["delay"]
    print(f"order path per batch, ms (p50 / p99); {load_line()}")
    print(f"{'arm':<14}" + "".join(f"{k:>16}" for k in parts))
    for i, arm in enumerate(arms):
        cells = ""
        for values in parts.values():
            mine = values[i :: len(arms)]
            p50, p99 = np.percentile(mine, [50, 99])
            cells += f"{p50:>7.2f} / {p99:>6.2f}"
        print(f"{arm:<14}{cells}")


if __name__ == "__main__":
    main()
