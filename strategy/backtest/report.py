"""The backtest report as values: an HTML page (PNG plots of strategy/backtest/plots.py embedded
as base64) and a JSON document.

Nothing here writes files; the CLI writes the returned strings and bytes where the user asked.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import msgspec

from strategy.backtest.compare import StrategyResult, sizing_note
from strategy.backtest.metrics import SAMPLE_TOO_SHORT, Trade
from strategy.backtest.plots import calibration_plot, equity_plot

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
_ANNUALISED = frozenset({"annual_return", "annual_volatility", "sharpe", "sortino"})
TRADES_SHOWN = 500  # per contender in the page; report.json has them all
_STYLE = (
    "body{font-family:sans-serif;margin:1em 2vw;max-width:none}"
    "table{border-collapse:collapse;width:100%;margin-bottom:1em}"
    "td,th{border:1px solid #ccc;padding:4px 8px;text-align:right;white-space:nowrap}"
    "th:first-child,td:first-child,td.text{text-align:left;white-space:normal}"
    ".scroll{overflow-x:auto}img{width:100%;height:auto}"
    ".warn{background:#fff4ce;border:1px solid #e0b000;padding:.5em 1em}"
    "details{margin-bottom:.5em}summary{cursor:pointer}"
)


def _fmt(value: float, kind: str) -> str:
    if isinstance(value, float) and not math.isfinite(value):
        return "inf" if value > 0 else "n/a"
    if kind == "pct":
        return f"{value * 100:.2f}%"
    if kind == "int":
        return str(int(value))
    return f"{value:.3f}"


def _table(
    header: list[str], rows: list[list[str]], *, text_columns: int = 1, html_last: bool = False
) -> str:
    """html_last: the last column of each row is markup built here (already escaped)."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    last = len(header) - 1 if html_last else -1
    body = "".join(
        "<tr>"
        + "".join(
            f"<td class='text'>{c}</td>"
            if i == last
            else f"<td class='text'>{html.escape(c)}</td>"
            if i < text_columns
            else f"<td>{html.escape(c)}</td>"
            for i, c in enumerate(row)
        )
        + "</tr>"
        for row in rows
    )
    return f"<div class='scroll'><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>"


def _iso(ts: int | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, tz=UTC).isoformat()


def _trade_doc(trade: Trade) -> dict[str, Any]:
    doc: dict[str, Any] = msgspec.to_builtins(trade)
    doc["entry_time"] = _iso(trade.entry_ts)
    doc["exit_time"] = _iso(trade.exit_ts)
    return doc


def strategy_details(result: StrategyResult) -> dict[str, Any]:
    """What report.json says about one contender beyond its metrics: why no trade, signals,
    risk rejections by reason, halts and other trading-state changes, round trips, per symbol."""
    run = result.run
    return {
        "no_trade_reason": result.no_trade_reason,
        "signals": {
            "count": run.signals,
            "cleared_entry_rule": run.signals_cleared,
            "max_abs_2p_minus_1": run.max_edge,
            "max_confidence": run.max_confidence,
        },
        "intents_checked": run.decisions,
        "sizing_misses": run.sizing_misses,
        "sizing_note": sizing_note(run),
        "rejections": dict(sorted(run.rejections.items(), key=lambda kv: (-kv[1], kv[0]))),
        "halts": [
            {
                "ts": c.ts.isoformat(),
                "previous": str(c.previous),
                "current": str(c.current),
                "reason": c.reason,
                "detail": c.detail,
            }
            for c in run.state_changes
        ],
        "trades": [_trade_doc(t) for t in result.trades],
        "per_symbol": [msgspec.to_builtins(s) for s in result.symbols],
    }


