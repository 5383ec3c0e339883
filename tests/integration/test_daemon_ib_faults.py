"""`vlmtrader run` (ib-paper) through the fake gateway's faults: no order on an old bar, cancels
confirmed before exit, a position mismatch found at reconnect halts."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.ibgateway.helpers import GatewayThread
from tests.integration.e2e_helpers import journal_path, log_events, running_daemon
from tests.integration.ib_daemon import (
    IbMarket,
    assert_journal_matches_gateway,
    gateway_snapshot,
    ib_config,
    journal_kv,
    journal_rows,
    orders_on_old_bars,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]
AAPL_CON_ID = 265598


def test_run_when_drop_restart_and_1101_then_no_order_on_a_bar_older_than_one_interval(
    tmp_path: Path,
) -> None:
    runner = GatewayThread()
    with runner as gw, running_daemon(ib_config(tmp_path, gw.port), tmp_path) as daemon:
        market = IbMarket(runner, gw, daemon, tmp_path)
        market.step_until(lambda: market.orders() >= 2, what="first orders")
        orders_after = {}
        for fault in (market.drop, market.restart, market.lose_link):
            before = market.orders()
            fault()  # five bars close while the daemon cannot see them live
            market.settle()
            market.step_until(lambda b=before: market.orders() > b, what=f"orders after {fault}")
            orders_after[fault.__name__] = market.orders() - before
        gateway = gateway_snapshot(market)
    assert daemon.proc.returncode == 0, daemon.log_text()[-3000:]
    names = [e["event"] for e in log_events(daemon)]
    assert "daemon.crashed" not in names
    assert {"feed.disconnected", "feed.link_lost", "feed.link_restored"} <= set(names)
    # The missed bars came back as backfill: they warmed the windows and were never traded.
    tradable = log_events(daemon, "warm_up.finished")
    assert len(tradable) >= 3
    assert all(sum(e["warm_up_bars"].values()) >= 1 for e in tradable)
    assert int(journal_kv(tmp_path, "warm_up_bars_total") or 0) >= 3 * 5
    assert all(n >= 1 for n in orders_after.values()), orders_after
    assert orders_on_old_bars(tmp_path, gateway) == []
    assert_journal_matches_gateway(tmp_path, gateway)


def test_shutdown_when_cancel_confirmation_delayed_then_order_journaled_cancelled(
    tmp_path: Path,
) -> None:
    runner = GatewayThread()
    with runner as gw:
        with running_daemon(ib_config(tmp_path, gw.port), tmp_path) as daemon:
            market = IbMarket(runner, gw, daemon, tmp_path)
            gw.scenario.fill = "hold"  # orders rest at the gateway, acknowledged
            gw.scenario.cancel_delay = 1.0  # and a cancel is confirmed a second later
            market.step_until(
                lambda: bool(
                    journal_rows(tmp_path, "SELECT 1 FROM orders WHERE status = 'accepted'")
                ),
                what="an acknowledged resting order",
            )
            resting = market.do(
                lambda: [o.order_ref for o in gw.orders.values() if o.status == "Submitted"]
            )
        gateway = gateway_snapshot(market)
    assert daemon.proc.returncode == 0, daemon.log_text()[-3000:]
    (stopped,) = log_events(daemon, "daemon.stopped")
    assert stopped["cancelled_orders"] >= len(resting) >= 1
    assert stopped["cancels_unconfirmed"] == []
    status = {
        r["client_order_id"]: r["status"] for r in journal_rows(tmp_path, "SELECT * FROM orders")
    }
    assert {status[ref] for ref in resting} == {"cancelled"}
    assert {o.status for o in gateway["orders"] if o.order_ref in resting} == {"Cancelled"}
    assert_journal_matches_gateway(tmp_path, gateway)


def test_reconnect_when_broker_position_differs_from_journal_then_trading_halts(
    tmp_path: Path,
) -> None:
    runner = GatewayThread()
    with runner as gw, running_daemon(ib_config(tmp_path, gw.port), tmp_path) as daemon:
        market = IbMarket(runner, gw, daemon, tmp_path)
        market.step(2)
        runner.call(gw.stop())
        # While we are away someone else buys 100 AAPL in the account.
        market.do(lambda: gw.positions.__setitem__(AAPL_CON_ID, (100.0, 185.0)))
        runner.call(gw.start())
        market.settle()
        market.step_until(
            lambda: journal_kv(tmp_path, "trading_state") == "halted",
            what="halt after reconnect",
            limit=5,
        )
    assert daemon.proc.returncode == 0, daemon.log_text()[-3000:]
    mismatch = [e for e in log_events(daemon, "broker.position_mismatch") if e["symbol"] == "AAPL"]
    assert mismatch
    assert mismatch[-1]["broker"] == 100.0
    changed = log_events(daemon, "trading_state.changed")
    assert [e["reason"] for e in changed] == ["position_mismatch_at_reconnect"]
    assert journal_kv(tmp_path, "trading_state_reason") == "position_mismatch_at_reconnect"
    assert journal_path(tmp_path).exists()
