"""The backtest report tells what matters: why a contender made no trade, risk rejections and
halts, round trips and per-symbol totals that add up to the journal, sizing that trades any
price level, a comparable buy-and-hold, and no annualised figures on a short sample."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import msgspec
import pytest

from daemon.journal import Journal
from strategy.backtest.compare import BUY_AND_HOLD, run_comparison, strategy_result
from strategy.backtest.data import frame_batches, precompute_signals
from strategy.backtest.engine import BacktestConfig, BacktestEngine
from strategy.backtest.metrics import SAMPLE_TOO_SHORT, compute_metrics
from strategy.backtest.report import report_html, report_json
from strategy.bars import BarStoreConfig, Window
from strategy.market_sim import SimMarketConfig, simulate_frame
from strategy.risk import RiskConfig
from strategy.rule_scorer import RuleScorer, RuleScorerConfig
from strategy.target_strategy import StrategyConfig
from strategy.types import Signal, TradingState

START = datetime(2024, 1, 1, tzinfo=UTC)
HOUR = 3_600
CONFIG = BacktestConfig(
    bars=BarStoreConfig(window=40),
    strategy=StrategyConfig(enter_threshold=0.55, min_confidence=0.1, hold_bars=4),
    risk=RiskConfig(max_drawdown=None, max_daily_loss=None),
    order_prefix="BT",
)


class Constant:
    """Scores every window with the same probability (confidence |2p - 1|)."""

    blocking = False

    def __init__(self, p_up: float, name: str = "constant") -> None:
        self.name, self.p_up = name, p_up

    def score(self, windows: Sequence[Window]) -> list[Signal]:
        c = abs(2 * self.p_up - 1)
        return [
            Signal(symbol=w.symbol, ts=w.ts, p_up=self.p_up, confidence=c, scorer=self.name)
            for w in windows
        ]


class Alternating:
    """Long in even hours, short in odd ones: a reversal every hour."""

    name = "alternating"
    blocking = False

    def score(self, windows: Sequence[Window]) -> list[Signal]:
        out = []
        for w in windows:
            p = 0.9 if int(w.ts.timestamp()) // HOUR % 2 == 0 else 0.1
            out.append(Signal(symbol=w.symbol, ts=w.ts, p_up=p, confidence=0.8, scorer=self.name))
        return out


def _with(config: BacktestConfig, **strategy: object) -> BacktestConfig:
    return msgspec.structs.replace(
        config, strategy=msgspec.structs.replace(config.strategy, **strategy)
    )


@pytest.fixture(scope="module")
def batches():
    market = SimMarketConfig(symbols=("A", "B", "C"), pattern_rate=0.05, seed=9)
    return frame_batches(simulate_frame(market, START, 600))


@pytest.fixture(scope="module")
def bitcoin():
    """15-minute bars of a $60,000 instrument with coin-sized volumes."""
    market = SimMarketConfig(
        symbols=("BTC",), start_price=60_000.0, base_volume=50.0, bar_seconds=900, seed=4
    )
    return frame_batches(simulate_frame(market, START, 300))


QUARTER_HOUR = msgspec.structs.replace(
    CONFIG,
    bars=BarStoreConfig(window=40, bar_seconds=900),
    strategy=msgspec.structs.replace(CONFIG.strategy, bar_seconds=900),
)


def _report(results) -> tuple[dict, str]:
    return json.loads(report_json(results)), report_html(results)


def test_report_when_signals_never_clear_threshold_then_reason_gives_max_edge_vs_threshold(
    batches,
) -> None:
    results = run_comparison(batches, {"weak": Constant(0.56)}, _with(CONFIG, enter_threshold=0.6))
    reason = results["weak"].no_trade_reason
    assert reason is not None
    assert reason.startswith("signals never cleared enter_threshold 0.6")
    assert "needs |2p-1| >= 0.200" in reason
    assert "max |2p-1| 0.120" in reason
    doc, page = _report(results)
    weak = doc["strategies"]["weak"]
    assert weak["no_trade_reason"] == reason
    assert weak["signals"]["cleared_entry_rule"] == 0
    assert weak["signals"]["max_abs_2p_minus_1"] == pytest.approx(0.12)
    assert "<b>weak</b>: signals never cleared enter_threshold" in page
    assert doc["strategies"][BUY_AND_HOLD]["no_trade_reason"] is None


def test_report_when_price_above_notional_with_whole_shares_then_reason_quantity_rounds_to_zero(
    bitcoin,
) -> None:
    results = run_comparison(bitcoin, {"long": Constant(0.9)}, QUARTER_HOUR)
    for name in ("long", BUY_AND_HOLD):
        reason = results[name].no_trade_reason
        assert reason is not None
        assert reason.startswith("quantity rounds to 0 at these prices")
        assert "quantity_step 1" in reason
        assert results[name].run.fills == []
    doc, page = _report(results)
    assert doc["strategies"]["long"]["sizing_misses"] > 0
    assert "quantity rounds to 0" in page


def test_backtest_when_fractional_step_then_60000_instrument_trades_10000_through_risk_broker_and_journal(
    bitcoin, tmp_path: Path
) -> None:
    config = _with(QUARTER_HOUR, quantity_steps={"BTC": 1e-8})
    with Journal(tmp_path / "j.sqlite") as journal:
        engine = BacktestEngine(config=config, scorer=Alternating(), journal=journal)
        run = engine.run_batches(bitcoin)
        journaled = journal.rows("fills")
    result = strategy_result("alternating", run, config)
    assert result.no_trade_reason is None
    assert run.risk_rejections == 0
    assert len(run.fills) >= 4
    assert all(0 < f.quantity < 1 and f.quantity != int(f.quantity) for f in run.fills)
    assert all(9_000 < t.quantity * t.entry_price < 10_100 for t in result.trades)
    assert [r["quantity"] for r in journaled] == [f.quantity for f in run.fills]
    assert result.metrics.trades == sum(t.exit_ts is not None for t in result.trades) > 0


def test_report_when_entries_halted_or_rejected_then_reasons_counted_and_halts_listed(
    batches,
) -> None:
    halting = msgspec.structs.replace(CONFIG, risk=RiskConfig(max_drawdown=0.0005))
    results = run_comparison(
        batches,
        {"rules": precompute_signals(RuleScorer(config=RuleScorerConfig()), batches, CONFIG.bars)},
        halting,
    )
    run = results["rules"].run
    [halt] = run.state_changes
    assert (halt.current, halt.reason) == (TradingState.HALTED, "max_drawdown")
    assert run.rejections["halted"] > 0
    assert sum(run.rejections.values()) == run.risk_rejections
    doc, page = _report(results)
    rules = doc["strategies"]["rules"]
    assert rules["halts"][0]["reason"] == "max_drawdown"
    assert rules["halts"][0]["ts"] == halt.ts.isoformat()
    assert rules["rejections"]["halted"] == run.rejections["halted"]
    assert "Risk rejections by reason" in page
    assert f"<td class='text'>{halt.ts.isoformat()}</td>" in page

    capped = msgspec.structs.replace(CONFIG, risk=RiskConfig(max_order_quantity=10))
    results = run_comparison(batches, {"long": Constant(0.9)}, capped)
    reason = results["long"].no_trade_reason
    assert reason is not None
    assert reason.startswith("risk rejected max_order_quantity x")


def test_report_when_halted_before_the_run_then_reason_says_halted(batches) -> None:
    engine = BacktestEngine(config=CONFIG, scorer=Constant(0.9, "long"))
    engine.risk.set_state(TradingState.HALTED, "operator", START)
    result = strategy_result("long", engine.run_batches(batches), CONFIG)
    assert result.no_trade_reason is not None
    assert result.no_trade_reason.startswith(
        "halted before its first trade; risk rejected halted x"
    )


def test_trades_when_journaled_run_then_round_trips_and_symbol_totals_match_journal_and_equity(
    batches, tmp_path: Path
) -> None:
    scorer = precompute_signals(RuleScorer(config=RuleScorerConfig()), batches, CONFIG.bars)
    with Journal(tmp_path / "j.sqlite") as journal:
        run = BacktestEngine(config=CONFIG, scorer=scorer, journal=journal).run_batches(batches)
        positions = {r["symbol"]: r for r in journal.rows("positions")}
        fills = journal.rows("fills")
    result = strategy_result("rules", run, CONFIG)
    assert len(fills) == len(run.fills) > 10
    closed = [t for t in result.trades if t.exit_ts is not None]
    assert len(closed) == result.metrics.trades > 5
    assert {t.exit_reason for t in closed} <= {"exit_hold", "exit_opposite", "reverse"}
    assert all(t.bars_held >= 1 and t.quantity > 0 for t in closed)
    for summary in result.symbols:  # realised P&L per symbol is the journal's
        assert summary.realized_pnl == pytest.approx(positions[summary.symbol]["realized_pnl"])
        mine = [t for t in closed if t.symbol == summary.symbol]
        assert summary.trades == len(mine)
    total = sum(s.pnl for s in result.symbols)
    assert total == pytest.approx(sum(t.pnl for t in result.trades))
    assert total == pytest.approx(run.equity[-1] - CONFIG.starting_cash)
    assert 0 < max(s.exposure for s in result.symbols) <= 1
    doc, page = _report({"rules": result})
    assert len(doc["strategies"]["rules"]["trades"]) == len(result.trades)
    assert doc["strategies"]["rules"]["per_symbol"][0]["symbol"] == "A"
    assert "Trades (round trips)" in page
    assert "Per symbol" in page


def test_buy_and_hold_when_compared_then_same_capital_and_position_size_as_the_strategies(
    batches,
) -> None:
    config = _with(CONFIG, position_fraction=0.25)
    results = run_comparison(batches, {"long": Constant(0.9)}, config)
    strategy, held = results["long"].run, results[BUY_AND_HOLD].run
    assert held.equity[0] == pytest.approx(strategy.equity[0])
    first = {f.symbol: f.quantity * f.price for f in reversed(held.fills)}
    mine = {f.symbol: f.quantity * f.price for f in reversed(strategy.fills)}
    assert set(first) == {"A", "B", "C"}
    for symbol, notional in first.items():
        assert notional == pytest.approx(mine[symbol], rel=0.02)  # 0.25 x ~100k each
        assert 0.24 * 100_000 < notional < 0.26 * 100_000


def test_metrics_when_sample_33_hours_then_annualised_figures_na_and_null_in_json(
    batches,
) -> None:
    short = batches[: 33 * 60]
    assert short[-1][0].ts.timestamp() - short[0][0].ts.timestamp() < 34 * HOUR
    results = run_comparison(short, {"long": Constant(0.9)}, CONFIG)
    metrics = results["long"].metrics
    assert math.isnan(metrics.sharpe)
    assert math.isnan(metrics.annual_return)
    assert metrics.annualised_note.startswith(SAMPLE_TOO_SHORT)
    doc, page = _report(results)
    row = doc["comparison"]["long"]
    assert row["sharpe"] is None
    assert row["annual_return"] is None
    assert row["annualised_note"] == metrics.annualised_note
    assert f"<td>{SAMPLE_TOO_SHORT}</td>" in page


def test_metrics_when_sample_one_year_of_daily_bars_then_sharpe_and_annual_return_numbers() -> None:
    market = SimMarketConfig(symbols=("A",), bar_seconds=86_400, seed=2)
    year = frame_batches(simulate_frame(market, START, 366))
    config = msgspec.structs.replace(
        _with(CONFIG, bar_seconds=86_400), bars=BarStoreConfig(window=40, bar_seconds=86_400)
    )
    results = run_comparison(year, {"long": Constant(0.9)}, config)
    for result in results.values():
        m = result.metrics
        assert m.annualised_note == ""
        assert math.isfinite(m.sharpe)
        assert math.isfinite(m.annual_return)
    ts = [i * 86_400 for i in range(366)]
    assert math.isfinite(compute_metrics(ts, [100.0 + i % 3 for i in range(366)]).sharpe)


def test_report_html_when_rendered_then_full_width_and_self_contained(batches) -> None:
    results = run_comparison(batches[:200], {"long": Constant(0.9)}, CONFIG)
    page = report_html(results, meta={"bundle": "b-1"}, warnings=["bar size differs"])
    assert "max-width:none" in page
    assert "width:100%" in page
    assert "<link" not in page
    assert "src='http" not in page
    assert "bar size differs" in page
    assert "<td class='text'>b-1</td>" in page


def test_report_when_one_symbol_cannot_be_sized_then_skipped_entries_noted_though_others_trade() -> (
    None
):
    market = SimMarketConfig(symbols=("A", "BTC"), seed=9)
    frame = simulate_frame(market, START, 200)
    frame.loc[frame["symbol"] == "BTC", ["open", "high", "low", "close"]] *= 600
    results = run_comparison(frame_batches(frame), {"long": Constant(0.9)}, CONFIG)
    for result in results.values():
        assert result.no_trade_reason is None
        assert {f.symbol for f in result.run.fills} == {"A"}
        assert result.run.sizing_misses > 0
    doc, page = _report(results)
    note = doc["strategies"]["long"]["sizing_note"]
    assert note.startswith("quantity rounds to 0 at these prices")
    assert "e.g. BTC at" in note
    assert "Entries skipped by sizing" in page