def report_json(
    results: Mapping[str, StrategyResult],
    *,
    model_metrics: Mapping[str, Mapping[str, float]] | None = None,
    calibration: Mapping[str, Mapping[str, list[float]]] | None = None,
    meta: Mapping[str, Any] | None = None,
    warnings: Sequence[str] = (),
) -> bytes:
    """The machine-readable report: metrics per contender (annualised figures null, with the
    reason, on a short sample), their diagnostics, equity curves, model metrics, curves."""
    doc = {
        "meta": dict(meta or {}),
        "warnings": list(warnings),
        "comparison": {n: msgspec.to_builtins(r.metrics) for n, r in results.items()},
        "strategies": {n: strategy_details(r) for n, r in results.items()},
        "equity": {n: {"ts": r.run.ts, "equity": r.run.equity} for n, r in results.items()},
        "model_metrics": {k: dict(v) for k, v in (model_metrics or {}).items()},
        "calibration": {k: dict(v) for k, v in (calibration or {}).items()},
    }
    return msgspec.json.encode(_finite(doc))


def _finite(value: Any) -> Any:
    """JSON has no inf/NaN: NaN (not computed) becomes null, infinities the strings "inf"/"-inf"."""
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else str(value)
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def _money(value: float) -> str:
    return f"{value:,.2f}"


def _comparison_rows(results: Mapping[str, StrategyResult]) -> list[list[str]]:
    rows = []
    for name, r in results.items():
        m = r.metrics
        rows.append(
            [name]
            + [
                SAMPLE_TOO_SHORT
                if key in _ANNUALISED and m.annualised_note
                else _fmt(getattr(m, key), kind)
                for key, _, kind in _COLUMNS
            ]
        )
    return rows


def _risk_sections(results: Mapping[str, StrategyResult]) -> list[str]:
    reasons = sorted(
        {k for r in results.values() for k in r.run.rejections},
        key=lambda k: -sum(r.run.rejections.get(k, 0) for r in results.values()),
    )
    parts = ["<h2>Risk rejections by reason</h2>"]
    if reasons:
        rows = [
            [name, str(r.run.decisions)]
            + [f"{r.run.rejections.get(k, 0):,}" for k in reasons]
            + [f"{r.run.risk_rejections:,}"]
            for name, r in results.items()
        ]
        parts.append(_table(["strategy", "intents checked", *reasons, "total rejected"], rows))
    else:
        parts.append("<p>No intent was rejected by the risk engine.</p>")
    parts.append("<h2>Halts and trading-state changes</h2>")
    changes = [
        [name, c.ts.isoformat(), f"{c.previous} -> {c.current}", c.reason, c.detail]
        for name, r in results.items()
        for c in r.run.state_changes
    ]
    if changes:
        parts.append(
            _table(["strategy", "time", "state", "reason", "detail"], changes, text_columns=5)
        )
    else:
        parts.append("<p>No halts: every contender stayed active.</p>")
    return parts


def _why(link: Any) -> str:
    """A trade's explanation link (href and label, daemon/explain/trades.py), or a dash."""
    if link is None:
        return "-"
    return f"<a href='{html.escape(link.href)}'>{html.escape(link.label)}</a>"


def _trade_sections(
    results: Mapping[str, StrategyResult], links: Mapping[str, Sequence[Any]] | None = None
) -> list[str]:
    parts = ["<h2>Per symbol</h2>"]
    rows = [
        [
            name,
            s.symbol,
            str(s.trades),
            _money(s.pnl),
            _money(s.realized_pnl),
            _money(s.unrealized_pnl),
            _fmt(s.hit_rate, "pct"),
            _fmt(s.exposure, "pct"),
        ]
        for name, r in results.items()
        for s in r.symbols
    ]
    header = [
        "strategy",
        "symbol",
        "trades",
        "P&L",
        "realised",
        "open (marked)",
        "hit rate",
        "exposure",
    ]
    parts.append(_table(header, rows, text_columns=2) if rows else "<p>No trades.</p>")
    parts.append("<h2>Trades (round trips)</h2>")
    header = [
        "symbol",
        "side",
        "entry",
        "entry price",
        "exit",
        "exit price",
        "qty",
        "P&L",
        "bars held",
        "exit reason",
    ]
    for name, r in results.items():
        shown = r.trades[:TRADES_SHOWN]
        why = (links or {}).get(name)
        more = (
            f" (first {TRADES_SHOWN}; all in report.json)" if len(r.trades) > TRADES_SHOWN else ""
        )
        rows = [
            [
                t.symbol,
                t.side,
                _iso(t.entry_ts) or "",
                f"{t.entry_price:,.4f}",
                _iso(t.exit_ts) or "open",
                f"{t.exit_price:,.4f}",
                f"{t.quantity:g}",
                _money(t.pnl),
                str(t.bars_held),
                t.exit_reason,
                *([_why(why[k] if k < len(why) else None)] if why is not None else []),
            ]
            for k, t in enumerate(shown)
        ]
        table_header = [*header, "why (chart, CLIP texts, analogs)"] if why is not None else header
        parts.append(
            f"<details><summary>{html.escape(name)}: {len(r.trades):,} round trips{more}</summary>"
            + (
                _table(table_header, rows, text_columns=2, html_last=why is not None)
                if rows
                else "<p>none</p>"
            )
            + "</details>"
        )
    return parts


