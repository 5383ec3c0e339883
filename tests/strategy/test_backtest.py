from __future__ import annotations

import asyncio
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
import pytest

from daemon.execution.paper import PaperExecution
from daemon.journal import Journal
from daemon.journal_schema import TABLES
from daemon.pipeline import Pipeline
from strategy.backtest.compare import BUY_AND_HOLD, buy_and_hold, run_comparison
from strategy.backtest.data import frame_batches, precompute_signals
from strategy.backtest.engine import BacktestConfig, BacktestEngine
from strategy.backtest.metrics import compute_metrics, round_trips, trade_pnls
from strategy.backtest.report import report_html, report_json
from strategy.bars import BarStore, BarStoreConfig
from strategy.book import Book
from strategy.market_sim import SimMarketConfig, simulate_frame
from strategy.risk import RiskConfig, RiskEngine
from strategy.rule_scorer import RuleScorer, RuleScorerConfig
from strategy.target_strategy import StrategyConfig, TargetStrategy
from strategy.types import Fill, Side

START = datetime(2024, 1, 1, tzinfo=UTC)
DAY = 86_400
CONFIG = BacktestConfig(
    bars=BarStoreConfig(window=40),
    strategy=StrategyConfig(enter_threshold=0.55, min_confidence=0.1, hold_bars=4),
    risk=RiskConfig(max_drawdown=None, max_daily_loss=None),
    order_prefix="PAPER",
)


@pytest.fixture(scope="module")
def batches():
    cfg = SimMarketConfig(symbols=("A", "B", "C"), pattern_rate=0.05, seed=9)
    return frame_batches(simulate_frame(cfg, START, 700))


def _orders(run):
    return [
        (o.client_order_id, o.symbol, o.side, o.quantity, o.created_ts, o.reason)
        for o in run.orders
    ]


def test_run_when_scores_precomputed_in_batches_then_same_orders_as_bar_by_bar(batches) -> None:
    scorer = RuleScorer(config=RuleScorerConfig())
    live = BacktestEngine(config=CONFIG, scorer=scorer).run_batches(batches)
    pre = precompute_signals(scorer, batches, CONFIG.bars, chunk=333)
    batched = BacktestEngine(config=CONFIG, scorer=pre).run_batches(batches)
    assert len(live.orders) > 20
    assert _orders(batched) == _orders(live)
    assert batched.equity == live.equity


def test_run_when_journal_sink_then_rows_equal_the_daemon_pipeline(batches, tmp_path: Path) -> None:
    cfg = CONFIG
    with (
        Journal(tmp_path / "daemon.sqlite") as journal,
        PaperExecution(config=cfg.broker, path=tmp_path / "venue.sqlite") as execution,
    ):
        pipeline = Pipeline(
            store=BarStore(config=cfg.bars),
            scorer=RuleScorer(config=RuleScorerConfig()),
            strategy=TargetStrategy(config=cfg.strategy),
            risk=RiskEngine(config=cfg.risk),
            book=Book(starting_cash=cfg.starting_cash),
            journal=journal,
            execution=execution,
            order_prefix="PAPER",
        )

        async def drive() -> None:
            for batch in batches[:400]:
                await pipeline.on_bars(batch)

        asyncio.run(drive())
        daemon_rows = {t: journal.rows(t) for t in TABLES}
    with Journal(tmp_path / "backtest.sqlite") as journal:
        engine = BacktestEngine(
            config=cfg, scorer=RuleScorer(config=RuleScorerConfig()), journal=journal
        )
        engine.run_batches(batches[:400])
        backtest_rows = {t: journal.rows(t) for t in daemon_rows}
    assert len(daemon_rows["fills"]) > 5
    assert backtest_rows == daemon_rows


def test_metrics_when_known_curve_then_known_values() -> None:
    ts = [i * 30 * DAY for i in range(5)]  # 120 days: long enough to annualise
    m = compute_metrics(ts, [100.0, 110.0, 99.0, 99.0, 121.0])
    assert m.total_return == pytest.approx(0.21)
    assert m.max_drawdown == pytest.approx(0.1)
    assert m.max_drawdown_bars == 2
    assert m.max_drawdown_seconds == 60 * DAY
    assert m.sharpe > 0
    assert m.annualised_note == ""
    flat = compute_metrics(ts, [100.0] * 5)
    assert flat.sharpe == 0.0
    assert flat.total_return == 0.0


def fill(i: int, side: Side, qty: float, price: float) -> Fill:
    """Fill number i of symbol A, i minutes after START, commission 1."""
    return Fill(
        fill_id=f"f{i}",
        client_order_id=f"o{i}",
        symbol="A",
        side=side,
        quantity=qty,
        price=price,
        commission=1.0,
        ts=START + timedelta(minutes=i),
    )


def test_trades_when_round_trips_then_pnl_per_trade_net_of_commission() -> None:
    fills = [fill(1, Side.BUY, 10, 100), fill(2, Side.SELL, 20, 110), fill(3, Side.BUY, 10, 120)]
    pnls = trade_pnls(fills)
    assert pnls == pytest.approx([98.0, -101.0])  # commissions of both legs in each trade
    m = compute_metrics([0, 60, 120], [1.0, 1.1, 1.2], fills=fills)
    assert m.trades == 2
    assert m.hit_rate == 0.5
    assert 0 < m.profit_factor < 1.0


