"""What competes with the ML order path's scorer call (issue 16, round 10): the live pipelines as
bench_ml_pipeline runs them (rules, ml-before, ml-after, each batch through each in turn), and
for every ml-after batch each thread's CPU time and run delay (schedstat, by thread name: the
loop, the scorer's to_thread thread, the CLIP pool's, each journal writer, each WAL
checkpointer) during the scorer call alone, its order latency, and whether a WAL checkpoint pass
ran in the batch. Slow batches (order latency >= p90) against typical ones (< p60) show which
threads ran or waited when the tail happened: a thread of ours with CPU in the slow column took
a core (or the GIL) from the call; the path's own threads waiting with no CPU of ours beside
them wait for other processes.

Paced pairs of batches alternate with unpaced pairs; the paced ones alternate their gap between
flush (every journal's writer done) and checkpoint (that, and every journal's and venue's WAL
checkpoint pass, as bench_ml_pipeline --gap checkpoint), so both gaps are measured in one run.
The per-thread reads (/proc, ~0.3 ms each) sit around the call: the call's figures exclude them,
its score lap does not.

    .venv/bin/python bench/ml_tail_threads.py --bundle /work/artifacts/boot9 [--symbols 100]
        [--batches 800]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import tempfile
import time
from pathlib import Path
from typing import Any, cast

import msgspec
import numpy as np
from bench_ml_pipeline import daemon_models, load_average, make_batches, warm_pipelines
from ml_before import before_scorer
from ml_path_profile import TaskTimes, task_times

import daemon.model.scoring as scoring
from daemon.execution.paper import PaperExecution
from daemon.log_setup import configure_logging
from strategy.rule_scorer import RuleScorer, RuleScorerConfig
from strategy.scoring import Scorer

PASS_MS = 0.05


class Batch(msgspec.Struct, kw_only=True):
    """One ml-after batch: its pacing, order latency and scorer call (ms), and each thread
    group's CPU and run delay (ms) during the call."""

    gap: str  # "flush", "checkpoint" or "" (unpaced)
    latency: float
    call: float
    threads: dict[str, tuple[float, float]]


def _group(name: str) -> str:
    """A thread's group: the pool's and the executor's threads together, each WAL checkpointer
    and journal writer by its file."""
    for prefix in ("clip-worker", "asyncio"):
        if name.startswith(prefix):
            return prefix
    return name


def _between(before: TaskTimes, after: TaskTimes) -> dict[str, tuple[float, float]]:
    out: dict[str, tuple[float, float]] = {}
    for tid, (name, run, waited, _, _) in after.items():
        _, run0, waited0, _, _ = before.get(tid, (name, 0, 0, 0, 0))
        cpu, delay = out.get(_group(name), (0.0, 0.0))
        out[_group(name)] = (cpu + (run - run0) / 1e6, delay + (waited - waited0) / 1e6)
    return out


async def run(bundle: Path, symbols: int, scored: int, workdir: Path) -> list[Batch]:
    models = daemon_models(bundle, "auto")
    window = max(64, models.bars_needed)
    batches = make_batches(symbols, window + 5 + scored)
    scorers: dict[str, Scorer] = {
        "rules": RuleScorer(config=RuleScorerConfig()),
        "ml-before": before_scorer(models),
        "ml-after": models.scorer(),
    }
    inner = scoring.score_windows
    seen: dict[str, Any] = {}

    def watched(*args: Any, **kwargs: Any) -> Any:
        before = task_times()
        started = time.perf_counter()
        out = inner(*args, **kwargs)
        seen["call"] = time.perf_counter() - started
        seen["threads"] = _between(before, task_times())
        return out

    scoring.score_windows = watched  # type: ignore[assignment]
    rows: list[Batch] = []
    try:
        with contextlib.ExitStack() as stack:
            pipelines = await warm_pipelines(stack, scorers, window, workdir, batches)
            venues = [cast("PaperExecution", p.execution) for p in pipelines.values()]
            names = list(pipelines)
            for j, batch in enumerate(batches[window + 5 :]):
                gap = ("checkpoint" if (j // 4) % 2 == 0 else "flush") if j // 2 % 2 == 0 else ""
                for name in names if j % 2 == 0 else reversed(names):
                    for pipeline in pipelines.values() if gap else ():
                        pipeline.journal.flush()
                        if gap == "checkpoint":
                            pipeline.journal.checkpoint()
                    for venue in venues if gap == "checkpoint" else ():
                        venue.checkpoint()
                    pipeline = pipelines[name]
                    count = pipeline.latency.count
                    seen.clear()
                    await pipeline.on_bars(batch)
                    if name == "ml-after" and pipeline.latency.count > count and seen:
                        rows.append(
                            Batch(
                                gap=gap,
                                latency=float(pipeline.latency.samples()[-1]) * 1000,
                                call=seen["call"] * 1000,
                                threads=seen["threads"],
                            )
                        )
    finally:
        scoring.score_windows = inner
    return rows


def report(rows: list[Batch], symbols: int) -> None:
    for gap, label in (("checkpoint", "paced, gap checkpoint"), ("flush", "paced, gap flush"),
                       ("", "unpaced")):  # fmt: skip
        part = [r for r in rows if r.gap == gap]
        if not part:
            continue
        lat = np.array([r.latency for r in part])
        typical = [r for r in part if r.latency < np.percentile(lat, 60)]
        slow = [r for r in part if r.latency >= np.percentile(lat, 90)]
        passes = [  # a pass's CPU in the call (more than a no-op pass's)
            r
            for r in part
            if sum(c for g, (c, _) in r.threads.items() if g.startswith("wal-")) > PASS_MS
        ]
        print(
            f"\n-- ml-after, {symbols} symbols, {label}: {len(part)} batches, order p50 "
            f"{np.median(lat):.2f} p90 {np.percentile(lat, 90):.2f} p99 "
            f"{np.percentile(lat, 99):.2f} ms; a WAL checkpoint pass ran during the call in {len(passes)} "
            f"(their p50 {np.median([r.latency for r in passes]) if passes else float('nan'):.2f})"
        )
        for name, sel in (("typical (<p60)", typical), ("slow (>=p90)", slow)):
            print(
                f"   {name}: order {np.mean([r.latency for r in sel]):.2f}, scorer call "
                f"{np.mean([r.call for r in sel]):.2f} ms (means)"
            )
        groups = sorted({g for r in part for g in r.threads})
        print(
            f"   {'thread, during the call':>36} {'typ cpu':>8} {'delay':>6} {'slow cpu':>8} {'delay':>6}"
        )
        for g in groups:
            cells = [
                np.mean([r.threads.get(g, (0.0, 0.0))[k] for r in sel])
                for sel in (typical, slow)
                for k in (0, 1)
            ]
            if max(cells) >= 0.02:
                print(f"   {g:>36} " + " ".join(f"{c:>8.2f}" if i % 2 == 0 else f"{c:>6.2f}"
                                             for i, c in enumerate(cells)))  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, default=Path("state/bundles/default"))
    parser.add_argument("--symbols", default="100")
    parser.add_argument("--batches", type=int, default=800, help="scored batches per pipeline")
    args = parser.parse_args()
    configure_logging(level="warning", fmt="json", stream=io.StringIO())
    print(f"ml_tail_threads: {load_average()}")
    for symbols in (int(s) for s in args.symbols.split(",")):
        with tempfile.TemporaryDirectory() as tmp:
            rows = asyncio.run(run(args.bundle, symbols, args.batches, Path(tmp)))
        report(rows, symbols)
    print(f"ml_tail_threads done: {load_average()}")


if __name__ == "__main__":
    main()
