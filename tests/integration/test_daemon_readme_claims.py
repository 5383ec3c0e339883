"""README claims about `vlmtrader run`, each against a real daemon process (paper-sim), its SQLite
journal and its paper venue: `--speed` and `--max-bars`, `shutdown.cancel_open_orders: false`,
a position mismatch at start halts trading, orders placed outside the daemon are adopted."""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from daemon.execution.paper import PaperExecution
from strategy.sim_broker import SimBrokerConfig
from strategy.types import Order, OrderType, Side
from tests.integration.daemon_process import DaemonProcess, read_db
from tests.integration.e2e_helpers import (
    e2e_config,
    journal_path,
    log_events,
    running_daemon,
    start_daemon,
    until,
    wait_ready,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]
SYMBOLS = 4


def venue_path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "paper_venue.sqlite"


def run_to_the_end(
    tmp_path: Path, *args: str, extra: dict[str, Any] | None = None
) -> DaemonProcess:
    """`vlmtrader run` with a file whose sim speed would deliver one bar a week: only the
    command line's --speed and --max-bars make it trade and stop on its own."""
    config = e2e_config(tmp_path, speed=0.0001, extra=extra)
    daemon = DaemonProcess(config, log_path=tmp_path / "daemon.log", args=args)
    try:
        code = daemon.proc.wait(timeout=90)
    finally:
        daemon.kill()  # closes the log; a daemon still running here has failed the test
    assert code == 0, daemon.log_text()[-3000:]
    return daemon


def journal_positions(tmp_path: Path) -> dict[str, float]:
    with read_db(journal_path(tmp_path)) as con:
        rows = con.execute("SELECT symbol, quantity FROM positions").fetchall()
    return {r["symbol"]: r["quantity"] for r in rows if abs(r["quantity"]) > 1e-9}


def status_of(daemon: DaemonProcess) -> dict[str, Any]:
    (started,) = log_events(daemon, "api.started")
    body: dict[str, Any] = httpx.get(
        f"http://127.0.0.1:{started['port']}/status", timeout=10
    ).json()
    return body


def test_run_when_speed_and_max_bars_on_command_line_then_they_override_the_file(
    tmp_path: Path,
) -> None:
    daemon = run_to_the_end(tmp_path, "--speed", "6000", "--max-bars", "25")

    (started,) = log_events(daemon, "feed.started")
    (exhausted,) = log_events(daemon, "feed.exhausted")
    (stopped,) = log_events(daemon, "daemon.stopped")
    assert started["speed"] == 6000
    assert exhausted["batches"] == 25
    assert stopped["bars"] == 25 * SYMBOLS
    with read_db(journal_path(tmp_path)) as con:
        row = con.execute("SELECT value FROM kv WHERE key = 'last_bar_ts'").fetchone()
    assert row[0] == exhausted["last_ts"]


def test_stop_when_cancel_open_orders_false_then_working_orders_stay_open_at_the_venue(
    tmp_path: Path,
) -> None:
    # Passive limit orders 3 % away from the price: they rest at the venue for many bars.
    extra = {
        "strategy": {"order_type": "limit", "limit_offset_bps": -300, "hold_bars": 200},
        "shutdown": {"cancel_open_orders": False},
    }
    config = e2e_config(tmp_path, api=True, extra=extra)
    with running_daemon(config, tmp_path) as daemon:
        until(lambda: len(status_of(daemon)["open_orders"]) >= 2, daemon=daemon, what="orders")
        code = daemon.terminate(timeout=30)

    (stopped,) = log_events(daemon, "daemon.stopped")
    assert code == 0
    assert stopped["cancelled_orders"] == 0
    assert log_events(daemon, "order.cancel_requested") == []
    with read_db(journal_path(tmp_path)) as con:
        journal_open = {
            r[0]
            for r in con.execute(
                "SELECT client_order_id FROM orders WHERE status IN ('submitted', 'accepted')"
            )
        }
    with PaperExecution(config=SimBrokerConfig(), path=venue_path(tmp_path)) as venue:
        venue_open = {o.client_order_id for o in venue.broker.open_orders()}
    assert len(venue_open) >= 2
    assert venue_open == journal_open


