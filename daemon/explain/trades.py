"""The backtest's trades explained after the run (never inside the strategy loop), by the same code
as the daemon's orders: each ML contender's round trips are traced to the order that opened them,
its window is scored again by a fresh scorer of the same mode (ClipVision keeps the charts it
scored), and daemon/explain/evidence.py writes the explanation; each trade gets a self-contained
page (chart and analogs inlined) that report.html links."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import msgspec

from daemon.explain.charts import ChartStore
from daemon.explain.config import ExplainConfig
from daemon.explain.evidence import accepted, bundle_view, explain_batch
from daemon.explain.page import html_page
from daemon.explain.values import CHARTS_DIR, Explanation
from strategy.backtest.compare import StrategyResult
from strategy.backtest.data import iter_windows
from strategy.backtest.metrics import Trade
from strategy.bars import BarStoreConfig, Window
from strategy.ml_scorer import MLScorer
from strategy.types import Bar, Fill, Order, Signal

EXPLAIN_DIR = "explain"  # under the report directory
SCORE_CHUNK = 64


class TradeLink(msgspec.Struct, frozen=True, kw_only=True):
    """Where a trade's explanation page is (relative to report.html) and its one-line gist."""

    href: str
    label: str


def opening_order(trade: Trade, fills: Sequence[Fill], orders: Mapping[str, Order]) -> Order | None:
    """The order whose fill opened the round trip (its first fill at the trip's entry time)."""
    for fill in fills:
        if fill.symbol == trade.symbol and int(fill.ts.timestamp()) == trade.entry_ts:
            return orders.get(fill.client_order_id)
    return None


def _label(doc: Explanation) -> str:
    top = doc.texts[0].pattern if doc.texts else "no chart"
    return f"{doc.scorer} P(up) {doc.fusion.p_up:.2f}; CLIP: {top}"


def explain_trades(
    *,
    results: Mapping[str, StrategyResult],
    contenders: Mapping[str, Any],
    lookups: Mapping[str, Any],
    bundle: Any,
    batches: Sequence[Sequence[Bar]],
    bars: BarStoreConfig,
    report_dir: Path,
    config: ExplainConfig,
    limit: int,
) -> dict[str, list[TradeLink | None]]:
    """Explain the first `limit` trades of each ML contender; per contender, one link per trade
    (None for a trade past the limit, or whose opening order has no window)."""
    out_dir = Path(report_dir) / EXPLAIN_DIR
    charts = ChartStore(directory=out_dir / CHARTS_DIR)
    view = bundle_view(bundle)
    plans: dict[str, list[tuple[int, Order]]] = {}
    for name, result in results.items():
        if not isinstance(contenders.get(name), MLScorer):
            continue
        orders = {o.client_order_id: o for o in result.run.orders}
        plans[name] = [
            (i, order)
            for i, trade in enumerate(result.trades[:limit])
            if (order := opening_order(trade, result.run.fills, orders)) is not None
        ]
    needed = {(o.symbol, int(o.created_ts.timestamp())) for plan in plans.values() for _, o in plan}
    windows = _windows(batches, bars, needed)
    links: dict[str, list[TradeLink | None]] = {}
    for name, plan in plans.items():
        live: MLScorer = contenders[name]
        scorer = bundle.scorer(mode=live.mode, name=name)
        row: list[TradeLink | None] = [None] * len(results[name].trades)
        for start in range(0, len(plan), SCORE_CHUNK):
            chunk = [(i, o) for i, o in plan[start : start + SCORE_CHUNK] if _at(o) in windows]
            for i, doc in _explain_chunk(
                chunk, windows, scorer, lookups.get(name), view, charts, config
            ):
                page = out_dir / f"{doc.client_order_id}.html"
                page.write_text(html_page(msgspec.to_builtins(doc), charts.read))
                row[i] = TradeLink(href=f"{EXPLAIN_DIR}/{page.name}", label=_label(doc))
        links[name] = row
    return links


def _at(order: Order) -> tuple[str, int]:
    return order.symbol, int(order.created_ts.timestamp())


def _windows(
    batches: Sequence[Sequence[Bar]], bars: BarStoreConfig, needed: set[tuple[str, int]]
) -> dict[tuple[str, int], Window]:
    found: dict[tuple[str, int], Window] = {}
    if not needed:
        return found
    for chunk in iter_windows(batches, bars):
        for w in chunk:
            key = (w.symbol, int(w.timestamps[-1]))
            if key in needed:
                found[key] = w
    return found


def _explain_chunk(
    chunk: list[tuple[int, Order]],
    windows: Mapping[tuple[str, int], Window],
    scorer: MLScorer,
    lookup: Any,
    view: Any,
    charts: ChartStore,
    config: ExplainConfig,
) -> list[tuple[int, Explanation]]:
    """Score the chunk's windows in one call and explain its orders (signals: the run's own)."""
    if not chunk:
        return []
    keys = list(dict.fromkeys(_at(o) for _, o in chunk))
    fresh = scorer.score([windows[k] for k in keys])
    ran: dict[tuple[str, int], Signal] = {}
    for s in fresh:
        key = (s.symbol, int(s.ts.timestamp()))
        seen = lookup.lookup(*key) if lookup is not None else None
        ran[key] = seen if seen is not None else s
    by_order = {o.client_order_id: i for i, o in chunk}
    docs = explain_batch(
        scorer=scorer,
        evidence=scorer.evidence,
        signals=list(ran.values()),
        decision=accepted([o for _, o in chunk]),
        view=view,
        put_chart=charts.put,
        top_k=config.top_k,
        analogs_k=config.analogs_k,
    )
    return [(by_order[d.client_order_id], d) for d in docs]
