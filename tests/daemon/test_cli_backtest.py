from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from daemon.cli import backtest as cli_backtest
from daemon.cli import train_xgb as cli_train_xgb
from strategy.market_sim import SimMarketConfig, simulate_frame

START = datetime(2024, 1, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def bars_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("bars") / "bars.csv"
    market = SimMarketConfig(symbols=("A", "B"), pattern_rate=0.05, pattern_drift_bps=40, seed=6)
    simulate_frame(market, START, 1500).drop(columns=["pattern", "direction"]).to_csv(
        path, index=False
    )
    return path


@pytest.mark.slow
def test_train_then_evaluate_then_backtest_when_bars_csv_then_reports_written(
    bars_file: Path, tmp_path: Path, capsys
) -> None:
    bundle = tmp_path / "bundle"
    assert (
        cli_train_xgb.main(
            [
                "xgb",
                "--dataset",
                str(bars_file),
                "--bundle",
                str(bundle),
                "--window",
                "40",
                "--folds",
                "2",
            ]
        )
        == 0
    )
    assert (bundle / "xgb" / "model.json").is_file()
    assert (bundle / "fusion.json").is_file()
    assert "oof auc" in capsys.readouterr().out

    config = tmp_path / "cfg.yaml"
    config.write_text(
        "bars:\n  window: 40\nstrategy:\n  enter_threshold: 0.55\n  min_confidence: 0.05\n"
    )
    report = tmp_path / "report"
    code = cli_backtest.main(
        [
            "backtest",
            "--config",
            str(config),
            "--bars",
            str(bars_file),
            "--report",
            str(report),
            "--bundle",
            str(bundle),
            "--no-progress",
            "--journal",
            str(tmp_path / "journal.sqlite"),
        ]
    )
    assert code == 0
    doc = json.loads((report / "report.json").read_text())
    assert set(doc["comparison"]) == {"rules", "xgb", "buy_and_hold"}
    assert "data:image/png;base64," in (report / "report.html").read_text()
    assert (tmp_path / "journal.sqlite").is_file()

    ev_report = tmp_path / "ev"
    code = cli_backtest.main(
        [
            "evaluate",
            "--bars",
            str(bars_file),
            "--bundle",
            str(bundle),
            "--config",
            str(config),
            "--report",
            str(ev_report),
            "--no-progress",
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert "auc" in out
    doc = json.loads((ev_report / "report.json").read_text())
    assert {"xgb", "fused"} <= set(doc["model_metrics"])


def test_backtest_when_bars_missing_then_one_line_error(tmp_path: Path, capsys) -> None:
    config = tmp_path / "cfg.yaml"
    config.write_text("bars:\n  window: 40\n")
    code = cli_backtest.main(
        [
            "backtest",
            "--config",
            str(config),
            "--bars",
            str(tmp_path / "nope.csv"),
            "--report",
            str(tmp_path / "r"),
            "--no-progress",
        ]
    )
    assert code == 1
    err = capsys.readouterr().err.strip()
    assert "nope.csv" in err
    assert len(err.splitlines()) == 1


@pytest.fixture(scope="module")
def coin_file(tmp_path_factory) -> Path:
    """15-minute bars of a $60,000 instrument."""
    path = tmp_path_factory.mktemp("coin") / "coin.csv"
    market = SimMarketConfig(
        symbols=("BTC",), start_price=60_000.0, base_volume=50.0, bar_seconds=900, seed=4
    )
    simulate_frame(market, START, 400).drop(columns=["pattern", "direction"]).to_csv(
        path, index=False
    )
    return path


def _run_backtest(tmp_path: Path, bars: Path, config_text: str, *extra: str) -> dict:
    config = tmp_path / "cfg.yaml"
    config.write_text(config_text)
    report = tmp_path / "report"
    argv = ["backtest", "--config", str(config), "--bars", str(bars), "--report", str(report)]
    assert cli_backtest.main([*argv, "--no-progress", *extra]) == 0
    return json.loads((report / "report.json").read_text())


def test_backtest_when_price_above_notional_then_no_trade_reason_printed_and_fractional_step_trades(
    coin_file: Path, tmp_path: Path, capsys
) -> None:
    base = "bars:\n  window: 40\nstrategy:\n  enter_threshold: 0.55\n  min_confidence: 0.05\n"
    doc = _run_backtest(tmp_path, coin_file, base)
    out = capsys.readouterr().out
    assert "  no trade: quantity rounds to 0 at these prices" in out
    assert "sharpe     n/a" in out
    assert "sharpe and annual return n/a (sample too short" in out
    assert doc["strategies"]["buy_and_hold"]["no_trade_reason"].startswith("quantity rounds to 0")
    meta = doc["meta"]
    assert meta["bar_seconds"] == 900
    assert meta["period_start"] == "2024-01-01T00:00:00+00:00"
    assert "spread 2 bps" in meta["costs"]
    assert meta["spread_bps"] == 2.0
    assert doc["comparison"]["rules"]["sharpe"] is None

    doc = _run_backtest(tmp_path, coin_file, base + "  quantity_step: 0.00000001\n")
    held = doc["strategies"]["buy_and_hold"]
    assert held["no_trade_reason"] is None
    [trade] = held["trades"]
    assert trade["exit_reason"] == "open"
    assert 0 < trade["quantity"] < 1
    assert "quantity_step 1e-08" in doc["meta"]["sizing"]


def test_backtest_when_bundle_trained_on_other_bar_size_then_warning_printed_and_recorded(
    bars_file: Path, coin_file: Path, tmp_path: Path, capsys
) -> None:
    from strategy.backtest.data import build_dataset, frame_batches
    from strategy.bars import BarStoreConfig
    from strategy.features import FeatureConfig, FeatureEngine
    from vlm_engine.dataset.bars import load_bars
    from vlm_engine.xgb import XgbTrainConfig, train_xgb

    store = BarStoreConfig(window=40)
    ds = build_dataset(
        frame_batches(load_bars(bars_file))[:400],
        store,
        FeatureEngine(config=FeatureConfig()),
        horizon=5,
    )
    labelled = ds.labelled()
    trained = train_xgb(
        ds.x[labelled],
        ds.y[labelled],
        ts=ds.ts[labelled],
        label_end=ds.label_end[labelled],
        feature_names=ds.feature_names,
        config=XgbTrainConfig(n_folds=2, num_boost_round=20),
        bar_seconds=60,
        horizon_bars=5,
    )
    bundle = tmp_path / "minute-bundle"
    trained.model.save(bundle / "xgb")
    config = "bars:\n  window: 40\nstrategy:\n  quantity_step: 0.0001\n"
    doc = _run_backtest(tmp_path, coin_file, config, "--bundle", str(bundle))
    captured = capsys.readouterr()
    [warning] = doc["warnings"]
    assert warning.startswith("the bundle was trained on 60 s bars, these bars are 900 s")
    assert f"warning: {warning}" in captured.err
    assert doc["meta"]["horizon_bars"] == 5
    assert doc["meta"]["bundle_bar_seconds"] == 60
    assert doc["meta"]["fusion"].startswith("fused = ")
    assert "minute-bundle" in doc["meta"]["bundle_id"]
    assert set(doc["strategies"]) == {"rules", "xgb", "buy_and_hold"}