def test_start_when_broker_position_differs_from_journal_then_trading_halted(
    tmp_path: Path,
) -> None:
    extra = {"strategy": {"hold_bars": 200}, "api": {"enabled": True, "port": 0}}
    run_to_the_end(tmp_path, "--speed", "0", "--max-bars", "60", extra=extra)
    held = journal_positions(tmp_path)
    assert held
    symbol = sorted(held)[0]
    # The broker busts the trades of one symbol: its position there is now flat.
    con = sqlite3.connect(venue_path(tmp_path))
    with con:
        con.execute("DELETE FROM venue_fills WHERE json_extract(data, '$.symbol') = ?", (symbol,))
    con.close()

    restart = tmp_path / "restart"
    restart.mkdir()
    config = e2e_config(tmp_path, extra=extra)  # the same state_dir, normal speed
    daemon = start_daemon(config, restart)
    try:
        wait_ready(daemon)
        until(
            lambda: any(e["reason"] == "halted" for e in log_events(daemon, "risk.rejected")),
            daemon=daemon,
            what="an entry refused as halted",
        )
        status = status_of(daemon)
    finally:
        daemon.terminate(timeout=30)

    mismatch = log_events(daemon, "broker.position_mismatch")
    assert [e["symbol"] for e in mismatch] == [symbol]
    (reconciled,) = log_events(daemon, "broker.reconciled")
    assert reconciled["position_mismatches"] == [symbol]
    assert status["trading_state"] == "halted"
    entries = [
        e
        for e in log_events(daemon, "order.submitted")
        if e["reason"].startswith("enter_") or e["reason"] == "reverse"
    ]
    assert entries == []


def test_start_when_broker_holds_an_order_the_journal_never_saw_then_it_is_adopted(
    tmp_path: Path,
) -> None:
    extra = {"api": {"enabled": True, "port": 0}}
    run_to_the_end(tmp_path, "--speed", "0", "--max-bars", "40", extra=extra)
    # Another client of the same account places a resting order while the daemon is down.
    with PaperExecution(config=SimBrokerConfig(), path=venue_path(tmp_path)) as venue:
        clock = max(t.bar.ts for t in venue.broker.state().tapes.values())
        outside = Order(
            client_order_id="MANUAL-1",
            symbol="SIM1",
            side=Side.BUY,
            quantity=5,
            order_type=OrderType.LIMIT,
            limit_price=1.0,  # far below the market: it stays open
            created_ts=clock - timedelta(seconds=1),
        )
        asyncio.run(venue.submit([outside]))

    restart = tmp_path / "restart"
    restart.mkdir()
    daemon = start_daemon(e2e_config(tmp_path, extra=extra), restart)
    try:
        wait_ready(daemon)
        status = status_of(daemon)
    finally:
        daemon.terminate(timeout=30)

    (reconciled,) = log_events(daemon, "broker.reconciled")
    assert reconciled["external_orders"] == 1
    assert reconciled["position_mismatches"] == []
    adopted = [o for o in status["open_orders"] if o["client_order_id"] == "MANUAL-1"]
    assert adopted == [
        {
            "client_order_id": "MANUAL-1",
            "symbol": "SIM1",
            "side": "buy",
            "quantity": 5,
            "filled_quantity": 0,
            "status": adopted[0]["status"],
        }
    ]
    assert status["trading_state"] == "active"
    with read_db(journal_path(tmp_path)) as con:
        order = con.execute(
            "SELECT symbol, quantity, limit_price FROM orders WHERE client_order_id = 'MANUAL-1'"
        ).fetchone()
        reasons = [
            r[0]
            for r in con.execute(
                "SELECT json_extract(data, '$.reason') FROM order_events "
                "WHERE client_order_id = 'MANUAL-1'"
            )
        ]
    assert tuple(order) == ("SIM1", 5, 1.0)
    assert "external" in reasons