def test_round_trips_when_scaled_out_then_reversed_then_prices_quantity_bars_and_reasons() -> None:
    fills = [
        fill(0, Side.BUY, 10, 100),
        fill(1, Side.BUY, 10, 110),  # adds: average cost 105, 20 held
        fill(3, Side.SELL, 5, 120),  # scales out
        fill(4, Side.SELL, 25, 130),  # closes the other 15 and opens a 10 short
    ]
    bar_ts = [int((START + timedelta(minutes=i)).timestamp()) for i in range(8)]
    reasons = {"o3": "exit_hold", "o4": "reverse"}
    long, short = round_trips(fills, reasons=reasons, marks={"A": 125.0}, bar_ts=bar_ts)
    assert (long.side, long.quantity, long.entry_price) == ("long", 20, 105.0)
    assert long.exit_price == pytest.approx((5 * 120 + 15 * 130) / 20)
    assert long.pnl == pytest.approx(5 * 15 + 15 * 25 - 4.0)  # all four commissions
    assert (long.bars_held, long.exit_reason, long.exit_ts) == (4, "reverse", bar_ts[4])
    assert (short.side, short.quantity, short.exit_ts, short.exit_reason) == (
        "short",
        10,
        None,
        "open",
    )
    assert short.unrealized_pnl == pytest.approx(10 * (130 - 125))
    assert (short.exit_price, short.bars_held) == (125.0, 4)
    assert trade_pnls(fills) == [long.pnl]


def test_buy_and_hold_when_run_then_same_capital_sizing_and_costs_as_the_strategies(
    batches,
) -> None:
    config = msgspec.structs.replace(
        CONFIG, strategy=msgspec.structs.replace(CONFIG.strategy, position_fraction=0.2)
    )
    run = buy_and_hold(batches, config)
    opened = {}
    for fill in run.fills:
        opened.setdefault(fill.symbol, fill)
    assert set(opened) == {"A", "B", "C"}
    assert all(f.side is Side.BUY for f in run.fills)
    assert {o.reason for o in run.orders} == {"enter_long"}  # bought once per symbol, never sold
    for fill in opened.values():  # 0.2 x equity at entry (~100k), whole shares, entry costs paid
        assert 0.19 * 100_000 < fill.quantity * fill.price <= 0.2 * 100_000 * 1.001
        assert fill.quantity == int(fill.quantity)
        assert fill.commission >= 1.0
    last = {b.symbol: b.close for b in batches[-1]}
    cash = 100_000.0 - sum(f.quantity * f.price + f.commission for f in run.fills)
    held = sum(f.quantity * last[f.symbol] for f in run.fills)
    assert run.equity[-1] == pytest.approx(cash + held, rel=1e-9)


def test_comparison_when_run_then_every_contender_on_same_period_and_report_renders(
    batches,
) -> None:
    pre = precompute_signals(RuleScorer(config=RuleScorerConfig()), batches, CONFIG.bars)
    trade_from = batches[300][0].ts
    results = run_comparison(batches, {"rules": pre}, CONFIG, trade_from=trade_from)
    assert set(results) == {"rules", BUY_AND_HOLD}
    assert (
        results["rules"].run.ts[0] == results[BUY_AND_HOLD].run.ts[0] == int(trade_from.timestamp())
    )
    assert all(o.created_ts >= trade_from for o in results["rules"].run.orders)
    html = report_html(
        results,
        model_metrics={"xgb": {"auc": 0.6}},
        calibration={"xgb": {"mean_p": [0.4, 0.6], "freq": [0.35, 0.65], "count": [5, 5]}},
    )
    assert html.count("data:image/png;base64,") == 2
    assert ">rules</td>" in html
    assert b'"comparison"' in report_json(results)


def test_run_when_journaled_then_each_order_is_committed_before_the_venue_sees_it(
    batches, tmp_path: Path
) -> None:
    # commit_every=500 groups record() writes: the write-ahead path commits orders regardless.
    path = tmp_path / "backtest.sqlite"
    seen: list[str] = []
    with Journal(path, commit_every=500) as journal, sqlite3.connect(path) as reader:
        engine = BacktestEngine(
            config=CONFIG, scorer=RuleScorer(config=RuleScorerConfig()), journal=journal
        )
        broker, record = engine.venue.broker, journal.record_orders_ahead

        # The engine (compiled with mypyc by make native) takes no patched venue: the journal is
        # watched instead, the venue not having the orders yet and the commit visible on return.
        def record_then_check(**rows: Any) -> None:
            orders = rows["orders"] = list(rows.get("orders", ()))
            early = [o.client_order_id for o in orders if broker.venue_order(o.client_order_id)]
            assert early == [], f"orders reached the venue before their commit: {early}"
            record(**rows)
            committed = {r[0] for r in reader.execute("SELECT client_order_id FROM orders")}
            missing = [o.client_order_id for o in orders if o.client_order_id not in committed]
            assert missing == [], f"orders not committed when the journal returned: {missing}"
            seen.extend(o.client_order_id for o in orders)

        journal.record_orders_ahead = record_then_check  # type: ignore[method-assign]
        run = engine.run_batches(batches[:300])
    assert len(seen) == len(run.orders) > 5
    assert all(broker.venue_order(coid) is not None for coid in seen)  # then the venue had each
