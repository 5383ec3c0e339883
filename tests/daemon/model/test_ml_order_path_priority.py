"""The ML order path at real-time priority: with Pipeline.priority enabled, the scorer's thread
(its call on the order path) and the CLIP pool's threads (that batch's chunks) run at SCHED_FIFO,
and every thread is normal again between batches, errors included; the work after the orders (the
deferred reasons) stays normal; disabled, nothing is raised. The journal's writer runs nicer (it
lowers itself) while the threads the order path starts keep the process's nice value."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from daemon.model.loader import LoadedBundle, load_bundle
from daemon.runtime import OrderPathPriority
from strategy.market_sim import MarketSimulator, SimMarketConfig
from strategy.ml_scorer import Deferred
from strategy.target_strategy import StrategyConfig
from strategy.types import Bar, Signal
from tests.daemon.ml_helpers import WINDOW, quick_bundle
from tests.daemon.test_order_path_priority import _may_use_real_time
from tests.daemon.test_pipeline import START, pipeline_at
from vlm_engine.infer import InferenceConfig
from vlm_engine.thread_policy import BACKGROUND_NICE

FIFO = os.SCHED_FIFO
# 30 symbols: two chunks (19 and 11), one of them for a pool thread (MIN_CHARTS_TO_SPLIT 24)
MARKET = SimMarketConfig(symbols=tuple(f"S{i}" for i in range(30)), seed=5, pattern_rate=0.1)
TRADES_OFTEN = StrategyConfig(
    hold_bars=1, position_notional=2_000, enter_threshold=0.5, min_confidence=0.0
)


@pytest.fixture(scope="module")
def models() -> LoadedBundle:
    config = InferenceConfig(device="cpu", threads=1, workers=2, warmup_batches=1, runtime="onnx")
    return load_bundle(quick_bundle(), inference=config)


def _batches(n: int) -> list[list[Bar]]:
    sim = MarketSimulator(config=MARKET, start=START)
    return [sim.next_batch() for _ in range(n)]


def _policy(tid: int = 0) -> int:
    return os.sched_getscheduler(tid) & ~os.SCHED_RESET_ON_FORK


def _threads_at_fifo() -> list[int]:
    """The process's threads (the kernel's list, not only Python's) at a real-time policy now."""
    at_fifo = []
    for task in os.listdir("/proc/self/task"):
        try:
            if _policy(int(task)) == FIFO:
                at_fifo.append(int(task))
        except ProcessLookupError:  # a thread that ended while we looked
            continue
    return at_fifo


def _nice(tid: int) -> int:
    """The thread's nice value from the kernel's stat line (field 19)."""
    with open(f"/proc/self/task/{tid}/stat") as f:
        after_name = f.read().rsplit(")", 1)[1].split()  # the name may hold spaces
    return int(after_name[16])  # fields from the 3rd on


def _thread_id(prefix: str) -> int:
    (tid,) = [t.native_id for t in threading.enumerate() if t.name.startswith(prefix)]
    assert tid is not None
    return tid


class Recorded:
    """Where each piece of a batch's ML work ran, and at which policy."""

    def __init__(self) -> None:
        self.embeds: list[tuple[str, int]] = []  # (thread name, policy)
        self.scored: list[int] = []  # the scorer's order-path call
        self.finished: list[int] = []  # the deferred reasons, after the orders
        self.between: list[list[int]] = []  # threads at FIFO once each batch returned
        self.nice: list[tuple[str, int]] = []  # (thread name, nice) of each embed and score call
        self.background: list[int] = []  # the journal writer's nice once each batch returned


