"""The backtest report's plots, drawn with matplotlib (Agg) and returned as base64 PNG for the page."""

from __future__ import annotations

import base64
import io
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from strategy.backtest.compare import StrategyResult
from strategy.backtest.metrics import drawdown


def _png(fig: Any) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode()


def _times(ts: list[int]) -> list[datetime]:
    return [datetime.fromtimestamp(t, tz=UTC) for t in ts]


def equity_plot(results: Mapping[str, StrategyResult]) -> str:
    """Equity curves (top) and drawdowns (bottom) of every contender, halts marked, as base64 PNG."""
    fig, (top, bottom) = plt.subplots(
        2, 1, figsize=(16, 7), sharex=True, gridspec_kw={"height_ratios": [2, 1]}
    )
    for name, r in results.items():
        if not r.run.ts:
            continue
        eq = r.run.equity_array()
        times = _times(r.run.ts)
        (line,) = top.plot(times, eq, label=name, linewidth=1)
        bottom.plot(times, -drawdown(eq), label=name, linewidth=1)
        for change in r.run.state_changes:
            top.axvline(change.ts, color=line.get_color(), linestyle="--", linewidth=1)
            top.annotate(
                f"{name}: {change.current} ({change.reason})",
                (change.ts, 1.0),
                xycoords=("data", "axes fraction"),
                rotation=90,
                va="top",
                ha="right",
                fontsize=7,
                color=line.get_color(),
            )
    top.set_ylabel("equity")
    top.legend(loc="upper left", fontsize=8)
    bottom.set_ylabel("drawdown")
    fig.autofmt_xdate()
    return _png(fig)


def calibration_plot(curves: Mapping[str, Mapping[str, list[float]]]) -> str:
    """Reliability diagram: predicted probability vs observed up-frequency per model."""
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1)
    for name, c in curves.items():
        if c.get("mean_p"):
            ax.plot(c["mean_p"], c["freq"], marker="o", label=name)
    ax.set_xlabel("predicted P(up)")
    ax.set_ylabel("observed frequency")
    ax.legend(fontsize=8)
    return _png(fig)
