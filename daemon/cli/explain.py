"""`vlmtrader explain CLIENT_ORDER_ID`: why an order was placed, read from the explanation store
(no daemon needed): texts, contributions and the analogs' outcomes; --open writes an HTML page
with the chart and the analogs' charts inlined."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

EXIT_NOT_FOUND = 1


def register(sub: Any) -> None:
    p = sub.add_parser(
        "explain", help="why an order was placed: its chart, CLIP's texts, contributions, analogs"
    )
    p.add_argument("client_order_id", help="the order's client order id (e.g. PAPER-12)")
    p.add_argument("--state-dir", type=Path, default=Path("state"), help="the daemon's state_dir")
    p.add_argument(
        "--open",
        nargs="?",
        const="",
        default=None,
        metavar="OUT.html",
        help="also write an HTML page with the images (default <state-dir>/explain/<id>.html)",
    )
    p.set_defaults(func=_explain)


def _explain(args: argparse.Namespace) -> int:
    from daemon.explain.charts import ChartStore
    from daemon.explain.page import html_page, terminal_text
    from daemon.explain.store import ExplanationStoreError, read_explanation
    from daemon.explain.values import CHARTS_DIR, EXPLAIN_DB

    state: Path = args.state_dir
    try:
        doc = read_explanation(state / EXPLAIN_DB, args.client_order_id)
    except ExplanationStoreError as e:
        print(f"vlmtrader: {e}", file=sys.stderr)
        return EXIT_NOT_FOUND
    if doc is None:
        print(
            f"vlmtrader: order {args.client_order_id}: no explanation in {state / EXPLAIN_DB}",
            file=sys.stderr,
        )
        return EXIT_NOT_FOUND
    print(terminal_text(doc))
    if args.open is not None:
        out = Path(args.open) if args.open else state / "explain" / f"{args.client_order_id}.html"
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(html_page(doc, ChartStore(directory=state / CHARTS_DIR).read))
        except OSError as e:
            print(f"vlmtrader: {out}: cannot write the page ({e.strerror})", file=sys.stderr)
            return EXIT_NOT_FOUND
        print(f"page: {out}")
    return 0
