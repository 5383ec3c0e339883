"""`vlmtrader run` in ib-paper mode against the fake IB Gateway: backfill, trading, a Gateway restart."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.ibgateway import FakeGateway
from tests.ibgateway.helpers import GatewayThread
from tests.ibgateway.protocol import In
from tests.integration.daemon_process import DaemonProcess, count
from tests.integration.e2e_helpers import journal_path, log_events, running_daemon, until
from tests.integration.ib_daemon import ORDER_CLIENT, SYMBOLS, WINDOW, ib_config, journal_rows

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def advance_until(
    runner: GatewayThread,
    gw: FakeGateway,
    daemon: DaemonProcess,
    condition: Callable[[], bool],
    *,
    what: str,
    limit: int = 400,
) -> None:
    """Move the fake market one minute at a time (the daemon's bar size) until condition holds."""
    for _ in range(limit):
        if condition():
            return
        if daemon.proc.poll() is not None:
            msg = f"daemon exited while waiting for {what}:\n{daemon.log_text()[-3000:]}"
            raise AssertionError(msg)
        runner.call(gw.advance(60))
        time.sleep(0.03)
    msg = f"{what} not reached after {limit} bars:\n{daemon.log_text()[-3000:]}"
    raise AssertionError(msg)


def api_url(daemon: DaemonProcess) -> str:
    (started,) = log_events(daemon, "api.started")
    return f"http://127.0.0.1:{started['port']}"


def readyz(http: httpx.Client) -> httpx.Response:
    return http.get("/readyz")


def test_run_when_ib_paper_and_gateway_restarts_then_backfills_trades_reconnects_without_duplicates(
    tmp_path: Path,
) -> None:
    runner = GatewayThread()
    journal = journal_path(tmp_path)
    with runner as gw:
        start = gw.now
        with running_daemon(ib_config(tmp_path, gw.port), tmp_path) as daemon:
            advance_until(
                runner,
                gw,
                daemon,
                lambda: count(journal, "SELECT count(*) FROM fills") >= 3,
                what="three fills",
            )
            orders_before = count(journal, "SELECT count(*) FROM orders")
            runner.call(gw.restart(0.3))  # the nightly Gateway restart: both clients cut off
            restarted_at = gw.now
            advance_until(
                runner,
                gw,
                daemon,
                lambda: (
                    len(log_events(daemon, "broker.reconciled")) >= 2
                    and count(journal, "SELECT count(*) FROM orders") >= orders_before + 3
                ),
                what="reconnect, reconciliation and three more orders",
            )
            # Let the last orders' fills come back before stopping.
            advance_until(
                runner,
                gw,
                daemon,
                lambda: (
                    count(journal, "SELECT count(*) FROM fills")
                    >= count(journal, "SELECT count(*) FROM orders WHERE status = 'filled'")
                ),
                what="fills of filled orders",
            )
            for _ in range(3):
                runner.call(gw.advance(60))
                time.sleep(0.05)
        code = daemon.proc.returncode
        gateway_orders = list(gw.orders.values())
        executions = {e.exec_id: e for e in gw.executions}
        history_requests = sum(1 for _, m in gw.requests if m == In.REQ_HISTORICAL_DATA)

    events = log_events(daemon)
    names = [e["event"] for e in events]
    (ready,) = log_events(daemon, "daemon.ready")
    connected = log_events(daemon, "feed.connected")
    reconciled = log_events(daemon, "broker.reconciled")
    orders = journal_rows(tmp_path, "SELECT * FROM orders ORDER BY seq")
    journal_fills = journal_rows(tmp_path, "SELECT * FROM fills")

    assert code == 0, daemon.log_text()[-3000:]
    assert "daemon.crashed" not in names
    # Backfill: warmed up on the Gateway's history up to its clock, so trading starts within a
    # window's worth of live bars instead of after it.
    assert datetime.fromisoformat(ready["resume_after"]) == start
    assert history_requests >= 2 * len(SYMBOLS)
    first_order_ts = datetime.fromisoformat(orders[0]["created_ts"])
    assert start < first_order_ts < start + timedelta(minutes=WINDOW)
    # Every order reached the fake exactly once, carrying our client order id.
    refs = Counter(o.order_ref for o in gateway_orders)
    assert refs, "no orders reached the gateway"
    assert max(refs.values()) == 1, refs
    assert set(refs) == {o["client_order_id"] for o in orders}
    assert all(o.client_id == ORDER_CLIENT for o in gateway_orders)
    # Fills came back into the journal, matching the gateway's executions.
    assert len(journal_fills) >= 6
    for fill in journal_fills:
        execution = executions[fill["fill_id"]]
        assert fill["client_order_id"] == execution.order.order_ref
        assert fill["price"] == pytest.approx(execution.price)
        assert fill["quantity"] == pytest.approx(execution.shares)
        assert fill["commission"] == pytest.approx(execution.commission)
    # The restart: both sessions reconnected, streams resubscribed, the broker reconciled.
    assert {c["session"] for c in connected if c["generation"] >= 2} == {"data", "orders"}
    assert len(reconciled) >= 2
    assert all(r["position_mismatches"] == [] for r in reconciled)
    after = [o for o in orders if datetime.fromisoformat(o["created_ts"]) > restarted_at]
    assert len(after) >= 3
    assert any(f["client_order_id"] in {o["client_order_id"] for o in after} for f in journal_fills)
    last_reconciled = max(i for i, n in enumerate(names) if n == "broker.reconciled")
    assert names.index("feed.disconnected") < last_reconciled


async def _held_orders(gw: FakeGateway) -> list[str]:
    return [o.order_ref for o in gw.orders.values() if o.status == "Submitted" and not o.filled]


async def _fill_all(gw: FakeGateway) -> int:
    held = [o for o in gw.orders.values() if not o.done]
    for order in held:
        gw.fill(order)
    return len(held)


async def _execution_ids(gw: FakeGateway) -> set[str]:
    return {e.exec_id for e in gw.executions}


def journal_fills_of(tmp_path: Path) -> list[dict[str, Any]]:
    return journal_rows(tmp_path, "SELECT * FROM fills")


def test_run_when_orders_fill_while_gateway_down_then_reconciliation_journals_fills_once(
    tmp_path: Path,
) -> None:
    runner = GatewayThread()
    journal = journal_path(tmp_path)
    with runner as gw:
        with (
            running_daemon(ib_config(tmp_path, gw.port, api=True), tmp_path) as daemon,
            httpx.Client(base_url=api_url(daemon), timeout=10) as http,
        ):
            advance_until(
                runner,
                gw,
                daemon,
                lambda: count(journal, "SELECT count(*) FROM fills") >= 1,
                what="a fill",
            )
            gw.scenario.fill = "hold"  # the next orders rest at the gateway, acknowledged
            advance_until(
                runner,
                gw,
                daemon,
                lambda: (
                    bool(runner.call(_held_orders(gw)))
                    and count(journal, "SELECT count(*) FROM orders WHERE status = 'accepted'") >= 1
                ),
                what="an acknowledged resting order",
            )
            held = runner.call(_held_orders(gw))
            runner.call(gw.stop())
            filled_while_down = runner.call(_fill_all(gw))  # executions nobody hears about
            until(lambda: readyz(http).status_code == 503, daemon=daemon, what="readyz 503")
            down = readyz(http).json()
            gw.scenario.fill = "immediate"
            runner.call(gw.start())
            until(lambda: readyz(http).status_code == 200, daemon=daemon, what="readyz 200")
            advance_until(
                runner,
                gw,
                daemon,
                lambda: set(held) <= {f["client_order_id"] for f in journal_fills_of(tmp_path)},
                what="the fills made while the gateway was down",
            )
            settled = runner.call(_execution_ids(gw))
            advance_until(
                runner,
                gw,
                daemon,
                lambda: settled <= {f["fill_id"] for f in journal_fills_of(tmp_path)},
                what="every execution so far journaled",
            )
        gateway_orders = list(gw.orders.values())
        executions = {e.exec_id: e for e in gw.executions}

    names = [e["event"] for e in log_events(daemon)]
    reconciled = log_events(daemon, "broker.reconciled")
    orders = {r["client_order_id"]: r for r in journal_rows(tmp_path, "SELECT * FROM orders")}
    journal_fills = journal_rows(tmp_path, "SELECT * FROM fills")
    positions = {
        r["symbol"]: r["quantity"]
        for r in journal_rows(tmp_path, "SELECT * FROM positions")
        if r["quantity"]
    }

    assert daemon.proc.returncode == 0, daemon.log_text()[-3000:]
    assert "daemon.crashed" not in names
    assert filled_while_down >= 1
    assert down["ready"] is False
    assert down["checks"]["feed_connected"] is False
    assert down["checks"]["journal_writable"] is True
    assert len(reconciled) >= 2
    assert all(r["position_mismatches"] == [] for r in reconciled)
    refs = Counter(o.order_ref for o in gateway_orders)
    assert max(refs.values()) == 1, refs
    for ref in held:
        assert orders[ref]["status"] == "filled"
    assert settled <= {f["fill_id"] for f in journal_fills} <= set(executions)
    for fill in journal_fills:
        assert fill["client_order_id"] == executions[fill["fill_id"]].order.order_ref
    # Positions in the journal are its fills summed, recovered ones included.
    expected: dict[str, float] = {}
    for fill in journal_fills:
        sign = 1.0 if fill["side"] == "buy" else -1.0
        expected[fill["symbol"]] = expected.get(fill["symbol"], 0.0) + sign * fill["quantity"]
    assert positions == pytest.approx({s: q for s, q in expected.items() if q})
