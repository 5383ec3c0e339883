"""Crash consistency: SIGKILL the daemon at 30+ random moments and at each named crash point
(after journaling orders, after submitting them, between the venue saving a fill and the journal
saving it), restart each time, and check: no order sent twice, every fill once, positions equal
to the fills, the venue agrees with the journal, and an operator pause survives every restart."""

from __future__ import annotations

import collections
import random
import signal
import time
from pathlib import Path

import httpx
import pytest

from daemon.journal import Journal
from tests.integration.daemon_process import DaemonProcess, count, wait_for
from tests.integration.e2e_helpers import API_TOKEN, log_events
from tests.integration.test_daemon_crash import (
    assert_consistent,
    crash_config,
    submitted_ids,
    venue_view,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(900)]

CRASH_POINTS = (
    "VLMTRADER_CRASH_AFTER_ORDERS_JOURNALED",
    "VLMTRADER_CRASH_AFTER_ORDERS_SUBMITTED",
    "VLMTRADER_CRASH_AFTER_VENUE_FILLS",
)
RANDOM_KILLS = 32
PAUSE_AFTER = 20  # random kills while trading; the rest run paused


def _check_after_kill(state: Path, logs: list[Path], *, paused: bool) -> None:
    """What must hold on disk at any kill, before the next start reconciles."""
    journal_path = state / "journal.sqlite"
    if not journal_path.exists():
        return
    sent = submitted_ids(*logs)
    assert [c for c, n in collections.Counter(sent).items() if n > 1] == []
    with Journal(journal_path, checkpoint_seconds=None) as journal:
        orders = journal.load_orders()
        fills = journal.load_fills()
        positions = journal.load_positions()
        paused_kv = journal.get("paused")
    for order in orders.values():
        assert order.filled_quantity <= order.quantity + 1e-9, order
    per_order: dict[str, float] = collections.defaultdict(float)
    for fill in fills:
        per_order[fill.client_order_id] += fill.quantity
    for coid, quantity in per_order.items():
        assert orders[coid].filled_quantity == pytest.approx(quantity), coid
    for symbol, position in positions.items():
        signed = sum(f.signed_quantity for f in fills if f.symbol == symbol)
        assert position.quantity == pytest.approx(signed), symbol
    if (state / "paper_venue.sqlite").exists():
        venue_fill_ids = {f.fill_id for f in venue_view(state).fills}
        assert {f.fill_id for f in fills} <= venue_fill_ids, "a journaled fill the venue lacks"
    if paused:
        assert paused_kv == "true"


def _pause_over_http(daemon: DaemonProcess) -> None:
    wait_for(lambda: bool(log_events(daemon, "api.started")), timeout=120, what="api.started")
    port = log_events(daemon, "api.started")[-1]["port"]
    response = httpx.post(
        f"http://127.0.0.1:{port}/control/pause",
        json={"reason": "crash-test"},
        headers={"Authorization": f"Bearer {API_TOKEN}"},
        timeout=30,
    )
    assert response.status_code == 200, response.text


@pytest.mark.parametrize("synchronous", ["normal", "full"])
def test_restart_when_killed_at_random_moments_and_crash_points_then_consistent_and_pause_kept(
    tmp_path: Path, synchronous: str
) -> None:
    state, journal_path, config = crash_config(
        tmp_path, synchronous, api={"enabled": True, "port": 0, "shutdown_timeout_seconds": 1.0}
    )
    env = {"VLMTRADER_API_TOKEN": API_TOKEN}
    rng = random.Random(14)
    logs: list[Path] = []

    for i, point in enumerate(CRASH_POINTS):
        log = tmp_path / f"point-{i}.log"
        logs.append(log)
        daemon = DaemonProcess(config, log_path=log, env={**env, point: "1"})
        code = daemon.wait(timeout=240)
        assert code == -signal.SIGKILL, f"{point} did not fire:\n{log.read_text()[-2000:]}"
        _check_after_kill(state, logs, paused=False)

    paused = False
    orders_at_pause = 0
    for i in range(RANDOM_KILLS):
        log = tmp_path / f"kill-{i}.log"
        logs.append(log)
        daemon = DaemonProcess(config, log_path=log, env=env)
        try:
            if i == PAUSE_AFTER:
                _pause_over_http(daemon)
                paused = True
                orders_at_pause = len(submitted_ids(*logs))
            time.sleep(rng.uniform(0.1, 2.0))
        finally:
            daemon.kill()
        _check_after_kill(state, logs, paused=paused)
        if paused:
            assert len(submitted_ids(*logs)) == orders_at_pause, "an order went out while paused"
            if i > PAUSE_AFTER and log_events(daemon, "daemon.ready"):
                assert log_events(daemon, "daemon.pause_restored")

    assert paused
    assert count(journal_path, "SELECT count(*) FROM fills") > 0
    # One clean run: reconcile, then a SIGTERM; the venue and the journal agree exactly.
    final = tmp_path / "final.log"
    logs.append(final)
    daemon = DaemonProcess(config, log_path=final, env=env)
    try:
        wait_for(lambda: bool(log_events(daemon, "daemon.ready")), timeout=120, what="ready")
        assert log_events(daemon, "daemon.pause_restored")
        daemon.proc.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=60) == 0
    finally:
        daemon.kill()
    assert len(submitted_ids(*logs)) == orders_at_pause
    assert_consistent(state, logs)
    for log in logs:
        assert "Traceback" not in log.read_text(errors="replace"), log
