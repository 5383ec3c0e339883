"""The dashboard's first paint, as Chromium times it, with 10 symbols and 1,000 orders in the journal.

A paper-sim daemon (rule scorer, 10 symbols, fast) first trades until its journal holds --orders
orders; it is stopped and started again on the same state directory at a live pace (one bar a
second) with the HTTP API on. A real headless Chromium (tests/integration/browser.py) then loads
the page afresh, repeatedly, and reads the browser's own performance timeline:
  fcp_ms          navigation start -> first contentful paint (the page shell)
  painted_ms      navigation start -> every panel drawn from the daemon's data (the page's
                  `vlmtrader.painted` mark: charts, orders, equity, risk; after all its fetches)
  dom_ready_ms    navigation start -> DOMContentLoaded (the scripts parsed and run)
  transfer_kb     bytes the page fetched (HTML, CSS, JS, the chart library, the JSON)
plus, over real HTTP, the median time of GET /api/orders?limit=1000 (all the bench's orders), and
what the dashboard adds to the daemon's own thread, per call, with 0 and 8 open /events streams:
  sink_us_N       LiveHub.on_event for one order.submitted (the log sink, after the broker has it)
  batch_us_N      LiveHub.on_batch for one 10-symbol batch (after the batch's orders are out)
Usage: python bench/bench_dashboard.py [--orders 1000] [--symbols 10]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from harness import Session

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from daemon.api.live import LiveHub  # noqa: E402
from strategy.types import Bar  # noqa: E402
from tests.integration import browser  # noqa: E402
from tests.integration.daemon_process import (  # noqa: E402
    DaemonProcess,
    count,
    wait_for,
    write_config,
)

TIMING = """
const nav = performance.getEntriesByType('navigation')[0];
const paint = performance.getEntriesByName('first-contentful-paint')[0];
const mark = performance.getEntriesByName('vlmtrader.painted')[0];
const bytes = performance.getEntriesByType('resource').reduce((n, r) => n + r.transferSize, nav.transferSize);
return {fcp_ms: paint ? paint.startTime : null, painted_ms: mark ? mark.startTime : null,
        dom_ready_ms: nav.domContentLoadedEventEnd, transfer_kb: bytes / 1024,
        charts: document.querySelectorAll('#charts figure').length,
        orders: document.querySelectorAll('#orders tr[data-order]').length};