def _run(
    tmp_path: Path,
    models: LoadedBundle,
    *,
    enabled: bool,
    fail_at: int | None = None,
) -> tuple[Recorded, int, list[str]]:
    """The ML pipeline over the market with the priority enabled or not, every piece of its ML
    work noting its thread's policy; fail_at: that embed call raises (the batch fails)."""
    scorer, engine, seen = models.scorer(), models.engine, Recorded()
    embed, score_deferred, finish = engine.embed, scorer.score_deferred, scorer.finish
    calls = [0]

    def noted_embed(images: np.ndarray) -> np.ndarray:
        seen.embeds.append((threading.current_thread().name, _policy()))
        seen.nice.append((threading.current_thread().name, _nice(threading.get_native_id())))
        calls[0] += 1
        if calls[0] == fail_at:
            msg = "embedding failed"
            raise RuntimeError(msg)
        return embed(images)

    def noted_score(windows: Sequence[object]) -> tuple[list[Signal], Deferred | None]:
        seen.scored.append(_policy())
        seen.nice.append((threading.current_thread().name, _nice(threading.get_native_id())))
        return score_deferred(windows)  # type: ignore[arg-type]

    def noted_finish(signals: list[Signal], deferred: Deferred | None) -> list[Signal]:
        seen.finished.append(_policy())
        return finish(signals, deferred)

    engine.embed = noted_embed  # type: ignore[method-assign]
    scorer.score_deferred = noted_score  # type: ignore[method-assign]
    scorer.finish = noted_finish  # type: ignore[method-assign]
    errors: list[str] = []
    try:
        with pipeline_at(tmp_path, scorer=scorer, window=WINDOW, strategy=TRADES_OFTEN) as pipeline:
            pipeline.priority = OrderPathPriority(enabled=enabled)

            async def go() -> None:
                for batch in _batches(WINDOW + 25):
                    try:
                        await pipeline.on_bars(batch)
                    except RuntimeError as e:
                        errors.append(str(e))
                    seen.between.append(_threads_at_fifo())
                    seen.background.append(_nice(_thread_id("journal-writer")))

            asyncio.run(go())
            orders = pipeline.stats.orders_submitted
    finally:
        del engine.embed  # type: ignore[method-assign]  # the class's again
    return seen, orders, errors


def test_on_bars_when_priority_enabled_then_scorer_and_pool_threads_fifo_only_for_the_batch(
    tmp_path: Path, models: LoadedBundle
) -> None:
    expected = FIFO if _may_use_real_time() else os.SCHED_OTHER
    seen, orders, errors = _run(tmp_path, models, enabled=True)
    assert orders > 0
    assert not errors
    assert seen.scored
    assert set(seen.scored) == {expected}  # the scorer's thread, for its order-path call
    pool = [p for name, p in seen.embeds if name.startswith("clip-worker")]
    assert pool, "no chunk was taken by a pool thread"
    assert set(pool) == {expected}  # the pool's chunks of an order-path batch
    assert {p for _, p in seen.embeds} == {expected}
    assert seen.finished
    assert set(seen.finished) == {os.SCHED_OTHER}  # the reasons after the orders: normal
    assert seen.between == [[]] * len(seen.between)  # no thread left at FIFO between batches


def test_on_bars_when_priority_disabled_then_no_thread_is_raised(
    tmp_path: Path, models: LoadedBundle
) -> None:
    seen, orders, _ = _run(tmp_path, models, enabled=False)
    assert orders > 0
    assert seen.scored
    assert set(seen.scored) == {os.SCHED_OTHER}
    assert {p for _, p in seen.embeds} == {os.SCHED_OTHER}
    assert seen.between == [[]] * len(seen.between)


def test_on_bars_when_a_chunk_fails_at_fifo_then_every_thread_is_normal_after_the_error(
    tmp_path: Path, models: LoadedBundle
) -> None:
    """The 10th embed call fails (in whichever thread takes it): its batch raises, and leaves no
    thread raised."""
    seen, _, errors = _run(tmp_path, models, enabled=True, fail_at=10)
    assert errors == ["embedding failed"]
    assert seen.between == [[]] * len(seen.between)


def test_carried_when_the_call_raises_then_its_thread_is_normal_again() -> None:
    priority = OrderPathPriority(enabled=True)
    expected = FIFO if _may_use_real_time() else os.SCHED_OTHER
    inside: list[int] = []
    after: list[int] = []

    def fails() -> None:
        inside.append(_policy())
        msg = "scorer failed"
        raise ValueError(msg)

    def worker(fn: object) -> None:
        with pytest.raises(ValueError, match="scorer failed"):
            fn()  # type: ignore[operator]
        after.append(_policy())

    priority.enter()
    try:
        carried = priority.carried(fails)  # handed off while the path is raised
    finally:
        priority.leave()
    thread = threading.Thread(target=worker, args=(carried,))
    thread.start()
    thread.join()
    assert inside == [expected]
    assert after == [os.SCHED_OTHER]
    assert priority.carried(fails) is fails  # handed off after leave(): runs as it is


def test_on_bars_when_background_threads_are_lowered_then_the_order_path_keeps_its_nice(
    tmp_path: Path, models: LoadedBundle
) -> None:
    """The journal's writer runs BACKGROUND_NICE nicer (it lowered itself when it started); the
    scorer's thread and the CLIP pool's, started by the order path, keep the process's nice."""
    base = _nice(threading.get_native_id())
    seen, orders, _ = _run(tmp_path, models, enabled=False)
    assert orders > 0
    assert any(name.startswith("clip-worker") for name, _ in seen.nice)
    assert any(name.startswith("asyncio") for name, _ in seen.nice)
    assert {nice for _, nice in seen.nice} == {base}
    assert set(seen.background) == {min(19, base + BACKGROUND_NICE)}
