"""The journal's share of the order path: p50/p99 of one batch's write, synchronous NORMAL vs FULL.

A typical batch at --symbols symbols: a signal per symbol, an order and a risk decision per ten,
the fills and status events of the previous batch's orders, their positions and 3 kv keys (what
daemon/pipeline.py writes per bar). Two ways to write it, both measured in the same run:
  record              the whole batch in one transaction (the journal before write-ahead intents)
  record_orders_ahead the orders and kv in a small commit of their own; the rest queued to the
                      group-committing writer thread (what the daemon does on the order path)
The baseline is record with synchronous=normal; FULL also fsyncs every order-path commit (durable
against power loss). Also shown: NORMAL with SQLite's inline autocheckpoint instead of the
journal's background one (the checkpoint's fsync then lands on whichever commit crosses 1000 WAL
pages: the p99). Repeats until two runs agree within 10% on the FULL order-path p99.
Usage: python bench/bench_journal.py [--batches N] [--symbols N] [--dir DIR] (DIR on the disk you deploy to)
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
from harness import Session, quick

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
    path: Path,
    synchronous: str,
    batches: int,
    *,
    symbols: int,
    ahead: bool,
    checkpoint_seconds: float | None = 1.0,
) -> list[float]:
    """Seconds per order-path write over `batches` typical batches (ahead: record_orders_ahead)."""
    times: list[float] = []
    n_orders = max(1, symbols // 10)
    with Journal(path, synchronous=synchronous, checkpoint_seconds=checkpoint_seconds) as journal:  # type: ignore[arg-type]
        write = journal.record_orders_ahead if ahead else journal.record
        previous: list[Order] = []
        for i in range(batches):
            ts = START + timedelta(minutes=i)
            signals = [
                Signal(symbol=f"S{k:03d}", ts=ts, p_up=0.62, confidence=0.3, scorer="rules",
                       reasons=("hammer", "rsi_low"))
                for k in range(symbols)
            ]  # fmt: skip
            intents = [
                OrderIntent(
                    symbol=f"S{k:03d}", ts=ts, side=Side.BUY, quantity=25.0, reason="hammer"
                )
                for k in range(n_orders)
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
            write(signals=signals, decisions=decisions, orders=orders, fills=fills,
                  order_events=events, positions=positions, kv=kv)  # fmt: skip
            times.append(time.perf_counter() - started)
            previous = orders
        counts = journal.counts()
    assert counts["orders"] == n_orders * batches
    assert counts["fills"] == n_orders * (batches - 1)
    return times


def percentiles_us(times: list[float]) -> tuple[float, float]:
    cuts = statistics.quantiles(times, n=100)
    return cuts[49] * 1e6, cuts[98] * 1e6


def measure(directory: Path | None, batches: int, symbols: int) -> dict[str, float]:
    """One run of every variant, interleaved in one process; prints the table, returns figures."""
    figures: dict[str, float] = {}
    variants = [
        ("record_normal", "normal", False, 1.0, batches),
        ("ahead_normal", "normal", True, 1.0, batches),
        ("record_normal_inline_checkpoint", "normal", False, None, batches),
        ("record_full", "full", False, 1.0, max(batches // 4, 100)),
        ("ahead_full", "full", True, 1.0, max(batches // 4, 100)),
    ]
    with tempfile.TemporaryDirectory(dir=directory) as tmp:
        print(
            f"  order-path write of a {symbols}-symbol batch ({max(1, symbols // 10)} orders) in {tmp}"
        )
        for name, synchronous, ahead, checkpoint, n in variants:
            times = run(Path(tmp) / f"{name}.sqlite", synchronous, n, symbols=symbols,
                        ahead=ahead, checkpoint_seconds=checkpoint)  # fmt: skip
            p50, p99 = percentiles_us(times)
            figures[f"{name}_p50_us"], figures[f"{name}_p99_us"] = p50, p99
            print(f"  {name:<34} p50 {p50:>8.1f} µs   p99 {p99:>8.1f} µs   ({n} batches)")
    ratio = figures["ahead_full_p99_us"] / figures["record_full_p99_us"]
    figures["ahead_over_record_full_p99"] = ratio
    print(f"  ratio ahead/record under full: p99 {ratio:.2f}x")
    return figures


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batches", type=int, default=300 if quick() else 1200)
    p.add_argument("--symbols", type=int, default=100)
    p.add_argument("--dir", type=Path, default=None, help="where the journals go (default: temp)")
    args = p.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    with Session("journal") as bench:
        bench.until_stable(
            lambda: measure(args.dir, args.batches, args.symbols), key="ahead_full_p99_us"
        )


if __name__ == "__main__":
    main()
