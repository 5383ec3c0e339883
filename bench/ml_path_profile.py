"""Where the ML order path's time goes (issue 16), in figures a loaded machine distorts least:

1. timeline: one scoring call (MLScorer.score_deferred) at each symbol count, every span (render,
   CLIP chunk, features, XGBoost, fusion) with the thread it ran on, its start and end since the
   call began (p50), its wall and its thread CPU time (p50 and min): which spans overlap, whether
   rendering runs per worker, and the process CPU per call;
2. gil: a pure-Python spinning thread's CPU time while another thread runs ORT, renders, or
   sleeps: a call that holds the GIL starves the spinner;
3. tails: the live pipeline, paced, batch by batch: the scorer call, the asyncio.to_thread
   hand-off around it (score lap minus the call), the GC pauses, and which batches are slowest
   (a cold path shows as the first batches; a loaded machine as bursts).

    .venv/bin/python bench/ml_path_profile.py --bundle state/bundles/default [--symbols 10,100]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import io
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from bench_ml_pipeline import _pipeline, daemon_models, live_windows, load_average, make_batches

import daemon.model.scoring as scoring
from daemon.execution.paper import PaperExecution
from daemon.journal import Journal
from daemon.log_setup import configure_logging
from daemon.model.loader import LoadedBundle
from daemon.runtime import tune_gc
from strategy.sim_broker import SimBrokerConfig

Span = tuple[str, str, float, float, float]  # label, thread, start, end, thread CPU


def _spy(obj: Any, name: str, label: str, spans: list[Span]) -> None:
    inner = getattr(obj, name)

    def timed(*args: Any, **kwargs: Any) -> Any:
        wall, cpu = time.perf_counter(), time.thread_time()
        out = inner(*args, **kwargs)
        thread = threading.current_thread().name.split("_")[0]
        spans.append((label, thread, wall, time.perf_counter(), time.thread_time() - cpu))
        return out

    setattr(obj, name, timed)


def timeline(models: LoadedBundle, symbols: int, calls: int) -> None:
    scorer, engine = models.scorer(), models.engine
    spans: list[Span] = []
    _spy(engine, "render", "render", spans)
    _spy(engine, "embed", "clip", spans)
    _spy(scorer.features, "compute", "features", spans)
    _spy(scorer.xgb, "predict", "xgboost", spans)
    _spy(scorer.fusion, "fuse_observe", "fusion", spans)
    windows = live_windows(symbols, max(64, models.bars_needed))
    for _ in range(10):
        scorer.score_deferred(windows)
    table: dict[tuple[str, str], list[list[float]]] = {}
    walls, process = [], []
    for _ in range(calls):
        spans.clear()
        t0, p0 = time.perf_counter(), time.process_time()
        scorer.score_deferred(windows)
        walls.append(time.perf_counter() - t0)
        process.append(time.process_time() - p0)
        for label, thread, start, end, cpu in spans:
            rows = table.setdefault((label, thread), [[], [], [], []])
            for column, value in zip(rows, (start - t0, end - t0, end - start, cpu), strict=True):
                column.append(value * 1000)
    ms = [w * 1000 for w in walls]
    print(
        f"\n-- {symbols} symbols, {calls} calls: wall p50 {np.median(ms):.2f} p99 "
        f"{np.percentile(ms, 99):.2f} min {min(ms):.2f} ms; process CPU p50 "
        f"{np.median(process) * 1000:.2f} ms; {load_average()}"
    )
    print(
        f"{'span':>9} {'thread':>12} {'per call':>8} {'start':>7} {'end':>7} {'wall':>7} "
        f"{'min':>6} {'cpu':>6} {'min':>6}   (ms, p50 unless min)"
    )
    for (label, thread), (start, end, wall, cpu) in sorted(
        table.items(), key=lambda kv: float(np.median(kv[1][0]))
    ):
        print(
            f"{label:>9} {thread:>12} {len(start) / calls:>8.1f} {np.median(start):>7.2f} "
            f"{np.median(end):>7.2f} {np.median(wall):>7.2f} {min(wall):>6.2f} "
            f"{np.median(cpu):>6.2f} {min(cpu):>6.2f}"
        )


def gil(models: LoadedBundle, seconds: float = 2.0) -> None:
    engine = models.engine
    charts = [w.tail(engine.spec.bars_needed) for w in live_windows(50, 64)]
    images = engine.render(charts)
    print(f"\n-- GIL: a spinning Python thread's CPU while another thread works; {load_average()}")
    work: dict[str, Callable[[], object]] = {
        "sleep 5 ms": lambda: time.sleep(0.005),
        "ORT, 50 charts": lambda: engine.embed(images),
        "render, 50 charts": lambda: engine.render(charts),
    }
    for name, call in work.items():
        stop, out = threading.Event(), []

        def spin(stop: threading.Event = stop, out: list[float] = out) -> None:
            cpu = time.thread_time()
            while not stop.is_set():
                pass
            out.append(time.thread_time() - cpu)

        spinner = threading.Thread(target=spin)
        spinner.start()
        cpu, end = time.thread_time(), time.perf_counter() + seconds
        while time.perf_counter() < end:
            call()
        worker_cpu = time.thread_time() - cpu
        stop.set()
        spinner.join()
        print(
            f"{name:>18}: spinner CPU {out[0]:.2f} s, worker CPU {worker_cpu:.2f} s in {seconds:g} s"
        )


async def _tails(models: LoadedBundle, symbols: int, scored: int, workdir: Path) -> None:
    window = max(64, models.bars_needed)
    batches = make_batches(symbols, window + 5 + scored)
    pauses: list[tuple[float, float]] = []

    def on_gc(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            pauses.append((time.perf_counter(), float("nan")))
        elif pauses:
            pauses[-1] = (pauses[-1][0], time.perf_counter())

    call: dict[str, float] = {}
    inner = scoring.score_windows

    def timed_call(*args: Any, **kwargs: Any) -> Any:
        call["start"] = time.perf_counter()
        out = inner(*args, **kwargs)
        call["end"] = time.perf_counter()
        return out

    scoring.score_windows = timed_call  # type: ignore[assignment]
    journal = Journal(workdir / "journal.sqlite", synchronous="normal")
    journal.open()
    try:
        with PaperExecution(config=SimBrokerConfig(), path=workdir / "venue.sqlite") as venue:
            pipeline = _pipeline(models.scorer(), window, journal, venue)
            for batch in batches[: window + 5]:
                await pipeline.on_bars(batch)
            tune_gc()
            gc.callbacks.append(on_gc)
            rows = []
            lap = pipeline.stage_clock.stages["score"]
            for batch in batches[window + 5 :]:
                journal.flush()  # paced
                pauses.clear()
                await pipeline.on_bars(batch)
                score = float(lap._buf[(lap.count - 1) % lap._buf.size])
                handed = call["end"] - call["start"]
                rows.append((score, handed, sum(b - a for a, b in pauses), len(pauses)))
            gc.callbacks.remove(on_gc)
    finally:
        scoring.score_windows = inner
        journal.close()
    r = np.array(rows) * [1000, 1000, 1000, 1]
    hand = r[:, 0] - r[:, 1]
    slow = np.flatnonzero(r[:, 0] >= np.percentile(r[:, 0], 95))
    print(f"\n-- tails, {symbols} symbols, {len(r)} paced batches; {load_average()}")
    print(
        f"score lap p50 {np.median(r[:, 0]):.2f} p99 {np.percentile(r[:, 0], 99):.2f}; scorer "
        f"call p50 {np.median(r[:, 1]):.2f} p99 {np.percentile(r[:, 1], 99):.2f}; to_thread "
        f"hand-off p50 {np.median(hand):.2f} p99 {np.percentile(hand, 99):.2f} ms"
    )
    print(
        f"GC: {int((r[:, 3] > 0).sum())} batches with a collection ({r[:, 2].sum():.2f} ms); "
        f"slowest 5%: hand-off p50 {np.median(hand[slow]):.2f}, call p50 "
        f"{np.median(r[slow, 1]):.2f} ms, with GC {int((r[slow, 3] > 0).sum())}, batches "
        f"{slow.tolist()}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, default=Path("state/bundles/default"))
    parser.add_argument("--runtime", default="auto")
    parser.add_argument("--symbols", default="10,100")
    parser.add_argument("--calls", type=int, default=200)
    args = parser.parse_args()
    configure_logging(level="warning", fmt="json", stream=io.StringIO())
    print(f"ml_path_profile: {load_average()}")
    for symbols in (int(s) for s in args.symbols.split(",")):
        timeline(daemon_models(args.bundle, args.runtime), symbols, args.calls)
    models = daemon_models(args.bundle, args.runtime)
    gil(models)
    for symbols in (int(s) for s in args.symbols.split(",")):
        with tempfile.TemporaryDirectory() as tmp:
            asyncio.run(_tails(models, symbols, args.calls, Path(tmp)))
    print(f"ml_path_profile done: {load_average()}")


if __name__ == "__main__":
    main()