def report_html(
    results: Mapping[str, StrategyResult],
    *,
    model_metrics: Mapping[str, Mapping[str, float]] | None = None,
    calibration: Mapping[str, Mapping[str, list[float]]] | None = None,
    meta: Mapping[str, Any] | None = None,
    title: str = "vlmtrader backtest",
    warnings: Sequence[str] = (),
    evaluation: Mapping[str, Any] | None = None,
    trade_links: Mapping[str, Sequence[Any]] | None = None,
) -> str:
    """A self-contained, full-width HTML page: run details, warnings, comparison, why no trade,
    equity/drawdown with halts, risk rejections and halts, per-symbol table, trade list, models;
    with `evaluation` (evaluate's summary) its verdict, model metrics with intervals and paired
    differences come first. trade_links: per contender, one link per trade (an object with
    href and label, or None) to its explanation page."""
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
        "<meta name='viewport' content='width=device-width, initial-scale=1'>",
        f"<style>{_STYLE}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
    ]
    if meta:
        parts.append(
            _table(["run", ""], [[str(k), str(v)] for k, v in meta.items()], text_columns=2)
        )
    if warnings:
        items = "".join(f"<li>{html.escape(w)}</li>" for w in warnings)
        parts.append(f"<div class='warn'><b>Warnings</b><ul>{items}</ul></div>")
    if evaluation:
        parts.append(evaluation_html(evaluation))
    parts.append("<h2>Comparison</h2>")
    parts.append(
        _table(["strategy"] + [label for _, label, _ in _COLUMNS], _comparison_rows(results))
    )
    notes = sorted(
        {r.metrics.annualised_note for r in results.values() if r.metrics.annualised_note}
    )
    for note in notes:
        parts.append(f"<p>Annual return, volatility, Sharpe and Sortino: {html.escape(note)}.</p>")
    idle = [(n, r.no_trade_reason) for n, r in results.items() if r.no_trade_reason]
    if idle:
        parts.append("<h2>No trades</h2><ul>")
        parts.extend(
            f"<li><b>{html.escape(n)}</b>: {html.escape(why or '')}</li>" for n, why in idle
        )
        parts.append("</ul>")
    unsized = [(n, sizing_note(r.run)) for n, r in results.items() if not r.no_trade_reason]
    if any(note for _, note in unsized):
        parts.append("<h2>Entries skipped by sizing</h2><ul>")
        parts.extend(
            f"<li><b>{html.escape(n)}</b>: {html.escape(note)}</li>" for n, note in unsized if note
        )
        parts.append("</ul>")
    parts.append("<h2>Equity and drawdown</h2>")
    parts.append(f"<img alt='equity' src='data:image/png;base64,{equity_plot(results)}'>")
    parts.extend(_risk_sections(results))
    parts.extend(_trade_sections(results, trade_links))
    if model_metrics:
        keys = ["auc", "brier", "ece", "log_loss", "hit_rate", "n"]
        mrows = [
            [name] + [_fmt(float(m.get(k, float("nan"))), "num") for k in keys]
            for name, m in model_metrics.items()
        ]
        parts.append("<h2>Models on the test period</h2>")
        parts.append(_table(["model", *keys], mrows))
    if calibration:
        parts.append("<h2>Calibration</h2>")
        parts.append(
            f"<img alt='calibration' style='max-width:40em' "
            f"src='data:image/png;base64,{calibration_plot(calibration)}'>"
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
