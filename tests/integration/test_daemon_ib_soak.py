"""A long `vlmtrader run` (ib-paper) against the fake gateway through every fault it can stage,
round after round, then the journal compared with the gateway: every order once, fills and
positions equal, and no order on a bar older than one bar interval.

Wall time: VLMTRADER_IB_SOAK_SECONDS (default 600). The market moves one bar at a time and waits
for the daemon to catch up, so the figure is the length of the run, not of any assertion.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.ibgateway.helpers import GatewayThread
from tests.integration.e2e_helpers import log_events, running_daemon
from tests.integration.ib_daemon import (
    DATA_CLIENT,
    IbMarket,
    assert_journal_matches_gateway,
    gateway_snapshot,
    ib_config,
    journal_kv,
    orders_on_old_bars,
)

SOAK_SECONDS = float(os.environ.get("VLMTRADER_IB_SOAK_SECONDS", "600"))
RESTART_SECONDS = 15.0
FALLBACK_CLIENT = 23
DATA_FAULTS = (
    "drop",
    "restart",
    "1100_1101",
    "1100_1102",
    "pacing_162",
    "slow_history",
    "client_id_326",
    "frozen_stream",
)
pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.timeout(int(SOAK_SECONDS) + 600),
]


def _faults(market: IbMarket, recovered: list[float]) -> list[tuple[str, Callable[[], None]]]:
    """Each fault leaves the market where the daemon must catch up by itself."""
    gw, scenario = market.gw, market.gw.scenario

    def restart() -> None:
        began = time.monotonic()
        market.runner.call(gw.stop())
        market.advance(5)
        time.sleep(RESTART_SECONDS)  # the Gateway's restart takes this long: the fault itself
        market.runner.call(gw.start())
        market.settle(timeout=RESTART_SECONDS + 30)
        recovered.append(time.monotonic() - began)  # outage plus the daemon's way back

    def client_id_in_use() -> None:
        scenario.client_ids_in_use = {DATA_CLIENT}
        market.drop(3)
        market.settle()
        scenario.client_ids_in_use = set()

    def pacing() -> None:
        scenario.pacing_violations = 4
        market.lose_link(5)

    def slow_history() -> None:
        scenario.history_delay = 0.5
        market.lose_link(5)
        market.settle()
        scenario.history_delay = 0.0

    def frozen() -> None:
        stale = len(log_events(market.daemon, "feed.stale"))
        assert market.do(lambda: gw.freeze("MSFT")) >= 1
        # The market moves on without MSFT until the watchdog finds it silent and resubscribes.
        market.step_until(
            lambda: len(log_events(market.daemon, "feed.stale")) > stale,
            what="a stale MSFT stream found",
        )

    def orders_in(mode: str, bars: int = 8) -> Callable[[], None]:
        def run() -> None:
            scenario.fill = mode  # type: ignore[assignment]
            market.step(bars)
            scenario.fill = "immediate"
            if mode == "hold":  # the resting orders fill later, while we trade on
                market.do(lambda: [gw.fill(o) for o in gw.orders.values() if not o.done])

        return run

    def delayed(field: str, value: float, bars: int = 6) -> Callable[[], None]:
        def run() -> None:
            setattr(scenario, field, value)
            market.step(bars)
            setattr(scenario, field, 0.0)

        return run

    return [
        ("drop", lambda: market.drop(5)),
        ("restart", restart),
        ("1100_1101", lambda: market.lose_link(5, data_lost=True)),
        ("1100_1102", lambda: market.lose_link(5, data_lost=False)),
        ("pacing_162", pacing),
        ("slow_history", slow_history),
        ("client_id_326", client_id_in_use),
        ("frozen_stream", frozen),
        ("rejects", orders_in("reject")),
        ("partial_fills", orders_in("partial")),
        ("held_orders", orders_in("hold")),
        ("ack_delay", delayed("ack_delay", 0.3)),
        ("cancel_delay", delayed("cancel_delay", 0.5)),
        ("commission_delay", delayed("commission_delay", 0.2)),
    ]


def test_run_when_every_fault_repeats_for_minutes_then_journal_matches_gateway_and_no_old_bar_traded(
    tmp_path: Path,
) -> None:
    runner = GatewayThread()
    extra = {
        "ib": {
            "fallback_client_ids": [FALLBACK_CLIENT],
            # The shipped reconnect settings (config/ib-paper.yaml), a quick stale check.
            "backoff": {},
            "stale_factor": 0.05,
            # Faults every few seconds resubscribe far more often than IB's 60 historical
            # requests per 10 minutes allow (the daemon would wait, rightly): the fake has no
            # such budget, so neither does this run.
            "pacing": {
                "identical_seconds": 0.2,
                "violation_pause_seconds": 0.2,
                "window_requests": 100000,
            },
        },
        "shutdown": {"timeout_seconds": 10},
    }
    recovered: list[float] = []
    done: Counter[str] = Counter()
    started = time.monotonic()
    with (
        runner as gw,
        running_daemon(ib_config(tmp_path, gw.port, extra=extra), tmp_path) as daemon,
    ):
        market = IbMarket(runner, gw, daemon, tmp_path)
        market.step(3)
        faults = _faults(market, recovered)
        while time.monotonic() - started < SOAK_SECONDS or len(done) < len(faults):
            for name, fault in faults:
                fault()
                market.settle(timeout=60)
                market.step(4)
                done[name] += 1
        market.step(3)
        gateway = gateway_snapshot(market)
        bars = market.now()
    wall = time.monotonic() - started
    assert daemon.proc.returncode == 0, daemon.log_text()[-3000:]
    names = Counter(e["event"] for e in log_events(daemon))
    orders = len(gateway["orders"])
    print(  # the figures for the report (pytest -s)
        f"\nsoak: {wall:.0f}s wall, {bars.isoformat()} market clock, rounds={dict(done)}, "
        f"orders={orders}, warm_up_bars={journal_kv(tmp_path, 'warm_up_bars_total')}, "
        f"restart_recovered_s={[round(r, 1) for r in recovered]}"
    )
    assert "daemon.crashed" not in names
    assert names["feed.disconnected"] >= 2 * done["restart"]
    assert names["feed.stale"] >= 1
    assert names["ib.client_id_in_use"] >= 1
    # Every fault that hid bars ended with the missed bars warming up, then trading again.
    assert names["warm_up.finished"] >= sum(done[f] for f in DATA_FAULTS)
    assert orders >= 3 * len(faults)
    assert {o.status for o in gateway["orders"]} >= {"Filled", "Inactive"}
    assert max(recovered) <= RESTART_SECONDS + 5  # the daemon is back within N + 5 s of the port
    assert orders_on_old_bars(tmp_path, gateway) == []
    assert_journal_matches_gateway(tmp_path, gateway)
