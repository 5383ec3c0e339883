"""The HTML page of a chart search: one self-contained file, every chart inlined as a base64 PNG."""

from __future__ import annotations

import base64
import html

from daemon.model.search import SearchResult

_STYLE = """
body { font: 14px system-ui, sans-serif; margin: 2em; color: #222; background: #fff; }
table { border-collapse: collapse; }
td, th { padding: 4px 10px; border-bottom: 1px solid #ddd; text-align: left; vertical-align: middle; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
img { image-rendering: pixelated; width: 192px; border: 1px solid #ccc; }
@media (prefers-color-scheme: dark) { body { color: #ddd; background: #111; } td, th { border-color: #333; } }
"""


def forward_text(value: float | None) -> str:
    """A forward return as a signed percentage, "-" where the horizon runs past the bars."""
    return "-" if value is None else f"{value * 100:+.2f}%"


def search_page(result: SearchResult, *, source: str) -> str:
    """The ranking as an HTML page: query, bundle and source, then one row per hit with its chart."""
    rows = []
    for i, hit in enumerate(result.hits):
        chart = result.charts[i] if i < len(result.charts) else b""
        image = (
            f'<img alt="chart {hit.rank}" src="data:image/png;base64,'
            f'{base64.b64encode(chart).decode()}">'
            if chart
            else ""
        )
        rows.append(
            f"<tr><td class=num>{hit.rank}</td><td>{html.escape(hit.ts.isoformat())}</td>"
            f"<td>{html.escape(hit.symbol)}</td><td class=num>{hit.similarity:.4f}</td>"
            f"<td class=num>{forward_text(hit.forward_return)}</td><td>{image}</td></tr>"
        )
    title = html.escape(result.query)
    return (
        "<!doctype html>\n<html lang=en><head><meta charset=utf-8>"
        f"<title>vlmtrader search: {title}</title><style>{_STYLE}</style></head><body>\n"
        f"<h1>{title}</h1>\n<p>{result.windows} charts of {html.escape(source)} ranked by the "
        f"CLIP text-image similarity of bundle {html.escape(result.bundle_id)}; forward return "
        f"over {result.horizon_bars} bars (- where the bars end first).</p>\n"
        "<table><thead><tr><th>#</th><th>last bar (UTC)</th><th>symbol</th><th>similarity</th>"
        f"<th>forward return</th><th>chart</th></tr></thead><tbody>\n{''.join(rows)}\n"
        "</tbody></table></body></html>\n"
    )
