"""What an order's explanation costs: milliseconds per order in the explainer's thread, disk per
1,000 orders (explanation rows and chart PNGs), and the order path's share (Explainer.submit).

Each batch: --symbols windows of the simulated market scored by the bundle's fused ML scorer (as
the daemon does), one order per window (the worst case: every symbol trades every bar), then the
explainer's own work timed per order: the chart PNG (sha256-named, written once), CLIP's top texts,
analogs with their PNGs, exact TreeSHAP contributions, the SQLite row. The first batch (the
bundle's prompt texts encoded once) is a warm-up, not counted. Repeats until two runs agree within
10% on ms per order.
Usage: python bench/bench_explain.py [--bundle state/bundles/default] [--symbols 10] [--batches 60]
"""

from __future__ import annotations

import argparse
import io
import shutil
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from harness import Session, load_line

from daemon.explain.config import ExplainConfig
from daemon.explain.evidence import accepted
from daemon.explain.values import CHARTS_DIR, EXPLAIN_DB
from daemon.explain.worker import Explainer, ExplainJob
from daemon.log_setup import configure_logging
from daemon.model.loader import LoadedBundle, load_bundle
from strategy.backtest.data import frame_batches, iter_windows
from strategy.bars import BarStoreConfig, Window
from strategy.kernel import BatchDecision
from strategy.market_sim import SimMarketConfig, simulate_frame
from strategy.types import Order, OrderType, Side


def windows_by_batch(symbols: int, batches: int, window: int) -> list[list[Window]]:
    """Live-shaped windows: one list per bar close, one window per symbol."""
    market = SimMarketConfig(symbols=tuple(f"SIM{i}" for i in range(symbols)), seed=7)
    frame = simulate_frame(market, datetime(2026, 4, 6, 14, tzinfo=UTC), window + batches)
    by_ts: dict[int, list[Window]] = {}
    for chunk in iter_windows(frame_batches(frame), BarStoreConfig(window=window)):
        for w in chunk:
            by_ts.setdefault(int(w.timestamps[-1]), []).append(w)
    return [ws for _, ws in sorted(by_ts.items())][:batches]


def decision_for(windows: list[Window], batch: int) -> BatchDecision:
    """Every window's symbol bought at its bar close (the worst case: all symbols trade)."""
    at = [datetime.fromtimestamp(int(w.timestamps[-1]), tz=UTC) for w in windows]
    return accepted(
        [
            Order(
                client_order_id=f"B{batch}-{i}",
                symbol=w.symbol,
                side=Side.BUY,
                quantity=1.0,
                order_type=OrderType.MARKET,
                created_ts=ts,
            )
            for i, (w, ts) in enumerate(zip(windows, at, strict=True))
        ]
    )


def _bytes(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.glob("*") if p.is_file()) if path.is_dir() else 0


def measure(models: LoadedBundle, batches: list[list[Window]]) -> dict[str, float]:
    """One run in a fresh state dir: per-order explain time, disk, and submit's cost."""
    state = Path(tempfile.mkdtemp(prefix="bench-explain-"))
    scorer = models.scorer(mode="fused")
    per_order: list[float] = []
    submit: list[float] = []
    orders = 0
    try:
        explainer = Explainer(config=ExplainConfig(), state_dir=state, bundle_for=lambda _s: models)
        explainer.store.open()
        for b, windows in enumerate(batches):
            signals = scorer.score(windows)
            job = ExplainJob(scorer=scorer, evidence=scorer.evidence, signals=signals,
                             decision=decision_for(windows, b))  # fmt: skip
            started = time.perf_counter()
            explainer.explain(job)
            seconds = time.perf_counter() - started
            if b == 0:  # warm-up: the bundle's prompt texts are encoded once
                continue
            per_order.append(seconds / len(windows))
            orders += len(windows)
        explainer.store.close()
        written = orders + len(batches[0])  # every order so far has a row and its own chart
        db = sum(_bytes(state / f"{EXPLAIN_DB}{s}") for s in ("", "-wal"))
        charts = _bytes(state / CHARTS_DIR)
        n_charts = len(list((state / CHARTS_DIR).glob("*.png")))
        # the order path's share: submit() into the running thread (a put_nowait)
        # busy as the daemon wires it: the batch that submits is still inside on_bars meanwhile
        in_batch = [False]
        with Explainer(
            config=ExplainConfig(),
            state_dir=state,
            bundle_for=lambda _s: models,
            busy=lambda: in_batch[0],
        ) as ex:
            for b, windows in enumerate(batches[:20]):
                signals = scorer.score(windows)
                decision = decision_for(windows, 10_000 + b)
                in_batch[0] = True
                started = time.perf_counter()
                ex.submit(
                    scorer=scorer, evidence=scorer.evidence, signals=signals, decision=decision
                )
                submit.append(time.perf_counter() - started)
                in_batch[0] = False
                ex.wait_idle(60)
    finally:
        shutil.rmtree(state, ignore_errors=True)
    ms = sorted(1000 * s for s in per_order)
    figures = {
        "ms_per_order_p50": statistics.median(ms),
        "ms_per_order_p99": ms[min(len(ms) - 1, int(0.99 * len(ms)))],
        "ms_per_order": sum(ms) / len(ms),
        "db_mb_per_1000_orders": db / written * 1000 / 1e6,
        "charts_mb_per_1000_orders": charts / written * 1000 / 1e6,
        "chart_files_per_order": n_charts / written,
        "submit_us_p50": statistics.median(submit) * 1e6,
        "submit_us_max": max(submit) * 1e6,
    }
    print(
        f"  explain: {figures['ms_per_order']:.2f} ms/order mean, p50 "
        f"{figures['ms_per_order_p50']:.2f}, p99 {figures['ms_per_order_p99']:.2f} "
        f"({orders} orders); disk per 1,000 orders: rows {figures['db_mb_per_1000_orders']:.2f} MB"
        f" + charts {figures['charts_mb_per_1000_orders']:.2f} MB "
        f"({figures['chart_files_per_order']:.2f} PNG files per order: analog charts are shared); "
        f"submit() on the order path p50 {figures['submit_us_p50']:.1f} us, max "
        f"{figures['submit_us_max']:.1f} us; {load_line()}",
        flush=True,
    )
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, default=Path("state/bundles/default"))
    parser.add_argument("--symbols", type=int, default=10)
    parser.add_argument("--batches", type=int, default=60)
    args = parser.parse_args()
    configure_logging(level="warning", fmt="json", stream=io.StringIO())
    bundle = args.bundle
    if not (bundle / "model_card.json").is_file():
        from daemon.training import bootstrap, quick_config

        bundle = Path(tempfile.mkdtemp(prefix="bench-explain-")) / "bundle"
        print(f"no bundle at {args.bundle}: building a --quick one at {bundle} (tiny CLIP)")
        bootstrap(quick_config(), bundle)
    with Session("explain", max_runs=4) as bench:
        models = load_bundle(bundle)
        print(
            f"bundle {models.bundle_id}: chart {models.spec.width}x{models.spec.height}, analogs "
            f"{len(models.analogs) if models.analogs is not None else 0} rows; "
            f"{args.symbols} orders per batch, {args.batches} batches"
        )
        batches = windows_by_batch(args.symbols, args.batches, models.bars_needed)
        bench.until_stable(lambda: measure(models, batches), key="ms_per_order")


if __name__ == "__main__":
    main()
