"""The backtest report as values: an HTML page (PNG plots embedded as base64) and a JSON document.

Nothing here writes files; the CLI writes the returned strings and bytes where the user asked.
"""

from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import msgspec
import numpy as np

from strategy.backtest.compare import StrategyResult
from strategy.backtest.metrics import drawdown

_COLUMNS = (
    ("total_return", "Total return", "pct"),
    ("annual_return", "Annual return", "pct"),
    ("annual_volatility", "Volatility", "pct"),
    ("sharpe", "Sharpe", "num"),
    ("sortino", "Sortino", "num"),
    ("max_drawdown", "Max DD", "pct"),
    ("max_drawdown_bars", "Max DD bars", "int"),
    ("hit_rate", "Hit rate", "pct"),
    ("profit_factor", "Profit factor", "num"),
    ("turnover", "Turnover", "num"),
    ("exposure", "Exposure", "pct"),
    ("trades", "Trades", "int"),
)


def _png(fig: Any) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode()


def _times(ts: list[int]) -> list[datetime]:
    return [datetime.fromtimestamp(t, tz=UTC) for t in ts]


def equity_plot(results: Mapping[str, StrategyResult]) -> str:
    """Equity curves (top) and drawdowns (bottom) of every contender, as base64 PNG."""
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 6), sharex=True)
    for name, r in results.items():
        if not r.run.ts:
            continue
        eq = r.run.equity_array()
        times = _times(r.run.ts)
        top.plot(times, eq, label=name, linewidth=1)
        bottom.plot(times, -drawdown(eq), label=name, linewidth=1)
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


def _fmt(value: float, kind: str) -> str:
    if isinstance(value, float) and not math.isfinite(value):
        return "inf" if value > 0 else "n/a"
    if kind == "pct":
        return f"{value * 100:.2f}%"
    if kind == "int":
        return str(int(value))
    return f"{value:.3f}"


def _table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def report_json(
    results: Mapping[str, StrategyResult],
    *,
    model_metrics: Mapping[str, Mapping[str, float]] | None = None,
    calibration: Mapping[str, Mapping[str, list[float]]] | None = None,
    meta: Mapping[str, Any] | None = None,
) -> bytes:
    """The machine-readable report: metrics per contender, equity curves, model metrics, curves."""
    doc = {
        "meta": dict(meta or {}),
        "comparison": {n: msgspec.to_builtins(r.metrics) for n, r in results.items()},
        "equity": {n: {"ts": r.run.ts, "equity": r.run.equity} for n, r in results.items()},
        "model_metrics": {k: dict(v) for k, v in (model_metrics or {}).items()},
        "calibration": {k: dict(v) for k, v in (calibration or {}).items()},
    }
    return msgspec.json.encode(_finite(doc))


def _finite(value: Any) -> Any:
    """JSON has no inf/NaN: write them as strings."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def report_html(
    results: Mapping[str, StrategyResult],
    *,
    model_metrics: Mapping[str, Mapping[str, float]] | None = None,
    calibration: Mapping[str, Mapping[str, list[float]]] | None = None,
    meta: Mapping[str, Any] | None = None,
    title: str = "vlmtrader backtest",
    evaluation: Mapping[str, Any] | None = None,
) -> str:
    """A self-contained HTML page: comparison table, equity/drawdown plot, model metrics, calibration;
    with `evaluation` (evaluate's summary) first its verdict, model metrics with intervals and
    paired differences."""
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}"
        "th:first-child,td:first-child{text-align:left}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
    ]
    if meta:
        parts.append(
            "<p>"
            + "<br>".join(f"{html.escape(str(k))}: {html.escape(str(v))}" for k, v in meta.items())
            + "</p>"
        )
    if evaluation:
        parts.append(evaluation_html(evaluation))
    rows = [
        [name] + [_fmt(getattr(r.metrics, key), kind) for key, _, kind in _COLUMNS]
        for name, r in results.items()
    ]
    parts.append("<h2>Comparison</h2>")
    parts.append(_table(["strategy"] + [label for _, label, _ in _COLUMNS], rows))
    parts.append("<h2>Equity and drawdown</h2>")
    parts.append(f"<img alt='equity' src='data:image/png;base64,{equity_plot(results)}'>")
    if model_metrics:
        keys = ["auc", "brier", "ece", "log_loss", "hit_rate", "count"]
        mrows = [
            [name] + [_fmt(float(m.get(k, float("nan"))), "num") for k in keys]
            for name, m in model_metrics.items()
        ]
        parts.append("<h2>Models on the test period</h2>")
        parts.append(_table(["model", *keys], mrows))
    if calibration:
        parts.append("<h2>Calibration</h2>")
        parts.append(
            f"<img alt='calibration' src='data:image/png;base64,{calibration_plot(calibration)}'>"
        )
    parts.append("</body></html>")
    return "\n".join(parts)


def evaluation_html(evaluation: Mapping[str, Any]) -> str:
    """Verdict, what fused is, notes, per-model metrics with AUC intervals, paired differences."""
    boot = evaluation.get("bootstrap", {})
    parts = [
        f"<h2>Verdict</h2><p><b>{html.escape(str(evaluation.get('verdict', '')))}</b></p>",
        f"<p>{html.escape(str(evaluation.get('fusion', '')))}; horizon "
        f"{evaluation.get('horizon_bars')} bars of {evaluation.get('bar_seconds')} s; base rate "
        f"{_fmt(float(evaluation.get('base_rate', float('nan'))), 'num')}; "
        f"{boot.get('confidence', 0.95):.0%} intervals by moving-block bootstrap over time "
        f"({boot.get('block_bars')}-bar blocks, {boot.get('resamples')} resamples)</p>",
    ]
    notes = evaluation.get("notes") or []
    if notes:
        parts.append("<ul>" + "".join(f"<li>{html.escape(str(n))}</li>" for n in notes) + "</ul>")
    keys = ("auc", "auc_ci_low", "auc_ci_high", "brier", "ece", "log_loss", "n")
    rows = [
        [name]
        + [_fmt(float(m.get(k, float("nan"))), "int" if k == "n" else "num") for k in keys]
        + [" ".join(_fmt(float(a), "num") for a in m.get("fold_auc", []))]
        for name, m in evaluation.get("model_metrics", {}).items()
    ]
    parts.append("<h2>Models out of sample</h2>")
    parts.append(_table(["model", *keys, "fold AUCs"], rows))
    diffs = evaluation.get("differences") or {}
    if diffs:
        drows = [
            [name] + [_fmt(float(d[k]), "num") for k in ("diff", "ci_low", "ci_high")]
            for name, d in diffs.items()
        ]
        parts.append("<h2>Paired AUC differences</h2>")
        parts.append(_table(["difference", "diff", "ci_low", "ci_high"], drows))
    return "\n".join(parts)


def equity_summary(results: Mapping[str, StrategyResult]) -> dict[str, float]:
    """Final equity per contender (for logs and the CLI's one-line summary)."""
    return {
        n: float(np.asarray(r.run.equity)[-1]) if r.run.equity else 0.0 for n, r in results.items()
    }
