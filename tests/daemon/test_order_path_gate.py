"""Background work off the order path: the WAL checkpointers start no pass while a batch is on
its way to the broker (daemon/runtime.py ORDER_PATH_GATE, held by OrderPathPriority)."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Mapping, MutableMapping, Sequence
from pathlib import Path
from typing import Any

import structlog

from daemon.runtime import ORDER_PATH_GATE, OrderPathPriority
from daemon.wal_checkpoint import WalCheckpointer
from strategy.bars import Window
from strategy.rule_scorer import RuleScorer, RuleScorerConfig
from strategy.types import Signal
from tests.daemon.test_pipeline import market, pipeline_at


def _wal_file(path: Path) -> None:
    con = sqlite3.connect(path, isolation_level=None)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("CREATE TABLE t (x)")
    con.close()


def test_checkpointer_when_a_batch_is_in_flight_then_no_pass_until_its_orders_are_out(
    tmp_path: Path,
) -> None:
    path = tmp_path / "venue.sqlite"
    _wal_file(path)
    passes: list[float] = []
    priority = OrderPathPriority(enabled=False)
    priority.enter()  # a batch arrives before the thread's first pass
    thread = WalCheckpointer(
        path, 0.01, event="venue.checkpoint_failed", chores=lambda _: passes.append(1.0)
    )
    thread.start()
    try:
        time.sleep(0.3)  # 30 intervals
        assert passes == []
        priority.leave()  # the orders are out
        priority.leave()  # a second leave (the pipeline's finally) releases nothing more
        deadline = time.monotonic() + 10
        while len(passes) < 3:
            assert time.monotonic() < deadline, "no pass once the orders were out"
            time.sleep(0.01)
    finally:
        thread.stop()
    assert not thread.is_alive()
    assert ORDER_PATH_GATE.wait_idle(0)


def test_gate_when_two_batches_overlap_then_idle_only_once_both_are_out() -> None:
    first, second = OrderPathPriority(enabled=False), OrderPathPriority(enabled=False)
    first.enter()
    second.enter()
    first.leave()
    assert not ORDER_PATH_GATE.wait_idle(0)
    second.leave()
    assert ORDER_PATH_GATE.wait_idle(0)


def test_gate_when_hold_background_off_then_batches_never_hold_it() -> None:
    priority = OrderPathPriority(enabled=False, hold_background=False)
    priority.enter()
    try:
        assert ORDER_PATH_GATE.wait_idle(0)
    finally:
        priority.leave()


class GateRecordingScorer(RuleScorer):
    """The rule scorer, noting whether the gate was held while it scored."""

    def __init__(self) -> None:
        super().__init__(config=RuleScorerConfig())
        self.idle: list[bool] = []

    def score(self, windows: Sequence[Window]) -> list[Signal]:
        self.idle.append(ORDER_PATH_GATE.wait_idle(0))
        return super().score(windows)


def test_on_bars_when_scoring_then_gate_held_and_free_again_once_the_orders_are_out(
    tmp_path: Path,
) -> None:
    scorer = GateRecordingScorer()
    at_log_lines: list[bool] = []

    def note_gate(_logger: Any, _name: str, event: MutableMapping[str, Any]) -> Mapping[str, Any]:
        if event["event"] == "order.submitted":
            at_log_lines.append(ORDER_PATH_GATE.wait_idle(0))
        return event

    with pipeline_at(tmp_path, scorer=scorer) as pipeline:

        async def go() -> None:
            for batch in market(60):
                await pipeline.on_bars(batch)

        with structlog.testing.capture_logs(processors=[note_gate]):
            asyncio.run(go())
    assert scorer.idle
    assert not any(scorer.idle)  # held while each batch was scored
    assert at_log_lines
    assert all(at_log_lines)  # free once the orders are at the broker
