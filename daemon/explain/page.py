"""An explanation for people: terminal text (`vlmtrader explain`) and a self-contained HTML page with
the chart and the analogs' charts inlined (`vlmtrader explain --open`, the backtest's trade pages)."""

from __future__ import annotations

import base64
import html
from collections.abc import Callable, Mapping
from typing import Any

ReadChart = Callable[[str], bytes | None]


def _pct(value: Any) -> str:
    return "-" if value is None else f"{float(value) * 100:+.2f}%"


def _num(value: Any, digits: int = 3) -> str:
    return "-" if value is None else f"{float(value):.{digits}f}"


def terminal_text(doc: Mapping[str, Any]) -> str:
    """The explanation as lines for a terminal: order, texts, patterns, contributions, analogs."""
    fusion = doc.get("fusion") or {}
    risk = doc.get("risk") or {}
    lines = [
        f"{doc['client_order_id']}: {doc['side']} {doc['quantity']:g} {doc['symbol']} at "
        f"{doc['ts']} ({doc.get('reason') or 'no reason'}), scorer {doc['scorer']}"
        + (
            f", bundle {doc['bundle_id']} (chart spec {doc['spec_hash']})"
            if doc.get("bundle_id")
            else ""
        ),
        f"  signal: {fusion.get('describe', '')}",
        f"  P(up) {_num(fusion.get('p_up'))}  disagreement {_num(fusion.get('disagreement'))}  "
        f"entropy {_num(fusion.get('entropy'))} bits  models "
        + ", ".join(f"{m} {_num(p)}" for m, p in (fusion.get("probabilities") or {}).items()),
        f"  risk: {'accepted' if risk.get('accepted') else 'rejected'} ({risk.get('reason', '')}"
        + (f": {risk['detail']}" if risk.get("detail") else "")
        + ")",
    ]
    if doc.get("reasons"):
        lines.append(f"  reasons: {', '.join(doc['reasons'])}")
    chart = doc.get("chart")
    if chart:
        lines.append(f"  chart: {chart['url']}")
    if doc.get("texts"):
        lines.append("  CLIP read the chart as:")
        lines.extend(
            f"    {t['similarity']:+.3f}  {t['text']}  [{t['pattern']}]" for t in doc["texts"]
        )
    patterns = sorted((doc.get("patterns") or {}).items(), key=lambda kv: -kv[1])[:5]
    if patterns:
        lines.append("  patterns: " + ", ".join(f"{n} {p:.2f}" for n, p in patterns))
    if doc.get("contributions"):
        lines.append("  XGBoost contributions (log-odds, + toward up):")
        lines.extend(f"    {c['value']:+.4f}  {c['feature']}" for c in doc["contributions"])
    analogs = doc.get("analogs") or []
    if analogs:
        lines.append("  nearest training charts, and what followed them:")
        lines.extend(
            f"    {a['similarity']:.3f}  {a['symbol']} {a['ts']}  forward return "
            f"{_pct(a.get('forward_return'))}  [{', '.join(a.get('patterns') or ()) or 'none'}]"
            for a in analogs
        )
        returns = [a["forward_return"] for a in analogs if a.get("forward_return") is not None]
        if returns:
            up = sum(r > 0 for r in returns)
            lines.append(
                f"    {up} of {len(returns)} rose; mean forward return "
                f"{_pct(sum(returns) / len(returns))}"
            )
    return "\n".join(lines)


def _img(png: bytes | None, alt: str, width: int = 256) -> str:
    if png is None:
        return f"<p><i>{html.escape(alt)}: image not kept (retention)</i></p>"
    data = base64.b64encode(png).decode()
    return (
        f"<img alt='{html.escape(alt)}' width='{width}' style='image-rendering:pixelated' "
        f"src='data:image/png;base64,{data}'>"
    )


def _rows(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


_STYLE = (
    "body{font-family:sans-serif;margin:1em 2vw}table{border-collapse:collapse;margin:.5em 0}"
    "td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}"
    ".analogs{display:flex;flex-wrap:wrap;gap:1em}.analogs figure{margin:0}"
)


def html_page(doc: Mapping[str, Any], read_chart: ReadChart) -> str:
    """A self-contained page: the chart scored, CLIP's texts, patterns, contributions, fusion, risk,
    and each analog's chart with what followed it (images inlined as base64)."""
    title = f"Why {doc['client_order_id']}: {doc['side']} {doc['symbol']}"
    chart = doc.get("chart")
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
        f"<style>{_STYLE}</style></head><body><h1>{html.escape(title)}</h1>",
        f"<pre>{html.escape(terminal_text(doc))}</pre>",
    ]
    if chart:
        parts.append("<h2>The chart the model scored</h2>")
        parts.append(_img(read_chart(chart["hash"]), "chart", 384))
    if doc.get("texts"):
        parts.append("<h2>CLIP's nearest texts</h2>")
        parts.append(
            _rows(
                ["similarity", "text", "pattern"],
                [[f"{t['similarity']:+.3f}", t["text"], t["pattern"]] for t in doc["texts"]],
            )
        )
    if doc.get("contributions"):
        parts.append("<h2>XGBoost contributions</h2>")
        parts.append(
            _rows(
                ["feature", "log-odds"],
                [[c["feature"], f"{c['value']:+.4f}"] for c in doc["contributions"]],
            )
        )
    analogs = doc.get("analogs") or []
    if analogs:
        parts.append("<h2>Nearest training charts</h2><div class='analogs'>")
        for a in analogs:
            digest = a.get("chart_hash")
            png = read_chart(digest) if digest else None
            caption = (
                f"{a['symbol']} {a['ts']} · sim {a['similarity']:.3f} · next "
                f"{_pct(a.get('forward_return'))} · {', '.join(a.get('patterns') or ()) or 'none'}"
            )
            parts.append(
                f"<figure>{_img(png, 'analog', 160)}<figcaption>{html.escape(caption)}"
                "</figcaption></figure>"
            )
        parts.append("</div>")
    parts.append("</body></html>")
    return "\n".join(parts)
