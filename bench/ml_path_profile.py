"""Where the ML order path's time goes (issue 16), in figures a loaded machine distorts least:

1. timeline: one scoring call (MLScorer.score_deferred) at each symbol count, every span (render,
   CLIP chunk, features, XGBoost, fusion) with the thread it ran on, its start and end since the
   call began (p50), its wall and its thread CPU time (p50 and min): which spans overlap, whether
   rendering runs per worker, and the process CPU per call;
2. gil: a pure-Python spinning thread's CPU time while another thread runs ORT, renders, or
   sleeps: a call that holds the GIL starves the spinner;
3. tails: the live pipeline, paced, batch by batch: the scorer call, the asyncio.to_thread
   hand-off around it (score lap minus the call), the GC pauses, and which batches are slowest
   (a cold path shows as the first batches; a loaded machine as bursts);
4. threads: the live pipeline, paced, and the CPU each of the process's threads used per batch
   (the kernel's per-thread run time, /proc/self/task/*/schedstat: every thread, ours,
   ONNX Runtime's, BLAS's, the journal's; Linux only), with the time each waited runnable for a
   core and its context switches; then the scorer's spans (thread CPU) by the thread they ran
   on, and the event loop thread's stage clock: where the process CPU of a batch goes;
5. schedule: ChartEngine.start_batch drawing every chart before it hands out the pool's chunk
   (RENDER_AHEAD off, as before round 9) against drawing the pool's chunk first and its own
   while the pool embeds (on), score_deferred calls alternating in one process on the same
   windows: wall p50/p90/p99 with ratios (new/old, 95% bootstrap intervals over the rounds),
   process CPU, and whether the signals are identical. --fifo runs the calls at SCHED_FIFO 1
   (needs root or RLIMIT_RTPRIO; the pool's threads follow the caller's policy per batch), so
   other processes do not preempt them: the schedule as on an idle box.

    .venv/bin/python bench/ml_path_profile.py --bundle state/bundles/default [--symbols 10,100]
        [--parts timeline,gil,tails,threads,schedule] [--fifo]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import io
import os
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
from vlm_engine.infer import engine as engine_module

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


# tid -> (thread name, CPU ns, ns waited runnable, voluntary and involuntary context switches)
TaskTimes = dict[int, tuple[str, int, int, int, int]]


def task_times() -> TaskTimes:
    """Every thread of this process: its run and run-queue times (schedstat) and its context
    switches (status); named by threading when it is a Python thread, else by its comm."""
    names = {t.native_id: t.name.split("_")[0] for t in threading.enumerate()}
    out: TaskTimes = {}
    for entry in os.scandir("/proc/self/task"):
        tid = int(entry.name)
        try:
            with open(f"{entry.path}/schedstat") as f:
                run, waited, _ = f.read().split()
            with open(f"{entry.path}/status") as f:
                status = dict(line.split(":", 1) for line in f.read().splitlines() if ":" in line)
            comm = status["Name"].strip()
        except (FileNotFoundError, ProcessLookupError):  # the thread ended meanwhile
            continue
        voluntary = int(status["voluntary_ctxt_switches"])
        forced = int(status["nonvoluntary_ctxt_switches"])
        out[tid] = (names.get(tid, comm), int(run), int(waited), voluntary, forced)
    return out


async def _threads(models: LoadedBundle, symbols: int, scored: int, workdir: Path) -> None:
    window = max(64, models.bars_needed)
    batches = make_batches(symbols, window + 5 + scored)
    scorer = models.scorer()
    spans: list[Span] = []
    _spy(models.engine, "render", "render", spans)
    _spy(models.engine, "embed", "clip", spans)
    _spy(models.engine, "read_out", "read-out", spans)
    _spy(scorer.features, "compute", "features", spans)
    _spy(scorer.xgb, "predict", "xgboost", spans)
    _spy(scorer.fusion, "fuse_columns", "fusion", spans)
    _spy(scorer, "finish", "finish", spans)  # after the orders: reasons, drift, outcomes
    journal = Journal(workdir / "journal.sqlite", synchronous="normal")
    journal.open()
    per_thread: dict[str, list[float]] = {}  # name -> [CPU, waited, voluntary, forced] totals
    per_span: dict[tuple[str, str], float] = {}
    walls, process = [], []
    try:
        with PaperExecution(config=SimBrokerConfig(), path=workdir / "venue.sqlite") as venue:
            pipeline = _pipeline(scorer, window, journal, venue)
            for batch in batches[: window + 5]:
                await pipeline.on_bars(batch)
            tune_gc()
            pipeline.stage_clock.reset()
            for batch in batches[window + 5 :]:
                journal.flush()  # paced: the write-behind of the batch before is done
                spans.clear()
                before, p0, t0 = task_times(), time.process_time(), time.perf_counter()
                await pipeline.on_bars(batch)
                walls.append(time.perf_counter() - t0)
                process.append(time.process_time() - p0)
                for tid, (name, run, waited, voluntary, forced) in task_times().items():
                    _, run0, waited0, voluntary0, forced0 = before.get(tid, (name, 0, 0, 0, 0))
                    row = per_thread.setdefault(name, [0.0, 0.0, 0.0, 0.0])
                    row[0] += (run - run0) / 1e6
                    row[1] += (waited - waited0) / 1e6
                    row[2] += voluntary - voluntary0
                    row[3] += forced - forced0
                for label, thread, _, _, cpu in spans:
                    per_span[label, thread] = per_span.get((label, thread), 0.0) + cpu * 1000
            journal.flush()
    finally:
        journal.close()
    n = len(walls)
    total = sum(row[0] for row in per_thread.values()) / n
    print(
        f"\n-- threads, {symbols} symbols, {n} paced batches: batch wall p50 "
        f"{np.median(walls) * 1000:.2f} p99 {np.percentile(walls, 99) * 1000:.2f} ms; process "
        f"CPU mean {np.mean(process) * 1000:.2f}, all threads' run time mean {total:.2f} ms; "
        f"{load_average()}"
    )
    print(f"{'thread':>24} {'cpu':>7} {'waited':>7} {'vol cs':>7} {'forced':>7}   (per batch, ms)")
    for name, (cpu, waited, voluntary, forced) in sorted(
        per_thread.items(), key=lambda kv: -kv[1][0]
    ):
        if cpu / n >= 0.005:
            print(
                f"{name:>24} {cpu / n:>7.2f} {waited / n:>7.2f} {voluntary / n:>7.1f} "
                f"{forced / n:>7.1f}"
            )
    print(f"{'scorer span':>24} {'thread':>12} {'cpu':>7}   (thread CPU per batch, ms)")
    for (label, thread), cpu in sorted(per_span.items(), key=lambda kv: -kv[1]):
        print(f"{label:>24} {thread:>12} {cpu / n:>7.2f}")
    clock = pipeline.stage_clock
    laps = ", ".join(
        f"{k} {clock.cpu_stages[k].percentile_ms(50) or 0:.2f}/{clock.stages[k].percentile_ms(50) or 0:.2f}"
        for k in clock.names
    )
    print(f"event loop thread, stage CPU/wall p50 (ms): {laps}")


def schedule(models: LoadedBundle, symbols: int, rounds: int) -> None:
    arms = {"drawn first": False, "drawn ahead": True}  # RENDER_AHEAD, old then new
    scorers = {name: models.scorer() for name in arms}
    windows = live_windows(symbols, max(64, models.bars_needed))
    wall: dict[str, list[float]] = {name: [] for name in arms}
    cpu: dict[str, list[float]] = {name: [] for name in arms}
    signals: dict[str, list[object]] = {}
    print(f"\n-- schedule, {symbols} symbols, {rounds} rounds; {load_average()}")
    try:
        for r in range(rounds + 10):
            for name in list(arms) if r % 2 == 0 else list(arms)[::-1]:
                engine_module.RENDER_AHEAD = arms[name]
                scorer = scorers[name]
                c, t = time.process_time(), time.perf_counter()
                out, deferred = scorer.score_deferred(windows)
                if r >= 10:  # the first rounds warm both arms up
                    wall[name].append((time.perf_counter() - t) * 1000)
                    cpu[name].append((time.process_time() - c) * 1000)
                signals[name] = list(scorer.finish(out, deferred))
    finally:
        engine_module.RENDER_AHEAD = True
    same = signals["drawn first"] == signals["drawn ahead"]
    drawn = np.random.default_rng(0).integers(0, rounds, (1000, rounds))
    base = np.array(wall["drawn first"])
    print(f"signals identical: {same}; {load_average()}")
    for name in arms:
        w = np.array(wall[name])
        ratios = []
        for q in (50, 90, 99):
            boot = np.percentile(w[drawn], q, axis=1) / np.percentile(base[drawn], q, axis=1)
            ratios.append(
                f"p{q} {np.percentile(w, q) / np.percentile(base, q):.3f} "
                f"[{np.percentile(boot, 2.5):.3f}, {np.percentile(boot, 97.5):.3f}]"
            )
        print(
            f"{name:>12}: p50 {np.median(w):.2f} p90 {np.percentile(w, 90):.2f} p99 "
            f"{np.percentile(w, 99):.2f} min {w.min():.2f} ms, process CPU p50 "
            f"{np.median(cpu[name]):.2f}; new/old {', '.join(ratios)}"
        )


PARTS = ("timeline", "gil", "tails", "threads", "schedule")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, default=Path("state/bundles/default"))
    parser.add_argument("--runtime", default="auto")
    parser.add_argument("--symbols", default="10,100")
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--parts", default=",".join(PARTS))
    parser.add_argument("--fifo", action="store_true", help="score at SCHED_FIFO 1 (root)")
    args = parser.parse_args()
    parts = args.parts.split(",")
    if unknown := set(parts) - set(PARTS):
        parser.error(f"--parts: unknown {', '.join(sorted(unknown))}")
    configure_logging(level="warning", fmt="json", stream=io.StringIO())
    print(f"ml_path_profile: {load_average()}")
    if args.fifo:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))
    symbols_list = [int(s) for s in args.symbols.split(",")]
    if "timeline" in parts:
        for symbols in symbols_list:
            timeline(daemon_models(args.bundle, args.runtime), symbols, args.calls)
    models = daemon_models(args.bundle, args.runtime)
    if "gil" in parts:
        gil(models)
    for part, run in (("tails", _tails), ("threads", _threads)):
        if part not in parts:
            continue
        for symbols in symbols_list:
            with tempfile.TemporaryDirectory() as tmp:
                asyncio.run(run(models, symbols, args.calls, Path(tmp)))
    if "schedule" in parts:
        for symbols in symbols_list:
            schedule(models, symbols, args.calls)
    print(f"ml_path_profile done: {load_average()}")


if __name__ == "__main__":
    main()
