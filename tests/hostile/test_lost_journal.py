"""A lost journal (emptied to 0 bytes, or deleted) under a daemon that has traded: the restart adopts
the broker's state before its first order, sends nothing again, and its positions match the broker.
Against the paper venue (paper-sim, whose venue file survives like a remote broker) and against
the fake IB Gateway (also the next day, when IB no longer reports the old executions)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from daemon.journal import Journal
from tests.ibgateway.helpers import GatewayThread
from tests.integration.daemon_process import DaemonProcess
from tests.integration.e2e_helpers import (
    journal_path,
    log_events,
    running_daemon,
    start_daemon,
    stop_daemon,
    wait_ready,
)
from tests.integration.ib_daemon import (
    IbMarket,
    _in_loop,
    gateway_snapshot,
    ib_config,
    journal_rows,
    orders_on_old_bars,
)
from tests.integration.test_daemon_crash import (
    assert_consistent,
    crash_config,
    run_until_fills_then_stop,
    submitted_ids,
    venue_view,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]
AAPL_CON_ID = 265598  # the fake gateway's AAPL


def lose_journal(path: Path, how: str) -> None:
    """What an operator or a broken disk leaves: an empty file, or no file at all."""
    for suffix in ("-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    if how == "deleted":
        path.unlink()
    else:
        path.write_bytes(b"")


def events(log: Path, name: str) -> list[dict[str, Any]]:
    """The JSON log lines of one event (each names its event in the line)."""
    lines = log.read_text(errors="replace").splitlines()
    return [
        e for e in map(json.loads, (x for x in lines if f'"{name}"' in x)) if e["event"] == name
    ]


@pytest.mark.parametrize("how", ["emptied", "deleted"])
def test_restart_when_paper_journal_lost_then_broker_state_adopted_and_nothing_sent_again(
    tmp_path: Path, how: str
) -> None:
    state, journal, config = crash_config(tmp_path, "normal")
    first, second = tmp_path / "first.log", tmp_path / "second.log"
    assert run_until_fills_then_stop(config, first, journal, new_fills=4) == 0
    before = venue_view(state)
    assert before.orders, "the first run sent no order"
    last_traded_bar = max(o.created_ts for o in before.orders.values())

    lose_journal(journal, how)
    # Adoption journals the venue's fills before daemon.ready; then 4 more come from trading.
    assert run_until_fills_then_stop(config, second, journal, new_fills=4) == 0

    (adoption,) = events(second, "journal.adopted")
    assert adoption["orders"] == len(before.orders)
    assert events(second, "trading.refused") == []
    after = venue_view(state)
    new = {c: o for c, o in after.orders.items() if c not in before.orders}
    assert new, "the second run never traded"
    # Nothing again: no order on a bar the venue had already traded, no old id reused, no copy.
    assert all(o.created_ts > last_traded_bar for o in new.values()), sorted(
        (o.created_ts, c) for c, o in new.items() if o.created_ts <= last_traded_bar
    )
    old_intents = {(o.symbol, o.side, o.quantity, o.created_ts) for o in before.orders.values()}
    assert not old_intents & {(o.symbol, o.side, o.quantity, o.created_ts) for o in new.values()}
    assert not set(submitted_ids(second)) & set(before.orders)
    with Journal(journal, checkpoint_seconds=None) as restored:
        orders = restored.load_orders()
    assert {orders[c].reason.split(":")[0] for c in before.orders} == {"adopted"}
    # The journal now explains the venue exactly: every order, every fill, every position.
    assert_consistent(state, [first, second])


@pytest.fixture
def gateway() -> Iterator[tuple[GatewayThread, Any]]:
    runner = GatewayThread()
    with runner as gw:
        yield runner, gw


def stop_and_keep_log(daemon: DaemonProcess, tmp_path: Path) -> None:
    """SIGTERM the first daemon and keep its log as first.log (the next one writes daemon.log)."""
    stop_daemon(daemon)
    assert daemon.proc.returncode == 0, daemon.log_text()[-3000:]
    (tmp_path / "daemon.log").rename(tmp_path / "first.log")


def _trade_on_gateway(
    config: Path,
    tmp_path: Path,
    gateway: tuple[GatewayThread, Any],
    *,
    fills: int,
    holding: bool = False,
) -> IbMarket:
    """A running daemon stepped until `fills` fills (and, if holding, a position); the caller
    stops it (stop_and_keep_log)."""
    runner, gw = gateway
    daemon = start_daemon(config, tmp_path)
    try:
        wait_ready(daemon)
        market = IbMarket(runner, gw, daemon, tmp_path)
        market.step_until(
            lambda: len(journal_rows(tmp_path, "SELECT 1 FROM fills")) >= fills, what="fills"
        )
        if holding:  # and stopped while the account holds something
            market.step_until(
                lambda: any(gateway_snapshot(market)["positions"].values()), what="a position"
            )
    except BaseException:
        stop_daemon(daemon)
        raise
    return market


@pytest.mark.parametrize(("how", "next_day"), [("emptied", False), ("deleted", True)])
def test_restart_when_ib_journal_lost_then_positions_adopted_and_nothing_sent_again(
    tmp_path: Path, gateway: tuple[GatewayThread, Any], how: str, next_day: bool
) -> None:
    runner, gw = gateway
    config = ib_config(tmp_path, gw.port)
    market = _trade_on_gateway(config, tmp_path, gateway, fills=4, holding=True)
    stop_and_keep_log(market.daemon, tmp_path)
    before = gateway_snapshot(market)
    old_refs = {o.order_ref for o in before["orders"]}
    stopped_at: datetime = market.now()
    if next_day:  # IB reports the executions of the current day only
        market.do(gw.executions.clear)
    lose_journal(journal_path(tmp_path), how)

    with running_daemon(config, tmp_path) as daemon:
        market = IbMarket(runner, gw, daemon, tmp_path)
        (adoption,) = log_events(daemon, "journal.adopted")
        market.step(6)
    after = gateway_snapshot(market)

    assert log_events(daemon, "trading.refused") == []
    if next_day:
        assert set(adoption["positions_adopted"]) == set(before["positions"])
    new = [o for o in after["orders"] if o.order_ref not in old_refs]
    assert len(after["orders"]) == len(before["orders"]) + len(new)  # no old id sent again
    assert all(o.placed_at > stopped_at for o in new)
    assert orders_on_old_bars(tmp_path, {"orders": new}) == []
    journaled = {
        r["symbol"]: r["quantity"]
        for r in journal_rows(tmp_path, "SELECT symbol, quantity FROM positions")
        if r["quantity"]
    }
    assert journaled == pytest.approx(after["positions"])
    reasons = {r["reason"].split(":")[0] for r in journal_rows(tmp_path, "SELECT * FROM orders")}
    assert "adopted" in reasons or "adopted_position" in reasons


def test_restart_when_broker_position_differs_from_journal_then_halted_with_one_recovery_line(
    tmp_path: Path, gateway: tuple[GatewayThread, Any]
) -> None:
    # The journal has a history, so nothing is adopted: a position it cannot explain halts.
    runner, gw = gateway
    config = ib_config(tmp_path, gw.port)
    market = _trade_on_gateway(config, tmp_path, gateway, fills=1)
    stop_and_keep_log(market.daemon, tmp_path)
    old_refs = {o.order_ref for o in gateway_snapshot(market)["orders"]}
    market.do(lambda: gw.positions.__setitem__(AAPL_CON_ID, (100.0, 185.0)))  # someone else

    with running_daemon(config, tmp_path) as daemon:
        market = IbMarket(runner, gw, daemon, tmp_path)
        (refused,) = log_events(daemon, "trading.refused")
        market.step(4)
    assert refused["reason"] == "position_mismatch_at_start"
    assert "backup" in refused["recover"]
    assert log_events(daemon, "journal.adopted") == []
    assert [e["symbol"] for e in log_events(daemon, "broker.position_mismatch")] == ["AAPL"]
    # Halted: what reached the gateway since can only reduce the journal's own positions.
    new = {o.order_ref for o in gateway_snapshot(market)["orders"]} - old_refs
    reasons = {
        r["client_order_id"]: r["reason"]
        for r in journal_rows(tmp_path, "SELECT client_order_id, reason FROM orders")
    }
    assert all(reasons[ref].startswith(("exit", "flatten")) for ref in new), new


def test_start_when_journal_new_and_broker_position_has_no_price_then_refuses_to_trade(
    tmp_path: Path, gateway: tuple[GatewayThread, Any]
) -> None:
    runner, gw = gateway
    runner.call(_in_loop(lambda: gw.positions.__setitem__(AAPL_CON_ID, (100.0, 0.0))))
    with running_daemon(ib_config(tmp_path, gw.port), tmp_path) as daemon:
        market = IbMarket(runner, gw, daemon, tmp_path)
        (refused,) = log_events(daemon, "trading.refused")
        market.step(4)
        orders = market.do(lambda: list(gw.orders.values()))
    assert refused["reason"] == "adoption_refused"
    assert "AAPL" in refused["detail"]
    assert "backup" in refused["recover"]
    assert orders == []  # halted from an empty book: nothing went out
    assert journal_rows(tmp_path, "SELECT * FROM fills") == []  # nothing adopted half-way
