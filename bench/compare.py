"""Compare two `make bench` JSON files figure by figure: A, B and B/A, with both runs' load averages.

A ratio is only as good as the two machines' state: the load averages of both runs are printed
first, and figures a bench could not settle (two runs more than 10% apart) are marked `~`.
    python bench/compare.py build/bench/A.json build/bench/B.json [--only journal,pipeline]
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any


def unsettled(bench: dict[str, Any], figure: str) -> bool:
    """True when the figure comes from a repeat loop whose last two runs did not agree."""
    return any(
        how.get("agreed") is False and figure in how.get("figures", ())
        for how in bench.get("settled", {}).values()
    )


def rows(a: dict[str, Any], b: dict[str, Any], only: set[str] | None) -> list[tuple[str, ...]]:
    out = []
    for name in sorted(set(a["benches"]) | set(b["benches"])):
        if only and name not in only:
            continue
        fa = a["benches"].get(name, {})
        fb = b["benches"].get(name, {})
        figures_a, figures_b = fa.get("figures", {}), fb.get("figures", {})
        for figure in sorted(set(figures_a) | set(figures_b)):
            va, vb = figures_a.get(figure), figures_b.get(figure)
            ratio = "-"
            if va is not None and vb is not None and va != 0 and math.isfinite(vb / va):
                ratio = f"{vb / va:.3f}"
            mark = "~" if unsettled(fa, figure) or unsettled(fb, figure) else ""
            out.append((f"{name}.{figure}", _fmt(va), _fmt(vb), ratio + mark))
    return out


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("a", type=Path)
    parser.add_argument("b", type=Path)
    parser.add_argument("--only", help="comma-separated bench names")
    args = parser.parse_args()
    a, b = (json.loads(p.read_text()) for p in (args.a, args.b))
    for label, doc in (("A", a), ("B", b)):
        print(
            f"{label}: {doc['commit']} {doc['date']} quick={doc['quick']} "
            f"load {doc['load_start']} -> {doc['load_end']} on {doc['machine']['cpus']} cpus"
        )
    table = rows(a, b, set(args.only.split(",")) if args.only else None)
    width = max((len(r[0]) for r in table), default=10)
    print(f"{'figure':<{width}} {'A':>12} {'B':>12} {'B/A':>8}")
    for figure, va, vb, ratio in table:
        print(f"{figure:<{width}} {va:>12} {vb:>12} {ratio:>8}")


if __name__ == "__main__":
    main()
