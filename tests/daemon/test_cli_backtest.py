from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from daemon import cli_backtest, cli_train_xgb
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
