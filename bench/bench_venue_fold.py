"""How long the paper venue's fold keeps the order path waiting: the venue's write lock held per
acquisition during one checkpoint pass over a log of N calls (a second of a busy 100-symbol replay:
each batch's bars and ten orders). The order path's calls take the same lock, so the longest hold
is the longest a call can wait behind a pass. To measure another checkout with this script:
PYTHONPATH=CHECKOUT:CHECKOUT/bench python -P bench/bench_venue_fold.py (-P: its bench/ first).
Usage: python bench/bench_venue_fold.py [--batches 80] [--repeats 5]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import tempfile
import threading
import time
from pathlib import Path
from types import TracebackType

import numpy as np
from bench_pipeline import make_batches
from harness import load_line

from daemon.execution import paper
from daemon.log_setup import configure_logging
from strategy.sim_broker import SimBrokerConfig
from strategy.types import Order, OrderType, Side


class TimedLock:
    """A lock that records how long each acquisition held it (seconds)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._since = 0.0
        self.holds: list[float] = []

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        taken = self._lock.acquire(blocking, timeout)
        self._since = time.perf_counter()
        return taken

    def release(self) -> None:
        self.holds.append(time.perf_counter() - self._since)
        self._lock.release()

    def __enter__(self) -> TimedLock:
        self.acquire()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()


def one_pass(n_batches: int, workdir: Path) -> list[float]:
    """The lock holds (ms) of one checkpoint pass over n_batches batches' calls."""
    paper.VENUE_CHECKPOINT_SECONDS = 3600.0  # only the pass we run
    venue = paper.PaperExecution(config=SimBrokerConfig(), path=workdir / "venue.sqlite")
    try:
        sequence = 0
        for batch in make_batches(100, n_batches):
            venue.on_market_bars(batch)
            orders = []
            for bar in batch[:10]:
                sequence += 1
                side = Side.BUY if sequence % 2 else Side.SELL
                orders.append(Order(client_order_id=f"X-{sequence}", symbol=bar.symbol, side=side,
                                    quantity=10.0, order_type=OrderType.MARKET, created_ts=bar.ts))  # fmt: skip
            asyncio.run(venue.submit(orders))
            venue.drain()
        lock = TimedLock()
        venue._write_lock = lock  # type: ignore[assignment]
        assert venue._checkpointer is not None
        venue._checkpointer.write_lock = lock  # type: ignore[assignment]
        venue.checkpoint()
        return [h * 1000.0 for h in lock.holds]
    finally:
        venue.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=80, help="batches logged before the pass")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    configure_logging(level="info", fmt="json", stream=io.StringIO())
    print(f"venue fold, {2 * args.batches} logged calls per pass; {load_line()}")
    longest, total, count = [], [], []
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory() as tmp:
            holds = one_pass(args.batches, Path(tmp))
        longest.append(max(holds))
        total.append(sum(holds))
        count.append(len(holds))
    print(f"  longest hold per pass: median {np.median(longest):.2f} ms (of {args.repeats} passes); "
          f"held in all {np.median(total):.2f} ms over {int(np.median(count))} acquisitions")  # fmt: skip
    print(f"  {load_line()}")


if __name__ == "__main__":
    main()
