"""What every bench shares: the load average, repeat-until-stable, and the one JSON of figures.

    with Session("pipeline") as bench:              # prints the load average now and at the end
        figures = bench.until_stable(measure, key="p99_ms_100")   # repeats measure() until the
        bench.add(extra=1.0)                                      # last two runs agree within 10%

`measure()` prints its own table and returns {figure name: number}. The figures of the last run
(the one that agreed with the run before it, or the last of max_runs when none did) are kept; a
bench that could not settle says so on stdout and in the JSON ("agreed": false). When
VLMTRADER_BENCH_RESULTS names a file (bench/run_all.py, `make bench`), each Session appends one
JSON line to it: bench name, load average at start and end, figures and how they settled.
VLMTRADER_BENCH_QUICK=1 (`make bench-quick`) caps the repeats at two and lets a bench shrink
its sizes (see `quick()`).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

RESULTS_ENV = "VLMTRADER_BENCH_RESULTS"
QUICK_ENV = "VLMTRADER_BENCH_QUICK"
TOLERANCE = 0.10  # two runs agree when their key figure is within 10% of each other
MAX_RUNS = 5


def quick() -> bool:
    """True under `make bench-quick`: fewer repeats, and smaller sizes where a bench offers them."""
    return os.environ.get(QUICK_ENV, "") == "1"


def load_average() -> list[float]:
    """The 1, 5 and 15 minute load averages."""
    return [round(x, 2) for x in os.getloadavg()]


def load_line() -> str:
    one, five, fifteen = load_average()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f} (1/5/15 min) on {os.cpu_count()} cpus"


def relative_difference(a: float, b: float) -> float:
    """|a - b| over the larger magnitude; 0 when both are 0."""
    scale = max(abs(a), abs(b))
    return 0.0 if scale == 0 else abs(a - b) / scale


class Session:
    """One bench's figures, with the load average around them; written to the results file at exit."""

    def __init__(self, name: str, *, tolerance: float = TOLERANCE, max_runs: int | None = None):
        self.name = name
        self.tolerance = tolerance
        self.max_runs = max(2, max_runs or (2 if quick() else MAX_RUNS))
        self.figures: dict[str, float] = {}
        self.settled: dict[str, dict[str, Any]] = {}
        self.load_start: list[float] = []
        self._started = 0.0

    def __enter__(self) -> Session:
        self.load_start = load_average()
        self._started = time.perf_counter()
        print(f"# {self.name}: start, {load_line()}", flush=True)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        load_end = load_average()
        seconds = time.perf_counter() - self._started
        print(f"# {self.name}: end after {seconds:.0f} s, {load_line()}", flush=True)
        if exc_type is not None:
            return
        target = os.environ.get(RESULTS_ENV)
        if target:
            record = {
                "bench": self.name,
                "load_start": self.load_start,
                "load_end": load_end,
                "seconds": round(seconds, 1),
                "quick": quick(),
                "figures": self.figures,
                "settled": self.settled,
            }
            with Path(target).open("a") as f:
                f.write(json.dumps(record, sort_keys=True) + "\n")

    def add(self, prefix: str = "", **figures: float) -> None:
        """Figures measured once (deterministic ones, or too slow to repeat)."""
        self.figures.update({f"{prefix}{k}": float(v) for k, v in figures.items()})

    def measured_once(self, figures: dict[str, float], *, why: str, prefix: str = "") -> None:
        """Figures not repeated, with the reason said on stdout and in the JSON."""
        print(f"# {self.name}: {prefix or 'figures'} measured once: {why}")
        self.add(prefix, **figures)
        self.settled[prefix or "*"] = {"agreed": None, "runs": 1, "why": why}

    def until_stable(
        self,
        measure: Callable[[], dict[str, float]],
        *,
        key: str,
        prefix: str = "",
        max_runs: int | None = None,
        min_runs: int = 2,
    ) -> dict[str, float]:
        """Run measure() until two consecutive runs' `key` figure agree within the tolerance, or
        max_runs runs; keep (and return) the last run's figures. min_runs: at least this many
        runs, agreeing or not (a figure compared across runs wants a sample, not a pair); it
        raises max_runs to match."""
        limit = max(2, min_runs, max_runs or self.max_runs)
        runs: list[dict[str, float]] = []
        agreed = False
        while len(runs) < limit:
            print(f"# {self.name} {prefix}run {len(runs) + 1}: {load_line()}", flush=True)
            runs.append(measure())
            if len(runs) >= max(2, min_runs) and (
                relative_difference(runs[-1][key], runs[-2][key]) <= self.tolerance
            ):
                agreed = True
                break
        values = [r[key] for r in runs]
        shown = ", ".join(f"{v:.4g}" for v in values)
        if agreed:
            print(f"# {self.name}: {prefix}{key} settled after {len(runs)} runs ({shown})")
        else:
            print(
                f"# {self.name}: could not settle {prefix}{key}: the last two of {len(runs)} runs "
                f"differ by more than {self.tolerance:.0%} ({shown})"
            )
        self.add(prefix, **runs[-1])
        self.settled[f"{prefix}{key}"] = {
            "agreed": agreed,
            "runs": len(runs),
            "values": values,
            "figures": sorted(f"{prefix}{k}" for k in runs[-1]),
        }
        return runs[-1]
