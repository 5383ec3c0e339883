"""`vlmtrader run` as a real process: READY/WATCHDOG over NOTIFY_SOCKET, trading, SIGTERM, journal."""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path

import pytest

from daemon.execution.paper import PaperExecution
from daemon.journal import Journal
from strategy.sim_broker import SimBrokerConfig
from strategy.types import OrderStatus
from tests.integration.daemon_process import (
    DaemonProcess,
    NotifySocket,
    count,
    wait_for,
    write_config,
)

pytestmark = pytest.mark.integration


def log_events(text: str) -> list[dict[str, object]]:
    events = []
    for line in text.splitlines():
        try:
            events.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return events


def broker_view(state_dir: Path):  # type: ignore[no-untyped-def]
    async def view():  # type: ignore[no-untyped-def]
        with PaperExecution(
            config=SimBrokerConfig(), path=state_dir / "paper_venue.sqlite"
        ) as venue:
            return await venue.broker_view()

    return asyncio.run(view())


@pytest.mark.parametrize("writer", ["thread", "process"])
def test_run_when_sigterm_after_fills_then_ready_watchdog_exit_zero_and_journal_complete(
    tmp_path: Path, writer: str
) -> None:
    state = tmp_path / "state"
    config = write_config(
        tmp_path / "cfg.yaml",
        state_dir=state,
        speed=3000,
        extra={"journal": {"synchronous": "full", "writer": writer}},
    )
    notify = NotifySocket(tmp_path / "notify.sock")
    journal_path = state / "journal.sqlite"
    daemon = DaemonProcess(
        config,
        log_path=tmp_path / "daemon.log",
        env={"NOTIFY_SOCKET": str(notify.path), "WATCHDOG_USEC": "400000"},
    )
    try:
        wait_for(lambda: notify.seen("READY=1"), timeout=120, what="READY=1")
        wait_for(lambda: notify.seen("WATCHDOG=1"), timeout=30, what="WATCHDOG=1")
        wait_for(
            lambda: count(journal_path, "SELECT count(*) FROM fills") >= 3,
            timeout=240,
            what="three fills in the journal",
        )
        daemon.proc.send_signal(signal.SIGTERM)
        code = daemon.wait(timeout=60)
    finally:
        daemon.kill()
        notify.close()

    assert code == 0, daemon.log_text()[-3000:]
    assert notify.seen("STOPPING=1")
    names = [e.get("event") for e in log_events(daemon.log_text())]
    assert "daemon.ready" in names
    assert "order.submitted" in names
    assert "order.filled" in names
    assert names.index("daemon.stopped") > names.index("order.filled")
    assert "daemon.crashed" not in names

    with Journal(journal_path) as journal:
        orders = journal.load_orders()
        fills = journal.load_fills()
        positions = journal.load_positions()
        # Graceful shutdown cancels what is still open: nothing is left working.
        assert all(o.status.is_terminal for o in orders.values()), [
            o.status for o in orders.values()
        ]
        assert {f.client_order_id for f in fills} <= set(orders)
        for symbol, position in positions.items():
            signed = sum(f.signed_quantity for f in fills if f.symbol == symbol)
            assert position.quantity == pytest.approx(signed)
        assert journal.counts()["signals"] > 0
        assert journal.counts()["daily_pnl"] >= 1
        assert journal.counts()["decisions"] >= len(orders)

    view = broker_view(state)
    assert set(view.orders) == set(orders)
    assert {f.fill_id for f in view.fills} == {f.fill_id for f in fills}
    for symbol, position in view.positions.items():
        assert positions[symbol].quantity == pytest.approx(position.quantity)
    assert any(o.status is OrderStatus.FILLED for o in orders.values())


def test_run_when_config_invalid_then_exit_two_with_one_line_error(tmp_path: Path) -> None:
    config = write_config(
        tmp_path / "cfg.yaml", state_dir=tmp_path / "state", extra={"risk": {"max_drawdown": -1}}
    )
    daemon = DaemonProcess(config, log_path=tmp_path / "daemon.log")
    code = daemon.wait(timeout=60)
    assert code == 2
    text = daemon.log_text()
    assert "max_drawdown" in text
    assert "Traceback" not in text
