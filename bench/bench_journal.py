"""Commits/s and p50/p99 of one Journal.record() of a typical batch, synchronous NORMAL vs FULL.

A typical batch: 10 signals, 2 risk decisions, 2 orders, the fills and status events of the
previous batch's orders, their positions and 3 kv keys (what daemon/pipeline.py writes per bar).
The baseline, measured in the same run, is synchronous=normal (WAL: durable against a process
crash); FULL also fsyncs every commit (durable against power loss). The ratio is FULL / NORMAL.
Also shown: NORMAL with SQLite's inline autocheckpoint instead of the journal's background one
(the checkpoint's fsync then lands on whichever commit crosses 1000 WAL pages: the p99).
Usage: python bench/bench_journal.py [--batches N] [--dir DIR] (DIR on the disk you deploy to)
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import structlog

from daemon.journal import Journal
from strategy.types import (
    Fill,
    Order,
    OrderEvent,
    OrderIntent,
    OrderStatus,
    OrderType,
    Position,
    RiskDecision,
    Side,
    Signal,
)

START = datetime(2026, 1, 5, 14, 30, tzinfo=UTC)


def run(
    path: Path, synchronous: str, batches: int, checkpoint_seconds: float | None = 1.0
) -> list[float]:
    """Seconds per record() call over `batches` typical batches."""
    times: list[float] = []
    with Journal(path, synchronous=synchronous, checkpoint_seconds=checkpoint_seconds) as journal:  # type: ignore[arg-type]
        previous: list[Order] = []
        for i in range(batches):
            ts = START + timedelta(minutes=i)
            signals = [
                Signal(symbol=f"S{k:03d}", ts=ts, p_up=0.62, confidence=0.3, scorer="rules",
                       reasons=("hammer", "rsi_low"))
                for k in range(10)
            ]  # fmt: skip
            intents = [
                OrderIntent(
                    symbol=f"S{k:03d}", ts=ts, side=Side.BUY, quantity=25.0, reason="hammer"
                )
                for k in range(2)
            ]
            decisions = [RiskDecision(intent=x, accepted=True, ts=ts) for x in intents]
            orders = [
                Order(client_order_id=f"VT-{journal.next_order_sequence()}", symbol=x.symbol,
                      side=x.side, quantity=x.quantity, order_type=OrderType.MARKET,
                      created_ts=ts, reason=x.reason)
                for x in intents
            ]  # fmt: skip
            fills = [
                Fill(fill_id=f"F-{o.client_order_id}", client_order_id=o.client_order_id,
                     symbol=o.symbol, side=o.side, quantity=o.quantity, price=100.0 + i % 7,
                     commission=1.0, ts=ts)
                for o in previous
            ]  # fmt: skip
            events = [
                OrderEvent(client_order_id=o.client_order_id, ts=ts, status=OrderStatus.FILLED,
                           filled_quantity=o.quantity)
                for o in previous
            ]  # fmt: skip
            positions = [
                Position(symbol=f.symbol, quantity=25.0 * i, average_price=100.0) for f in fills
            ]
            kv = {"last_bar_ts": ts.isoformat(), "cash": repr(1e5 - i), "peak_equity": "100000.0"}
            started = time.perf_counter()
            journal.record(signals=signals, decisions=decisions, orders=orders, fills=fills,
                           order_events=events, positions=positions, kv=kv)  # fmt: skip
            times.append(time.perf_counter() - started)
            previous = orders
        counts = journal.counts()
    assert counts["orders"] == 2 * batches
    assert counts["fills"] == 2 * (batches - 1)
    return times


def summary(name: str, times: list[float]) -> float:
    cuts = statistics.quantiles(times, n=100)
    rate = len(times) / sum(times)
    p50, p99 = cuts[49] * 1e6, cuts[98] * 1e6
    print(f"  {name:<34} {rate:>9,.0f} commits/s   p50 {p50:>8.1f} µs   p99 {p99:>8.1f} µs")
    return rate


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batches", type=int, default=2000)
    p.add_argument("--dir", type=Path, default=None, help="where the journals go (default: temp)")
    args = p.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        normal = run(Path(tmp) / "normal.sqlite", "normal", args.batches)
        inline = run(Path(tmp) / "inline.sqlite", "normal", args.batches, checkpoint_seconds=None)
        full = run(Path(tmp) / "full.sqlite", "full", max(args.batches // 4, 100))
        print(f"Journal.record() of a typical batch (10 signals, 2 decisions, 2 orders) in {tmp}")
        rate_normal = summary("normal (baseline)", normal)
        summary("normal, SQLite inline checkpoints", inline)
        rate_full = summary("full", full)
        p50_ratio = statistics.median(full) / statistics.median(normal)
        print(
            f"  ratio full/normal: {rate_normal / rate_full:.1f}x commits/s, {p50_ratio:.1f}x p50"
        )


if __name__ == "__main__":
    main()