"""


def config(tmp: Path, *, symbols: int, speed: float, api: bool) -> Path:
    extra: dict[str, Any] = {
        "account": "bench",
        "strategy": {"hold_bars": 1, "position_notional": 5000},
        "journal": {"synchronous": "normal"},
    }
    if api:
        extra["api"] = {"enabled": True, "port": 0, "shutdown_timeout_seconds": 1.0}
    return write_config(
        tmp / f"{'live' if api else 'fill'}.yaml",
        state_dir=tmp / "state",
        speed=speed,
        symbols=symbols,
        extra=extra,
    )


def api_port(daemon: DaemonProcess) -> int:
    import json

    for line in daemon.log_text().splitlines():
        if '"api.started"' in line:
            return int(json.loads(line)["port"])
    return 0


def fill_journal(tmp: Path, *, symbols: int, orders: int) -> int:
    """Trade fast until the journal holds `orders` orders; returns how many it holds."""
    journal = tmp / "state" / "journal.sqlite"
    daemon = DaemonProcess(config(tmp, symbols=symbols, speed=100_000, api=False),
                           log_path=tmp / "fill.log")  # fmt: skip
    try:
        wait_for(lambda: count(journal, "SELECT count(*) FROM orders") >= orders, timeout=600,
                 what=f"{orders} orders")  # fmt: skip
    finally:
        daemon.terminate()
    return count(journal, "SELECT count(*) FROM orders")


def first_paint(driver: Any, url: str) -> dict[str, float]:
    driver.get("about:blank")
    driver.get(url)
    deadline = time.monotonic() + 60
    while driver.execute_script("return document.body.dataset.loaded") != "true":
        if time.monotonic() > deadline:
            msg = f"the page did not finish its first paint: {browser.console_errors(driver)}"
            raise RuntimeError(msg)
        time.sleep(0.05)
    got = driver.execute_script(TIMING)
    errors = browser.console_errors(driver)
    if errors:
        raise RuntimeError(f"console errors: {errors}")
    return {k: round(float(v), 2) for k, v in got.items() if v is not None}


def hub_costs(symbols: int, *, calls: int = 20_000) -> dict[str, float]:
    """Microseconds per LiveHub call on the daemon's loop, with no stream and with 8 streams
    whose queues are emptied between rounds (as their responses would)."""
    from datetime import UTC, datetime, timedelta

    order = {"symbol": "SIM0", "client_order_id": "BENCH-1", "side": "buy", "quantity": 50.0,
             "order_type": "market", "reason": "enter_long", "latency_ms": 1.0,
             "level": "info", "timestamp": "2026-12-02T16:00:00Z"}  # fmt: skip
    t0 = datetime(2026, 12, 2, tzinfo=UTC)

    def batch(i: int) -> list[Bar]:
        ts = t0 + timedelta(minutes=i)
        return [Bar(symbol=f"SIM{s}", ts=ts, open=100.0, high=101.0, low=99.0, close=100.5,
                    volume=1000.0) for s in range(symbols)]  # fmt: skip

    batches = [batch(i) for i in range(calls // 10)]

    async def run() -> dict[str, float]:
        out: dict[str, float] = {}
        for clients in (0, 8):
            async with LiveHub(queue_size=100_000, max_clients=8, bars_per_symbol=500) as hub:
                streams = [hub.open_stream() for _ in range(clients)]
                started = time.perf_counter()
                for _ in range(calls):
                    hub.on_event("order.submitted", order)
                out[f"sink_us_{clients}"] = (time.perf_counter() - started) / calls * 1e6
                for stream in streams:
                    while stream is not None and not stream.queue.empty():
                        stream.queue.get_nowait()
                started = time.perf_counter()
                for b in batches:
                    hub.on_batch(b, equity=100_000.0)
                out[f"batch_us_{clients}"] = (time.perf_counter() - started) / len(batches) * 1e6
        return {k: round(v, 2) for k, v in out.items()}

    return asyncio.run(run())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=1_000)
    parser.add_argument("--symbols", type=int, default=10)
    args = parser.parse_args()
    problem = browser.missing()
    if problem is not None:
        raise SystemExit(problem)
    with Session("dashboard") as bench, tempfile.TemporaryDirectory(prefix="bench-dash-") as tmp:

        def costs() -> dict[str, float]:
            got = hub_costs(args.symbols)
            print("  ".join(f"{k} {v:.2f}" for k, v in got.items()), flush=True)
            return got

        bench.until_stable(costs, key="sink_us_8", prefix="hub_")
        work = Path(tmp)
        journaled = fill_journal(work, symbols=args.symbols, orders=args.orders)
        print(f"journal: {journaled} orders, {args.symbols} symbols", flush=True)
        daemon = DaemonProcess(config(work, symbols=args.symbols, speed=60, api=True),
                               log_path=work / "live.log")  # fmt: skip
        try:
            wait_for(lambda: api_port(daemon) > 0, timeout=120, what="api.started")
            url = f"http://127.0.0.1:{api_port(daemon)}"
            with browser.chromium() as driver, httpx.Client(base_url=url, timeout=30) as http:
                first_paint(driver, f"{url}/")  # warm: the browser's own start-up
                print(
                    f"{'fcp ms':>8} {'painted ms':>11} {'dom ms':>8} {'kB':>7} {'charts':>7} {'orders':>7}"
                )

                def measure() -> dict[str, float]:
                    runs = [first_paint(driver, f"{url}/") for _ in range(5)]
                    got = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
                    print(f"{got['fcp_ms']:>8.1f} {got['painted_ms']:>11.1f} "
                          f"{got['dom_ready_ms']:>8.1f} {got['transfer_kb']:>7.0f} "
                          f"{got['charts']:>7.0f} {got['orders']:>7.0f}", flush=True)  # fmt: skip
                    return got

                bench.until_stable(measure, key="painted_ms")
                times = []
                for _ in range(20):
                    started = time.perf_counter()
                    response = http.get("/api/orders", params={"limit": 1000})
                    times.append((time.perf_counter() - started) * 1000)
                    response.raise_for_status()
                rows = len(response.json()["orders"])
                median = statistics.median(times)
                print(
                    f"GET /api/orders?limit=1000: {rows} rows, median {median:.1f} ms", flush=True
                )
                bench.add(api_orders_1000_ms=round(median, 2), journal_orders=journaled,
                          symbols=args.symbols)  # fmt: skip
        finally:
            daemon.terminate()


if __name__ == "__main__":
    main()
