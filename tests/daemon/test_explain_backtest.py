"""`vlmtrader backtest --bundle`: report.html links each ML trade to its explanation page (the chart
it scored, CLIP's texts, analogs), written after the run by the daemon's explanation code."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

from daemon.cli import main as cli_main
from strategy.market_sim import SimMarketConfig, simulate_frame
from tests.daemon.ml_helpers import quick_bundle

CONFIG = """\
mode: backtest
bars: {window: 32, bar_seconds: 60}
strategy: {hold_bars: 3, position_notional: 2000, min_confidence: 0.0, enter_threshold: 0.51}
"""


def test_backtest_when_full_bundle_then_each_shown_ml_trade_links_its_explanation(
    tmp_path: Path,
) -> None:
    frame = simulate_frame(
        SimMarketConfig(symbols=("SIMA", "SIMB"), seed=21, pattern_rate=0.08),
        datetime(2026, 5, 4, 14, tzinfo=UTC),
        160,
    )
    bars = tmp_path / "bars.csv"
    frame.drop(columns=["pattern", "direction"]).to_csv(bars, index=False)
    (tmp_path / "cfg.yaml").write_text(CONFIG)
    report = tmp_path / "report"
    args = ["backtest", "--config", str(tmp_path / "cfg.yaml"), "--bars", str(bars)]
    code = cli_main([*args, "--report", str(report), "--bundle", str(quick_bundle()),
                     "--no-progress"])  # fmt: skip
    assert code == 0
    page = (report / "report.html").read_text()
    links = re.findall(r"<a href='(explain/[A-Za-z0-9._-]+\.html)'>([^<]+)</a>", page)
    assert links, "the fused, clip and xgb contenders traded and each trade links its page"
    assert all("P(up)" in label for _, label in links)
    for href, _ in links[:3]:
        trade_page = (report / href).read_text()
        assert "The chart the model scored" in trade_page
        assert "data:image/png;base64," in trade_page
        assert "CLIP&#x27;s nearest texts" in trade_page or "CLIP's nearest texts" in trade_page
