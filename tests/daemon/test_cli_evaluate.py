"""`vlmtrader evaluate` with a full bundle on bars of another size: it runs, says so, writes a
report the shared checker accepts; and on the bundle's own bar size, evaluate's CLIP-only P(up)
is the daemon's clip scorer's (both through fusion.recalibrate)."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import msgspec
import numpy as np
import pytest

from daemon.backtest import DEFAULT_HORIZON_BARS, default_horizon
from daemon.model.loader import load_bundle
from daemon.model.vision import CachedVision, ClipVision
from strategy.backtest.data import frame_batches, precompute_signals
from strategy.backtest.engine import BacktestConfig
from strategy.backtest.evaluate import EvaluationConfig, evaluate
from strategy.bars import BarStoreConfig
from strategy.fusion import Recalibration
from strategy.market_sim import SimMarketConfig, simulate_frame
from tests.daemon.ml_helpers import quick_bundle
from vlm_engine.xgb import XgbTrainConfig

DAY = 86400
CHECKER = Path(__file__).resolve().parents[2].parent / "shared" / "tools" / "check_report.py"


@pytest.fixture(scope="module")
def daily_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    """Daily simulated bars evaluated with the quick (60 s) bundle: bars file, report dir, stderr."""
    base = tmp_path_factory.mktemp("evaluate-daily")
    market = SimMarketConfig(symbols=("A", "B", "C"), bar_seconds=DAY, seed=5)
    frame = simulate_frame(market, datetime(2010, 1, 1, tzinfo=UTC), 420)
    bars = base / "daily.parquet"
    frame[["symbol", "ts", "open", "high", "low", "close", "volume"]].to_parquet(bars)
    report = base / "report"
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from daemon.cli import main; sys.exit(main())",
            "evaluate",
            "--bars",
            str(bars),
            "--bundle",
            str(quick_bundle()),
            "--report",
            str(report),
            "--no-progress",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return bars, report, done.stderr + done.stdout


def test_evaluate_when_bundle_of_another_bar_size_then_runs_and_says_so(
    daily_run: tuple[Path, Path, str],
) -> None:
    _, report, output = daily_run
    assert "warning: the bundle was trained on 60 s bars, these are 86400 s bars" in output
    doc = json.loads((report / "report.json").read_text())
    assert any("trained on 60 s bars" in n for n in doc["notes"])
    assert doc["horizon_bars"] == 5
    assert doc["bar_seconds"] == DAY
    assert set(doc["model_metrics"]) == {"clip", "xgb_technical", "xgb", "fused", "always_long"}
    for m in doc["model_metrics"].values():
        assert {
            "auc",
            "auc_ci_low",
            "auc_ci_high",
            "brier",
            "ece",
            "log_loss",
            "n",
            "fold_auc",
        } <= set(m)
    assert {"fused - xgb_technical", "clip - xgb_technical"} <= set(doc["differences"])
    assert doc["bootstrap"]["block_bars"] == 20
    assert doc["bootstrap"]["resamples"] >= 500
    assert doc["fusion"].startswith("fused = ")
    assert doc["verdict"] in output
    assert doc["verdict"] in (report / "report.html").read_text()
    if CHECKER.is_file():
        check = subprocess.run(
            [sys.executable, str(CHECKER), str(report)], capture_output=True, text=True, check=False
        )
        assert check.returncode == 0, check.stdout + check.stderr


def test_evaluate_when_clip_only_then_same_p_up_as_daemon_clip_scorer() -> None:
    models = load_bundle(quick_bundle())  # 60 s bars, as the daemon would trade them
    # A map that moves P(up) for sure (the quick bundle's own may be refused to identity).
    fusion = msgspec.structs.replace(
        models.fusion, recalibrate={"clip": Recalibration(a=1.7, b=-0.4)}
    )
    market = SimMarketConfig(symbols=("A", "B"), seed=9)
    batches = frame_batches(simulate_frame(market, datetime(2024, 3, 1, tzinfo=UTC), 700))
    store = BarStoreConfig(window=64)
    config = EvaluationConfig(
        horizon_bars=5,
        features=models.features,
        fusion=fusion,
        train=XgbTrainConfig(n_folds=3, num_boost_round=20, nthread=1),
        backtest=BacktestConfig(bars=store),
    )
    vision = CachedVision(inner=ClipVision(engine=models.engine))
    ev = evaluate(batches, config, vision=vision, pca=models.pca)
    signals = precompute_signals(models.scorer(mode="clip", fusion=fusion), batches, store).signals
    d = ev.predictions
    ts = [int(t.timestamp()) for t in d["ts"]]
    live = np.array([signals[(s, t)].p_up for s, t in zip(d["symbol"], ts, strict=True)])
    np.testing.assert_allclose(d["p_clip"].to_numpy(), live, atol=1e-6)
    assert not np.allclose(d["p_clip_raw"].to_numpy(), live, atol=1e-3)


def test_default_horizon_when_bar_sizes_match_or_not_then_bundle_or_five() -> None:
    assert default_horizon(60, 7, 60) == 7
    assert default_horizon(60, 7, DAY) == DEFAULT_HORIZON_BARS == 5
