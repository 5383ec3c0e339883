"""`vlmtrader search WORDS --bars FILE --bundle DIR`: every chart of a bars file ranked by how well
it matches the words (the bundle's CLIP text-image similarity), with an optional HTML page."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from daemon.errors import EXIT_CONFIG, EXIT_OK

EXIT_INPUT = 1


def register(sub: Any) -> None:
    p = sub.add_parser(
        "search",
        help="search the charts of a bars file with words",
        description="Render every chart window of a bars file (CSV/Parquet) with the bundle's "
        "chart spec, rank them by CLIP text-image similarity to the words and print date, "
        "symbol, similarity and the forward return over the bundle's horizon.",
    )
    p.add_argument("query", help='the words, e.g. "bullish engulfing after a downtrend"')
    p.add_argument("--bars", required=True, type=Path, help="bar file or directory")
    p.add_argument("--bundle", required=True, type=Path, help="model bundle directory")
    p.add_argument("--top", type=int, default=20, help="how many charts to show (default 20)")
    p.add_argument("--html", type=Path, help="also write an HTML page with the charts")
    p.set_defaults(func=_search)


def _search(args: argparse.Namespace) -> int:
    from daemon.errors import InputError
    from daemon.log_setup import configure_logging
    from daemon.model.search import search_bars_file
    from daemon.model.search_page import forward_text, search_page

    configure_logging(level="warning", to="stderr")  # stdout is the table
    if args.top < 1:
        print(f"error: --top {args.top}: give at least 1", file=sys.stderr)
        return EXIT_CONFIG
    try:
        result = search_bars_file(
            args.bars,
            args.bundle,
            args.query,
            top=args.top,
            charts=args.html is not None,
            progress=sys.stderr.isatty(),
        )
    except InputError as e:
        print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
        return EXIT_INPUT
    print(
        f"# {result.query!r}: {result.windows} charts, bundle {result.bundle_id}, forward "
        f"return over {result.horizon_bars} bars, {result.seconds:.1f} s"
    )
    print(f"{'rank':>4}  {'last bar (UTC)':<25} {'symbol':<10} {'similarity':>10} {'forward':>9}")
    for hit in result.hits:
        print(
            f"{hit.rank:>4}  {hit.ts.isoformat():<25} {hit.symbol:<10} "
            f"{hit.similarity:>10.4f} {forward_text(hit.forward_return):>9}"
        )
    if args.html is not None:
        try:
            args.html.parent.mkdir(parents=True, exist_ok=True)
            args.html.write_text(search_page(result, source=str(args.bars)), encoding="utf-8")
        except OSError as e:
            print(f"error: {args.html}: cannot write the page ({e.strerror})", file=sys.stderr)
            return EXIT_INPUT
        print(f"# page: {args.html}")
    return EXIT_OK
