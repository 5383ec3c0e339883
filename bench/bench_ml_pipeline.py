"""The daemon pipeline and the backtest with the full ML scorer (render -> CLIP -> XGBoost -> fusion).

1. Live pipeline at 10 and 100 symbols: bars/s, p50/p99 bar-to-order latency (feed arrival to the
   broker call, as the daemon logs it) and p50/p99 per-batch latency; baseline = the same pipeline
   with the rule scorer in the same run. Goals (issue 5): p99 <= 20 ms at 10 symbols, <= 100 ms at 100.
2. Backtest throughput including chart rendering and model scoring (scores precomputed in chunks,
   then the event-driven loop); baseline = the rule scorer the same way. Goal: >= 300 bars/s.

3. Stage by stage (render, CLIP, features, PCA + XGBoost, fusion, drift, reasons, whole scorer)
   at each symbol count and CLIP runtime (--runtimes torch,auto): p50/p99 per batch, the stages
   timed one after another on the same batch. "before" is the order path as it was before this round of
   issue 16 (bench/ml_before.py: the caller drew the first chunk and handed it to the pool, drew
   the rest and computed the features, so the pool thread woke while the caller held the GIL;
   and a batch of 10 charts was cut in two), timed in the same run, alternating with "after". Goal (issue 16): ML order p99 <= 20 ms at 100
   symbols, <= 8 ms at 10, judged on paced batches.

The live table runs the pipeline with the rule scorer, ml-before and ml-after in turn. Paced and
unpaced batches alternate in the same run (two of each in turn): a paced batch starts once every
journal's writer has committed what the batches before it left (waited for untimed, as when bars
are seconds apart); the WAL checkpointers' passes, which run every second, no longer start while
a batch is on its way to the broker (daemon/runtime.py ORDER_PATH_GATE). --gap checkpoint also
runs every journal's and venue's pass in the gap, right before the batch (as bench_pipeline.py
--paced): measured slower, not faster (100 symbols, one run, load 2.4-3.6: paced p50/p99 13.44/
30.24 ms against 13.11/27.99; 10 symbols, interleaved processes: paced p50 2.5-3.4 against
2.4-2.8 on main), as the passes then come just before the batch where live they come up to a second
before it; so the default stays flush. An unpaced batch follows at once, with that write-behind
competing with its order path. Both are printed side by side, with the ML
pipelines' stage clocks (Pipeline.stage_clock). The runs repeat until two agree on ml-after's
paced order p99 at the largest symbol count within 10% (or say they could not). The load average
is printed at start and end of every table.

--realtime adds a live arm, ml-after_rt: ml-after with the order path at real-time priority
(daemon/runtime.py OrderPathPriority: the loop thread, the scorer's thread for its call and the
CLIP pool's threads for the batch's chunks), alternating with the others in the same run; each
arm's run delay per batch (all threads, schedstat) and the loop's per stage are printed beside.

--levers adds ml-after arms, each with a thread state set (untimed) before its batches and
undone before the others': the background threads (journal writers, WAL checkpointers, the
explainer) back at nice 0 (nice0: as before they lowered themselves; needs root), at another
nice (nice5, nice19) or policy (batch, idle), or the order path's threads (the loop, the
scorer's executor threads, the CLIP pool's) at a shorter EEVDF slice (slice100, slice300, us);
or with the WAL checkpointers free to start a pass during its batches (nogate: as before
daemon/runtime.py ORDER_PATH_GATE), or with the CLIP engine on another number of workers
(workers1: no pool; workers3, workers4).

    .venv/bin/python bench/bench_ml_pipeline.py [--bundle state/bundles/default] [--symbols 10,100]
        [--runtimes torch,auto] [--stage-batches 200] [--skip-backtest] [--realtime]
        [--levers nice0,slice100,nogate,workers1] [--gap checkpoint|flush]

Without a bundle at --bundle it builds a --quick one (weak, tiny CLIP: latency then flatters).
About 460 lines: the three parts share one set-up (bundle, market, pipeline), and the
"before" scorer lives in bench/ml_before.py.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import copy
import ctypes
import hashlib
import io
import os
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import cast

import msgspec
import numpy as np
from harness import Session
from ml_before import before_scorer, fuse_rows

from daemon.config import ScorerConfig
from daemon.execution.paper import PaperExecution
from daemon.journal import Journal
from daemon.latency import StageClock
from daemon.log_setup import configure_logging
from daemon.model.loader import LoadedBundle, load_bundle
from daemon.model.vision import ClipVision
from daemon.pipeline import Pipeline
from daemon.runtime import OrderPathPriority, tune_gc
from daemon.training import bootstrap, quick_config
from strategy.backtest.data import frame_batches, precompute_signals
from strategy.backtest.engine import BacktestConfig, BacktestEngine
from strategy.bars import BarStore, BarStoreConfig, FloatArray, Window
from strategy.book import Book
from strategy.market_sim import MarketSimulator, SimMarketConfig, simulate_frame
from strategy.ml_scorer import Deferred, vision_columns
from strategy.risk import RiskConfig, RiskEngine
from strategy.rule_scorer import RuleScorer, RuleScorerConfig
from strategy.scoring import Scorer
from strategy.sim_broker import SimBrokerConfig
from strategy.target_strategy import StrategyConfig, TargetStrategy
from strategy.types import Bar, Signal
from vlm_engine.infer import InferenceConfig, onnx_runtime
from vlm_engine.thread_policy import BACKGROUND_NICE

START = datetime(2026, 1, 5, 14, 30, tzinfo=UTC)
# Permissive thresholds so that both scorers place orders and bar-to-order latency has samples.
STRATEGY = StrategyConfig(
    position_notional=2_000, hold_bars=5, enter_threshold=0.51, min_confidence=0.0
)


def make_batches(symbols: int, n_batches: int) -> list[list[Bar]]:
    market = SimMarketConfig(
        symbols=tuple(f"S{i:03d}" for i in range(symbols)), seed=3, pattern_rate=0.03
    )
    sim = MarketSimulator(config=market, start=START)
    return [sim.next_batch() for _ in range(n_batches)]


class LiveRun(msgspec.Struct, kw_only=True):
    """One pipeline's figures in one pacing: order latencies (one per order), wall and process CPU
    seconds per batch, and the run delay of all the process's threads per batch (delay: seconds
    spent runnable, waiting for a CPU, summed over the threads; empty where the kernel does not
    report it)."""

    orders: list[float]
    batches: list[float]
    cpu: list[float]
    delay: list[float] = msgspec.field(default_factory=list)
    delay_by: dict[str, list[float]] = msgspec.field(
        default_factory=lambda: {g: [] for g in DELAY_GROUPS}
    )
    bars: int = 0
    ordering: int = 0  # batches that sent orders (the order percentiles rest on these)


def _pipeline(scorer: Scorer, window: int, journal: Journal, venue: PaperExecution) -> Pipeline:
    return Pipeline(
        store=BarStore(config=BarStoreConfig(window=window)),
        scorer=scorer,
        strategy=TargetStrategy(config=STRATEGY),
        risk=RiskEngine(
            config=RiskConfig(
                max_gross_exposure=100_000_000,
                max_position_notional=1_000_000,
                max_orders_per_minute=1_000_000,
                max_open_orders=1_000_000,
                # No loss limits: random signals lose money, and the default daily loss (5,000)
                # halted trading after ~200 batches at 100 symbols, so the order latencies came
                # from the first batches only, however many were run.
                max_daily_loss=None,
                max_drawdown=None,
            )
        ),
        book=Book(starting_cash=100_000_000),
        journal=journal,
        execution=venue,
    )


DELAY_GROUPS: tuple[str, ...] = ("loop", "scorer", "clip", "other")


def _delay_group(name: str) -> str:
    """Which part of the order path a thread is: the event loop (the main thread here), the
    scorer's executor thread (asyncio.to_thread's), the CLIP pool's, or anything else (the
    journal's writer, the venue's)."""
    if name == "MainThread":
        return "loop"
    if name.startswith("asyncio_"):
        return "scorer"
    return "clip" if name.startswith("clip-worker") else "other"


def process_run_delay() -> dict[str, float] | None:
    """Seconds the process's threads have spent runnable but waiting for a CPU (schedstat's
    run_delay), summed per DELAY_GROUPS group; threads that ended are not counted, so read it
    around a span no thread ends in. None where the kernel does not report it."""
    names = {t.native_id: t.name for t in threading.enumerate()}
    totals = dict.fromkeys(DELAY_GROUPS, 0.0)
    try:
        tasks = os.listdir("/proc/self/task")
    except OSError:
        return None
    for task in tasks:
        try:
            with open(f"/proc/self/task/{task}/schedstat", "rb") as f:
                delay = int(f.read().split()[1]) / 1e9
        except (OSError, IndexError, ValueError):
            continue  # a thread that ended while we read
        totals[_delay_group(names.get(int(task), ""))] += delay
    return totals


BACKGROUND_PREFIXES = ("journal-writer", "wal-checkpoint", "explainer")
# The order path's threads: the event loop (the main thread here), the scorer's executor threads
# (asyncio.to_thread's) and the CLIP pool's.
PATH_PREFIXES = ("MainThread", "asyncio_", "clip-worker")
_OTHER = getattr(os, "SCHED_OTHER", 0)
# As the daemon runs them: background threads lower themselves (lower_calling_thread).
DAEMON_BACKGROUND = (_OTHER, BACKGROUND_NICE)


def _threads(prefixes: tuple[str, ...]) -> list[int]:
    return [
        t.native_id
        for t in threading.enumerate()
        if t.native_id is not None and t.name.startswith(prefixes)
    ]


class _SchedAttr(ctypes.Structure):  # sched_setattr(2)'s, which the os module does not wrap
    _fields_ = (
        ("size", ctypes.c_uint32),
        ("policy", ctypes.c_uint32),
        ("flags", ctypes.c_uint64),
        ("nice", ctypes.c_int32),
        ("priority", ctypes.c_uint32),
        ("runtime", ctypes.c_uint64),  # a normal thread's slice (Linux >= 6.12), ns
        ("deadline", ctypes.c_uint64),
        ("period", ctypes.c_uint64),
    )


def set_slice(tid: int, nanoseconds: int) -> None:
    """A normal thread's EEVDF slice (0: the kernel's default), by sched_setattr (x86_64 only
    here); unprivileged: a shorter slice asks for earlier deadlines, not a larger share."""
    attr = _SchedAttr(
        size=ctypes.sizeof(_SchedAttr),
        policy=_OTHER,
        nice=os.getpriority(os.PRIO_PROCESS, tid),
        runtime=nanoseconds,
    )
    if ctypes.CDLL(None, use_errno=True).syscall(314, tid, ctypes.byref(attr), 0) != 0:
        raise OSError(ctypes.get_errno(), "sched_setattr")


def set_threads(*, background: tuple[int, int] = DAEMON_BACKGROUND, path_slice: int = 0) -> None:
    """The process's background threads (BACKGROUND_PREFIXES) at (policy, nice), the order path's
    (PATH_PREFIXES) at a time slice (ns, 0: the kernel's default), by thread id; defaults: as the
    daemon runs them (a nice value back below the daemon's needs CAP_SYS_NICE: run the arms
    that raise background threads as root)."""
    policy, nice = background
    for tid in _threads(BACKGROUND_PREFIXES):
        with contextlib.suppress(ProcessLookupError):  # a thread that ended meanwhile
            os.sched_setscheduler(tid, policy, os.sched_param(0))
            os.setpriority(os.PRIO_PROCESS, tid, nice)
    for tid in _threads(PATH_PREFIXES):
        with contextlib.suppress(ProcessLookupError):
            set_slice(tid, path_slice)


# Extra ml-after arms (--levers): the thread state during their batches (set_threads); the other
# arms' batches run as the daemon runs.
LEVERS: dict[str, Callable[[], None]] = {
    "nice0": lambda: set_threads(background=(_OTHER, 0)),  # before lower_calling_thread
    "nice5": lambda: set_threads(background=(_OTHER, 5)),
    "nice19": lambda: set_threads(background=(_OTHER, 19)),
    "batch": lambda: set_threads(background=(getattr(os, "SCHED_BATCH", 0), 0)),
    "idle": lambda: set_threads(background=(getattr(os, "SCHED_IDLE", 0), 0)),
    "slice100": lambda: set_threads(path_slice=100_000),
    "slice300": lambda: set_threads(path_slice=300_000),
}
# Extra ml-after arms (--levers) whose order path runs with another OrderPathPriority: nogate,
# the WAL checkpointers free to start a pass while the arm's batch is in flight (as before
# daemon/runtime.py ORDER_PATH_GATE).
PRIORITY_LEVERS: dict[str, Callable[[], OrderPathPriority]] = {
    "nogate": lambda: OrderPathPriority(enabled=False, hold_background=False),
}
# Extra ml-after arms (--levers) with the CLIP engine at another number of workers (the same
# warm session; workers1: the batch in the scorer's thread alone, no pool). 100 symbols, paced
# order p99 against 2 workers, load 1.5-4.8: workers1 1.28, 1.30; workers3 1.00, 1.08;
# workers4 0.97, 0.94 (p50 0.96-1.02 for all): none kept.
WORKER_LEVERS = {"workers1": 1, "workers3": 3, "workers4": 4}
# Extra ml-after arm (--levers wholetower): the ONNX tower served whole, every token of its last
# layer, as before vlm_engine/infer/onnx_prune (a second load of the bundle with PRUNE off).
TOWER_LEVERS = ("wholetower",)


def whole_tower_models(bundle: Path, runtime: str) -> LoadedBundle:
    """The bundle loaded as daemon_models does, its ONNX tower served whole (PRUNE off)."""
    onnx_runtime.PRUNE = False
    try:
        return daemon_models(bundle, runtime)
    finally:
        onnx_runtime.PRUNE = True


def signal_digest(scorer: Scorer, batches: list[list[Window]]) -> str:
    """sha256 of every signal the scorer gives the batches (score(): reasons included)."""
    digest = hashlib.sha256()
    for windows in batches:
        digest.update(msgspec.json.encode(scorer.score(windows)))
    return digest.hexdigest()[:16]


def tower_digests(bundle: Path, runtime: str, symbols_list: list[int], n_batches: int) -> None:
    """Signal digests of the whole and the cut tower over n_batches batches at each symbol count."""
    cut, whole = daemon_models(bundle, runtime), whole_tower_models(bundle, runtime)
    print(
        f"\n== signal digests, tower cut to the class token ({cut.engine.runtime}) against whole "
        f"({whole.engine.runtime}), {n_batches} batches; {load_average()}"
    )
    for symbols in symbols_list:
        window = max(64, cut.bars_needed)
        store = BarStore(config=BarStoreConfig(window=window))
        batches: list[list[Window]] = []
        for batch in make_batches(symbols, window + n_batches):
            for bar in batch:
                store.add(bar)
            found = [w for s in store.symbols if (w := store.window(s)) is not None]
            if len(found) == symbols and len(found[0]) == window:
                batches.append(found)
        a, b = signal_digest(cut.scorer(), batches), signal_digest(whole.scorer(), batches)
        print(
            f"{symbols:>7} symbols, {len(batches)} batches: cut {a} whole {b} "
            f"{'identical' if a == b else 'DIFFERENT'}"
        )


async def warm_pipelines(
    stack: contextlib.ExitStack,
    scorers: dict[str, Scorer],
    window: int,
    workdir: Path,
    batches: list[list[Bar]],
) -> dict[str, Pipeline]:
    """One pipeline per scorer, each with a journal and a paper venue of its own in workdir
    (closed with the stack), fed the first window + 5 batches (windows full, scorers warm), then
    the collector tuned as the daemon does once it is warm."""
    pipelines = {}
    for name, scorer in scorers.items():
        journal = Journal(workdir / f"{name}.sqlite", synchronous="normal")
        journal.open()
        stack.callback(journal.close)
        venue = stack.enter_context(
            PaperExecution(config=SimBrokerConfig(), path=workdir / f"{name}-venue.sqlite")
        )
        pipelines[name] = _pipeline(scorer, window, journal, venue)
    for batch in batches[: window + 5]:
        for pipeline in pipelines.values():
            await pipeline.on_bars(batch)
    tune_gc()
    return pipelines


async def run_pipelines(
    scorers: dict[str, Scorer],
    batches: list[list[Bar]],
    window: int,
    workdir: Path,
    realtime: frozenset[str] = frozenset(),
    levers: dict[str, Callable[[], None]] | None = None,
    priorities: dict[str, Callable[[], OrderPathPriority]] | None = None,
    gap: str = "flush",
) -> tuple[dict[tuple[str, bool], LiveRun], dict[str, Pipeline]]:
    """One pipeline per scorer, each batch through every pipeline in turn (the first one
    alternating), so that each gets the same bars under the same machine load. Every other pair
    of batches is paced: before each pipeline's batch, wait (untimed) until every journal's
    writer has committed what the previous batches left it, as when bars arrive seconds apart;
    the others follow at once, with that write-behind competing with their order path.
    realtime: the pipelines whose order path runs at real-time priority (Pipeline.priority: the
    loop thread, the scorer's thread and the CLIP pool's for the batch), raised once warm.
    levers: per pipeline, the thread state set (untimed) before each of its batches
    (set_threads; the others' batches run with every thread normal). priorities: per pipeline,
    its OrderPathPriority (the others': the daemon's, normal priority).
    Returns the runs by (scorer, paced) and the pipelines (their stage clocks)."""
    levers = levers or {}
    current: Callable[[], None] = set_threads  # no lever: every thread as the daemon runs it
    with contextlib.ExitStack() as stack:
        pipelines = await warm_pipelines(stack, scorers, window, workdir, batches)
        for name, pipeline in pipelines.items():
            # A fresh clock that also reads each lap's run delay (the daemon's does not).
            pipeline.stage_clock = StageClock(pipeline.stage_clock.names, run_delay=True)
            pipeline.priority = OrderPathPriority(enabled=name in realtime)
            if priorities and name in priorities:
                pipeline.priority = priorities[name]()
        runs = {
            (name, paced): LiveRun(orders=[], batches=[], cpu=[])
            for name in pipelines
            for paced in (False, True)
        }
        names = list(pipelines)
        for j, batch in enumerate(batches[window + 5 :]):
            paced = (j // 2) % 2 == 0
            for name in names if j % 2 == 0 else reversed(names):
                if paced:
                    for other in pipelines.values():
                        other.journal.flush()
                        if gap == "checkpoint":
                            other.journal.checkpoint()
                            cast("PaperExecution", other.execution).checkpoint()
                pipeline, run = pipelines[name], runs[name, paced]
                if (wanted := levers.get(name, set_threads)) is not current:
                    wanted()
                    current = wanted
                before = pipeline.latency.count
                delay = process_run_delay()  # untimed: read outside the batch's wall time
                t, cpu = time.perf_counter(), time.process_time()
                await pipeline.on_bars(batch)
                run.batches.append(time.perf_counter() - t)
                run.cpu.append(time.process_time() - cpu)
                if delay is not None and (after := process_run_delay()) is not None:
                    run.delay.append(sum(after.values()) - sum(delay.values()))
                    for group in DELAY_GROUPS:
                        run.delay_by[group].append(after[group] - delay[group])
                run.bars += len(batch)
                if new := pipeline.latency.count - before:  # this batch's orders, oldest first
                    run.orders.extend(pipeline.latency.samples()[-new:].tolist())
                    run.ordering += 1
        return runs, pipelines


def daemon_models(bundle: Path, runtime: str = "torch") -> LoadedBundle:
    """The bundle loaded with the daemon's default inference settings (device, threads, workers)
    on the given CLIP runtime (the daemon's default is auto)."""
    scorer = ScorerConfig()
    return load_bundle(
        bundle,
        inference=InferenceConfig(
            device=scorer.device,
            threads=scorer.threads,
            workers=scorer.workers,
            runtime=runtime,  # type: ignore[arg-type]  # checked by argparse choices
        ),
    )


def load_average() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f}, {five:.2f}, {fifteen:.2f} ({os.cpu_count()} cores)"


def live_windows(symbols: int, window: int) -> list[Window]:
    """One batch's windows at `symbols` symbols, full (as the daemon scores them once warm)."""
    store = BarStore(config=BarStoreConfig(window=window))
    for batch in make_batches(symbols, window + 1):
        for bar in batch:
            store.add(bar)
    return [w for s in store.symbols if (w := store.window(s)) is not None]


def _timed(fn: Callable[[], object], samples: list[float]) -> None:
    t = time.perf_counter()
    fn()
    samples.append(time.perf_counter() - t)


STAGES = (
    "render",
    "clip",
    "render+clip",
    "features",
    "pca+xgboost",
    "fusion before (rows)",
    "fusion after (columns)",
    "drift",
    "reasons",
    "scorer before (order path)",
    "scorer after (order path)",
    "after the orders",
)


def stage_rows(models: LoadedBundle, symbols: int, repeats: int) -> dict[str, list[float]]:
    """Seconds per batch of each stage on one batch of `symbols` windows, timed one after another;
    "before" and "after" alternate within each repeat."""
    engine = models.engine
    after, before = models.scorer(), before_scorer(models)
    windows = live_windows(symbols, max(64, models.bars_needed))
    charts = [w.tail(models.spec.bars_needed) for w in windows]
    images = engine.render(charts)
    vision = after.vision
    assert vision is not None, "the stage table needs a bundle with CLIP"
    assert after.xgb is not None, "the stage table needs a bundle with XGBoost"
    xgb = after.xgb
    x, probs = after.model_rows(windows)
    names = [w.symbol for w in windows]
    closes = np.array([w.close[-1] for w in windows])
    fusion_rows, fusion_columns = models.scorer().fusion, models.scorer().fusion
    drift = after.drift
    rows: dict[str, list[float]] = {k: [] for k in STAGES}

    scores = vision.score_windows(windows)
    technical = after.features.compute(windows)

    def pca_and_stack() -> FloatArray:  # XGBoost's CLIP columns, as model_rows() adds them
        _, cols = vision_columns(scores, after.pca)
        return np.hstack([technical, cols]) if xgb.feature_names[-1].startswith("clip_") else x

    def drift_step() -> None:
        if drift is not None:
            drift.observe(np.hstack([x, np.zeros((len(x), 1))]))
            drift.check(windows[-1].ts)

    deferred: list[tuple[list[Signal], Deferred | None]] = []
    for _ in range(repeats):
        _timed(lambda: engine.render(charts), rows["render"])
        _timed(lambda: engine.score_images(images), rows["clip"])
        _timed(lambda: vision.score_windows(windows), rows["render+clip"])
        _timed(lambda: after.features.compute(windows), rows["features"])
        _timed(lambda: xgb.predict(pca_and_stack()), rows["pca+xgboost"])
        _timed(lambda: fuse_rows(fusion_rows, names, closes, probs), rows["fusion before (rows)"])
        _timed(
            lambda: fusion_columns.fuse_observe(names, closes, probs),
            rows["fusion after (columns)"],
        )
        _timed(drift_step, rows["drift"])
        _timed(lambda: xgb.explain(x, after.explain_top, approximate=True), rows["reasons"])
        _timed(
            lambda: deferred.append(before.score_deferred(windows)),
            rows["scorer before (order path)"],
        )
        before.finish(*deferred.pop())
        _timed(
            lambda: deferred.append(after.score_deferred(windows)),
            rows["scorer after (order path)"],
        )
        _timed(lambda: after.finish(*deferred.pop()), rows["after the orders"])
    return rows


def bench_stages(bundle: Path, symbols_list: list[int], runtimes: list[str], repeats: int) -> None:
    """p50, p99 and the fastest batch of each stage; on a loaded box the fastest is the closest
    to the stage's own CPU cost (a stage over a time slice is often preempted)."""
    print(f"\n== ML scorer stage by stage, ms per batch ({repeats} batches each); {load_average()}")
    for runtime in runtimes:
        models = daemon_models(bundle, runtime)
        served = models.engine.runtime
        print(f"-- runtime {runtime} (serving: {served}, {models.engine.workers} workers)")
        print(
            f"{'stage':>26} "
            + " ".join(f"{f'{n} sym p50':>11} {'p99':>7} {'min':>6}" for n in symbols_list)
        )
        table = {n: stage_rows(models, n, repeats) for n in symbols_list}
        for stage in STAGES:
            cells = " ".join(
                f"{_ms(table[n][stage], 50):>11.2f} {_ms(table[n][stage], 99):>7.2f} "
                f"{_ms(table[n][stage], 0):>6.2f}"
                for n in symbols_list
            )
            print(f"{stage:>26} {cells}")
    print(f"   {load_average()}")


def _ms(values: list[float], q: float) -> float:
    return float(np.percentile(values, q) * 1000) if values else float("nan")


LIVE_GOALS = {10: 8.0, 100: 20.0}  # ML order p99, ms (issue 16)


def bench_live(
    bundle: Path,
    symbols_list: list[int],
    scored_batches: int,
    runtime: str,
    *,
    realtime: bool = False,
    levers: tuple[str, ...] = (),
    gap: str = "flush",
) -> dict[str, float]:
    """Order and batch latency of the pipeline with each scorer (run_pipelines: every batch
    through each pipeline in turn, every other pair of batches paced), the process CPU time and
    run delay (all threads) per batch, and the ML pipelines' stage clocks. The goals are judged
    on paced. realtime: one more arm, ml-after_rt, ml-after with the order path at real-time
    priority (daemon/runtime.py OrderPathPriority), alternating with the others."""
    models = daemon_models(bundle, runtime)
    window = max(64, models.bars_needed)
    print(
        f"\n== live pipeline (bundle {models.bundle_id}, chart {models.spec.width}x{models.spec.height}, "
        f"{models.card.parameters:,} CLIP parameters, window {window}, runtime {runtime} -> "
        f"{models.engine.runtime}); {load_average()}"
    )
    print(
        f"{'':>19} {'---- unpaced ----':>28} {'----- paced -----':>28}\n"
        f"{'symbols':>7} {'scorer':>11} {'orders':>7} {'order p50':>10} {'order p99':>10} "
        f"{'orders':>7} {'order p50':>10} {'order p99':>10} {'batch p50':>10} {'cpu p50':>8}"
        f" {'rdelay p50':>10} {'p99':>6} {'ordering':>9}   goal p99 (paced)"
    )
    figures: dict[str, float] = {}
    whole: LoadedBundle | None = None
    for symbols in symbols_list:
        batches = make_batches(symbols, window + 5 + scored_batches)
        scorers: dict[str, Scorer] = {
            "rules": RuleScorer(config=RuleScorerConfig()),
            "ml-before": before_scorer(models),
            "ml-after": models.scorer(),
        }
        if realtime:
            scorers["ml-after_rt"] = models.scorer()
        for arm in levers:
            if arm in WORKER_LEVERS:
                engine = copy.copy(models.engine)  # the same warm session, another split
                engine.workers = WORKER_LEVERS[arm]
                scorers[f"ml-after_{arm}"] = models.scorer(vision=ClipVision(engine=engine))
            elif arm in TOWER_LEVERS:
                if whole is None:
                    whole = whole_tower_models(bundle, runtime)
                scorers[f"ml-after_{arm}"] = whole.scorer()
            else:
                scorers[f"ml-after_{arm}"] = models.scorer()
        with tempfile.TemporaryDirectory() as tmp:
            runs, pipelines = asyncio.run(
                run_pipelines(
                    scorers,
                    batches,
                    window,
                    Path(tmp),
                    frozenset({"ml-after_rt"} & set(scorers)),
                    {f"ml-after_{arm}": LEVERS[arm] for arm in levers if arm in LEVERS},
                    {f"ml-after_{a}": PRIORITY_LEVERS[a] for a in levers if a in PRIORITY_LEVERS},
                    gap,
                )
            )
        for name in scorers:
            loose, paced = runs[name, False], runs[name, True]
            goal = LIVE_GOALS.get(symbols)
            wanted = f"{goal:g} ms" if goal is not None and name.startswith("ml") else ""
            print(
                f"{symbols:>7} {name:>11} {len(loose.orders):>7} "
                f"{_ms(loose.orders, 50):>10.2f} {_ms(loose.orders, 99):>10.2f} "
                f"{len(paced.orders):>7} {_ms(paced.orders, 50):>10.2f} {_ms(paced.orders, 99):>10.2f} "
                f"{_ms(paced.batches, 50):>10.2f} {_ms(paced.cpu, 50):>8.2f}"
                f" {_ms(loose.delay + paced.delay, 50):>10.2f} {_ms(loose.delay + paced.delay, 99):>6.2f}"
                f" {paced.ordering:>4}/{len(paced.batches):<4}   {wanted}"
            )
            key = name.replace("-", "_")
            for prefix, run in (("", loose), ("paced_", paced)):
                figures[f"{prefix}{key}_order_p50_ms_{symbols}"] = _ms(run.orders, 50)
                figures[f"{prefix}{key}_order_p99_ms_{symbols}"] = _ms(run.orders, 99)
                figures[f"{prefix}{key}_cpu_p50_ms_{symbols}"] = _ms(run.cpu, 50)
                figures[f"{prefix}{key}_run_delay_p50_ms_{symbols}"] = _ms(run.delay, 50)
                figures[f"{prefix}{key}_run_delay_p99_ms_{symbols}"] = _ms(run.delay, 99)
        for prefix in ("", "paced_"):
            ratio = (
                figures[f"{prefix}ml_after_order_p99_ms_{symbols}"]
                / figures[f"{prefix}ml_before_order_p99_ms_{symbols}"]
            )
            print(
                f"{'':>7} ml order p99 after/before, {prefix.rstrip('_') or 'unpaced'}: {ratio:.3f}"
            )
            for arm in (["rt"] if realtime else []) + list(levers):
                for q in (50, 99):
                    rt = (
                        figures[f"{prefix}ml_after_{arm}_order_p{q}_ms_{symbols}"]
                        / figures[f"{prefix}ml_after_order_p{q}_ms_{symbols}"]
                    )
                    print(
                        f"{'':>7} ml order p{q} {arm}/normal, "
                        f"{prefix.rstrip('_') or 'unpaced'}: {rt:.3f}"
                    )
        print_run_delays({n: (runs[n, False], runs[n, True]) for n in scorers})
        print_stage_clocks({n: p for n, p in pipelines.items() if n.startswith("ml")})
    print(f"   {load_average()}")
    return figures


def print_run_delays(runs: dict[str, tuple[LiveRun, LiveRun]]) -> None:
    """Each arm's run delay per batch (paced and unpaced), p50/p99 ms, by thread: the loop, the
    scorer's thread, the CLIP pool's, the rest (which a real-time order path makes wait)."""
    head = " ".join(f"{f'{g} p50':>11} {'p99':>6}" for g in DELAY_GROUPS)
    print(f"{'run delay by thread':>23} {head}")
    for name, (loose, paced) in runs.items():
        cells = " ".join(
            f"{_ms(loose.delay_by[g] + paced.delay_by[g], 50):>11.2f} "
            f"{_ms(loose.delay_by[g] + paced.delay_by[g], 99):>6.2f}"
            for g in DELAY_GROUPS
        )
        print(f"{name:>23} {cells}")


def print_stage_clocks(pipelines: dict[str, Pipeline]) -> None:
    """Each pipeline's order path lap by lap (Pipeline.stage_clock, paced and unpaced batches):
    wall p50/p99, the event loop thread's CPU p50, its run delay p99 and time blocked p99 (wall -
    cpu - delay: on the ML path the loop awaits the scorer's thread in "score"), ms."""
    head = " ".join(
        f"{f'{n} p50':>16} {'p99':>7} {'cpu p50':>7} {'dly p99':>7} {'blk p99':>7}"
        for n in pipelines
    )
    print(f"{'stage clock':>17} {head}")
    for stage in next(iter(pipelines.values())).stage_clock.names:
        cells = []
        for pipeline in pipelines.values():
            clock = pipeline.stage_clock
            wall, cpu = clock.stages[stage], clock.cpu_stages[stage]
            walls, cpus = wall.samples(), cpu.samples()
            delays = clock.delay_stages[stage].samples()
            if delays.size != walls.size:  # the kernel reports no run delay here
                delays = np.zeros_like(walls)
            blocked = _ms(list(walls - cpus - delays), 99) if walls.size == cpus.size else 0.0
            cells.append(
                f"{wall.percentile_ms(50) or 0:>16.2f} {wall.percentile_ms(99) or 0:>7.2f} "
                f"{cpu.percentile_ms(50) or 0:>7.2f} {_ms(list(delays), 99):>7.2f} {blocked:>7.2f}"
            )
        print(f"{stage:>17} {' '.join(cells)}")


def bench_backtest(bundle: Path, symbols: int, bars: int) -> None:
    models = daemon_models(bundle)
    window = max(64, models.bars_needed)
    market = SimMarketConfig(symbols=tuple(f"B{i}" for i in range(symbols)), seed=5)
    batches = frame_batches(simulate_frame(market, START, bars))
    store = BarStoreConfig(window=window)
    config = BacktestConfig(bars=store, strategy=STRATEGY)
    n_bars = sum(len(b) for b in batches)
    print(f"\n== backtest, {n_bars:,} bars ({symbols} symbols), scoring + event loop")
    print(f"{'scorer':>8} {'score bars/s':>13} {'loop bars/s':>12} {'total bars/s':>13}   goal")
    totals = {}
    for name, scorer in (
        ("rules", RuleScorer(config=RuleScorerConfig())),
        ("ml", models.scorer()),
        ("clip", models.scorer(mode="clip")),
    ):
        t0 = time.perf_counter()
        pre = precompute_signals(scorer, batches, store)
        t1 = time.perf_counter()
        BacktestEngine(config=config, scorer=pre).run_batches(batches)
        t2 = time.perf_counter()
        totals[name] = n_bars / (t2 - t0)
        goal = ">= 300 bars/s" if name == "ml" else ""
        print(
            f"{name:>8} {n_bars / (t1 - t0):>13,.0f} {n_bars / (t2 - t1):>12,.0f} "
            f"{totals[name]:>13,.0f}   {goal}"
        )
    print(f"{'':>8} ml/rules total ratio {totals['ml'] / totals['rules']:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, default=Path("state/bundles/default"))
    parser.add_argument("--symbols", default="10,100")
    parser.add_argument("--batches", type=int, default=300, help="scored batches per live run")
    parser.add_argument("--backtest-bars", type=int, default=1500, help="bars per symbol")
    parser.add_argument("--backtest-symbols", type=int, default=4)
    parser.add_argument(
        "--runtimes",
        default="torch,auto",
        help="CLIP runtimes to compare (torch, onnx, onnx-int8, auto)",
    )
    parser.add_argument(
        "--stage-batches", type=int, default=200, help="batches per stage table cell"
    )
    parser.add_argument("--skip-backtest", action="store_true")
    parser.add_argument("--max-runs", type=int, default=3, help="repeats at most (two must agree)")
    parser.add_argument(
        "--realtime",
        action="store_true",
        help="the live table also runs ml-after with the order path at real-time priority "
        "(ml-after_rt; needs root or RLIMIT_RTPRIO >= 1; refused: one line, normal priority)",
    )
    parser.add_argument(
        "--levers",
        default="",
        help="more ml-after arms, each with a thread state during its batches: background "
        "threads (journal writers, WAL checkpointers, explainer) lowered (batch, idle, nice10) "
        f"or the order path's threads at a shorter slice (slice<us>), the WAL checkpoints free "
        f"during the arm's batches (nogate), the CLIP engine on 1, 3 or 4 workers (workers<n>): "
        f"{','.join([*LEVERS, *PRIORITY_LEVERS, *WORKER_LEVERS, *TOWER_LEVERS])}; wholetower: the "
        "ONNX tower whole (as before onnx_prune), with signal digests of both",
    )
    parser.add_argument(
        "--digest-batches",
        type=int,
        default=200,
        help="with --levers wholetower: batches whose signals are digested for both towers",
    )
    parser.add_argument(
        "--gap",
        choices=("checkpoint", "flush"),
        default="flush",
        help="what a paced batch waits for: every journal's writer (flush), or that and every "
        "WAL checkpoint pass, run in the gap just before the batch (checkpoint)",
    )
    args = parser.parse_args()
    known = set(LEVERS) | set(PRIORITY_LEVERS) | set(WORKER_LEVERS) | set(TOWER_LEVERS)
    if unknown_arms := {a for a in args.levers.split(",") if a} - known:
        parser.error(f"--levers: unknown {', '.join(sorted(unknown_arms))}")
    runtimes = args.runtimes.split(",")
    unknown = set(runtimes) - {"torch", "onnx", "onnx-int8", "auto"}
    if unknown:
        parser.error(f"--runtimes: unknown {', '.join(sorted(unknown))}")
    print(f"bench_ml_pipeline: {load_average()}")
    configure_logging(level="warning", fmt="json", stream=io.StringIO())
    bundle = args.bundle
    if not (bundle / "model_card.json").is_file():
        tmp = Path(tempfile.mkdtemp(prefix="bench-ml-")) / "bundle"
        print(f"no bundle at {bundle}: building a --quick one at {tmp} (tiny CLIP)")
        bootstrap(quick_config(), tmp)
        bundle = tmp
    symbols = [int(s) for s in args.symbols.split(",")]

    key = f"paced_ml_after_order_p99_ms_{max(symbols)}_{runtimes[-1]}"
    with Session("ml_pipeline", max_runs=args.max_runs) as bench:
        bench.until_stable(lambda: _timed_parts(bundle, args, symbols, runtimes), key=key)
    print(f"bench_ml_pipeline done: {load_average()}")


def _timed_parts(
    bundle: Path, args: argparse.Namespace, symbols: list[int], runtimes: list[str]
) -> dict[str, float]:
    """One run of every part: the live latencies (the figure the repeats settle on) and each
    part's wall time."""
    t0 = time.perf_counter()
    if args.stage_batches > 0:  # 0: the live table only
        bench_stages(bundle, symbols, runtimes, args.stage_batches)
    t1 = time.perf_counter()
    figures: dict[str, float] = {}
    for runtime in runtimes:
        if "wholetower" in args.levers.split(","):
            tower_digests(bundle, runtime, symbols, args.digest_batches)
        live = bench_live(
            bundle,
            symbols,
            args.batches,
            runtime,
            realtime=args.realtime,
            levers=tuple(a for a in args.levers.split(",") if a),
            gap=args.gap,
        )
        figures.update({f"{k}_{runtime}": v for k, v in live.items()})
    t2 = time.perf_counter()
    figures["stages_seconds"] = t1 - t0
    figures["live_seconds"] = t2 - t1
    if not args.skip_backtest:
        bench_backtest(bundle, args.backtest_symbols, args.backtest_bars)
        figures["backtest_seconds"] = time.perf_counter() - t2
    return figures


if __name__ == "__main__":
    main()
