"""`order_path_priority` in a real `vlmtrader run`: realtime raises the order path (or says once
why it cannot), normal never touches the scheduler."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.integration.e2e_helpers import (
    e2e_config,
    log_events,
    orders_in_journal,
    running_daemon,
    until,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

REALTIME_LINES = ("runtime.realtime_granted", "runtime.realtime_refused")


def _may_use_real_time() -> bool:
    """Whether a process like this one may use SCHED_FIFO (root, CAP_SYS_NICE or RLIMIT_RTPRIO)."""
    flags = os.SCHED_FIFO | os.SCHED_RESET_ON_FORK
    try:
        os.sched_setscheduler(0, flags, os.sched_param(1))
    except PermissionError:
        return False
    os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
    return True


def _trade_then_lines(tmp_path: Path, extra: dict[str, object]) -> list[str]:
    config = e2e_config(tmp_path, extra=extra)
    with running_daemon(config, tmp_path) as daemon:
        until(lambda: orders_in_journal(tmp_path) > 0, daemon=daemon, timeout=60, what="orders")
        return [e["event"] for e in log_events(daemon) if e.get("event") in REALTIME_LINES]


def test_run_when_order_path_priority_realtime_then_one_line_says_granted_or_refused(
    tmp_path: Path,
) -> None:
    lines = _trade_then_lines(tmp_path, {"order_path_priority": "realtime"})
    expected = "runtime.realtime_granted" if _may_use_real_time() else "runtime.realtime_refused"
    assert lines == [expected]


def test_run_when_order_path_priority_default_then_the_scheduler_is_left_alone(
    tmp_path: Path,
) -> None:
    assert _trade_then_lines(tmp_path, {}) == []
