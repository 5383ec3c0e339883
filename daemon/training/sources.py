"""The build's two sources of labelled bars: the user's bar files (detector labels) and the simulated market (planted labels).

Both return a long frame (symbol, ts, open, high, low, close, volume, pattern) sorted by
(symbol, ts) with UTC timestamps, and a source string for the card.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from daemon.training.config import BootstrapConfig, LabelConfig
from daemon.training.labels import detector_labels
from strategy.market_sim import simulate_frame
from vlm_engine.dataset.bars import load_bars

SIM_START = datetime(2024, 1, 1, tzinfo=UTC)
DAY = 86_400


def user_bars(path: Path, labels: LabelConfig) -> tuple[pd.DataFrame, str]:
    """The bars at path (file or directory, `load_bars` formats) labelled by the TA-Lib detectors."""
    frame = load_bars(path)
    return detector_labels(frame, labels), f"bars:{path}"


def sim_bars(cfg: BootstrapConfig) -> tuple[pd.DataFrame, str]:
    """`cfg.bars` timestamps of the simulated market with its planted patterns as labels.

    Daily bars (bar_seconds 86400) are put on business days, as an exchange's daily bars are.
    """
    frame = simulate_frame(cfg.market, SIM_START, cfg.bars)
    if cfg.market.bar_seconds == DAY:
        frame["ts"] = business_days(frame["ts"])
    frame = frame.sort_values(["symbol", "ts"], kind="stable").reset_index(drop=True)
    source = f"sim:seed={cfg.market.seed}:bars={cfg.bars}:symbols={len(cfg.market.symbols)}"
    return frame[["symbol", "ts", "open", "high", "low", "close", "volume", "pattern"]], source


def business_days(ts: pd.Series) -> pd.Series:
    """Consecutive calendar days mapped onto consecutive business days (same order, same start)."""
    stamps = pd.DatetimeIndex(pd.to_datetime(ts, utc=True))
    days = stamps.unique().sort_values()
    business = pd.bdate_range(days[0], periods=days.size)
    return pd.Series(business[days.get_indexer(stamps)], index=ts.index)
