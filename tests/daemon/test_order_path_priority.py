"""The order path at real-time priority (daemon/runtime.py OrderPathPriority), and only the order path."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import structlog

from daemon.runtime import OrderPathPriority
from strategy.bars import Window
from strategy.rule_scorer import RuleScorer, RuleScorerConfig
from strategy.types import Signal
from tests.daemon.test_pipeline import market, pipeline_at

REALTIME = os.SCHED_FIFO | os.SCHED_RESET_ON_FORK
NORMAL = os.SCHED_OTHER | os.SCHED_RESET_ON_FORK


def _may_use_real_time() -> bool:
    """Whether this process may raise a thread to SCHED_FIFO (root, or RLIMIT_RTPRIO >= 1)."""
    try:
        os.sched_setscheduler(0, REALTIME, os.sched_param(1))
    except PermissionError:
        return False
    os.sched_setscheduler(0, NORMAL, os.sched_param(0))
    return True


class PolicyRecordingScorer(RuleScorer):
    """The rule scorer, noting the scheduling policy of the thread that scores each batch."""

    def __init__(self) -> None:
        super().__init__(config=RuleScorerConfig())
        self.policies: list[int] = []

    def score(self, windows: Sequence[Window]) -> list[Signal]:
        self.policies.append(os.sched_getscheduler(0))
        return super().score(windows)


def test_on_bars_when_priority_enabled_then_real_time_until_the_orders_are_out(
    tmp_path: Path,
) -> None:
    scorer = PolicyRecordingScorer()
    at_log_lines: list[int] = []

    def note_policy(_logger: object, _name: str, event: dict[str, object]) -> dict[str, object]:
        if event["event"] == "order.submitted":
            at_log_lines.append(os.sched_getscheduler(0))
        return event

    expected = REALTIME if _may_use_real_time() else NORMAL  # refused: normal, one line
    with pipeline_at(tmp_path, scorer=scorer) as pipeline:
        pipeline.priority = OrderPathPriority(enabled=True)

        async def go() -> None:
            for batch in market(60):
                await pipeline.on_bars(batch)

        with structlog.testing.capture_logs(processors=[note_policy]) as logs:
            asyncio.run(go())
        submitted = pipeline.stats.orders_submitted
    assert submitted > 0
    assert scorer.policies
    assert set(scorer.policies) == {expected}  # scoring is on the order path
    assert set(at_log_lines) == {os.SCHED_OTHER if expected == NORMAL else NORMAL}
    assert os.sched_getscheduler(0) in (os.SCHED_OTHER, NORMAL)  # normal between batches
    refused = [e for e in logs if e["event"] == "runtime.realtime_refused"]
    assert len(refused) == (0 if expected == REALTIME else 1)


def test_on_bars_when_priority_disabled_then_normal_throughout(tmp_path: Path) -> None:
    scorer = PolicyRecordingScorer()
    with pipeline_at(tmp_path, scorer=scorer) as pipeline:
        pipeline.priority = OrderPathPriority(enabled=False)

        async def go() -> None:
            for batch in market(30):
                await pipeline.on_bars(batch)

        asyncio.run(go())
    assert scorer.policies
    assert set(scorer.policies) <= {os.SCHED_OTHER, NORMAL}  # NORMAL: after a test that raised


def test_enter_when_not_permitted_then_one_line_and_normal_priority_from_then_on() -> None:
    """A process without CAP_SYS_NICE and with RLIMIT_RTPRIO 0 (root drops to nobody first)."""
    script = """
import os, resource
import structlog
from daemon.runtime import OrderPathPriority
resource.setrlimit(resource.RLIMIT_RTPRIO, (0, 0))
if os.geteuid() == 0:
    os.setuid(65534)
priority = OrderPathPriority(enabled=True)
with structlog.testing.capture_logs() as logs:
    for _ in range(3):
        priority.enter()
        priority.leave()
print([e["event"] for e in logs], priority.enabled, os.sched_getscheduler(0))
"""
    out = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": os.getcwd()},
    ).stdout.strip()
    assert out == f"['runtime.realtime_refused'] False {os.SCHED_OTHER}"
