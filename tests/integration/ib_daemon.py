"""`vlmtrader run` in ib-paper mode against the fake gateway: config, a market stepped bar by bar
(waiting for the daemon to catch up), the faults, and the journal-versus-gateway comparison."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.ibgateway import FakeGateway
from tests.ibgateway.helpers import GatewayThread
from tests.integration.daemon_process import DaemonProcess, count, read_db
from tests.integration.e2e_helpers import journal_path, until

SYMBOLS = ("AAPL", "MSFT", "SPY")
WINDOW = 32
DATA_CLIENT, ORDER_CLIENT = 21, 22
BAR = timedelta(minutes=1)


def ib_config(
    tmp_path: Path, port: int, *, api: bool = False, extra: dict[str, Any] | None = None
) -> Path:
    """ib-paper against the fake: separate data and order clients (as config/ib-paper.yaml), fast
    retries; `extra` is merged into the top level (one level deep)."""
    cfg: dict[str, Any] = {
        "mode": "ib-paper",
        "account": "test",
        "state_dir": str(tmp_path / "state"),
        "log": {"level": "info", "format": "json"},
        "feed": {"kind": "ib"},
        "ib": {
            "port": port,
            "client_id": DATA_CLIENT,
            "order_client_id": ORDER_CLIENT,
            "bar_size": "1 min",
            "connect_timeout_seconds": 2.0,
            "request_timeout_seconds": 5.0,
            "batch_grace_seconds": 0.5,
            "pacing": {"identical_seconds": 0.2, "violation_pause_seconds": 0.2},
            "backoff": {
                "initial_seconds": 0.05,
                "max_seconds": 0.2,
                "jitter": 0.1,
                "refused_retry_seconds": 0.2,
            },
            "contracts": [{"symbol": s, "sec_type": "STK"} for s in SYMBOLS],
        },
        "bars": {"window": WINDOW, "bar_seconds": 60},
        "strategy": {
            "hold_bars": 2,
            "position_notional": 5000,
            "enter_threshold": 0.55,
            "min_confidence": 0.05,
        },
        "scorer": {"rules": {"min_strength": 0.0}},
        "journal": {"synchronous": "normal"},
        "api": {"enabled": api, "port": 0},
    }
    for key, value in (extra or {}).items():
        if isinstance(value, dict) and isinstance(cfg.get(key), dict):
            cfg[key] = {**cfg[key], **value}
        else:
            cfg[key] = value
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def journal_rows(tmp_path: Path, sql: str) -> list[dict[str, Any]]:
    with read_db(journal_path(tmp_path)) as con:
        return [dict(r) for r in con.execute(sql).fetchall()]


def journal_kv(tmp_path: Path, key: str) -> str | None:
    if not journal_path(tmp_path).exists():
        return None
    rows = journal_rows(tmp_path, f"SELECT value FROM kv WHERE key = '{key}'")
    return str(rows[0]["value"]) if rows else None


async def _in_loop(fn: Callable[[], Any]) -> Any:
    return fn()


class IbMarket:
    """The fake's market clock, moved from the test thread one bar at a time."""

    def __init__(
        self, runner: GatewayThread, gw: FakeGateway, daemon: DaemonProcess, tmp_path: Path
    ) -> None:
        self.runner, self.gw, self.daemon, self.tmp_path = runner, gw, daemon, tmp_path
        self.journal = journal_path(tmp_path)

    def do(self, fn: Callable[[], Any]) -> Any:
        """Run fn on the gateway's loop (its state is only touched there)."""
        return self.runner.call(_in_loop(fn))

    def now(self) -> datetime:
        return self.do(lambda: self.gw.now)  # type: ignore[no-any-return]

    def advance(self, bars: int = 1) -> None:
        for _ in range(bars):
            self.runner.call(self.gw.advance(60))

    def streaming(self) -> set[str]:
        """Symbols with a live subscription at the gateway."""
        return self.do(  # type: ignore[no-any-return]
            lambda: {
                sub.contract.symbol
                for session in self.gw.live_sessions
                for sub in session.history.values()
            }
        )

    def caught_up(self) -> bool:
        """The daemon streams every symbol, journaled the gateway's latest bar, and every order it
        journaled is at the gateway."""
        if not set(SYMBOLS) <= self.streaming():
            return False
        last = journal_kv(self.tmp_path, "last_bar_ts")
        if last is None or datetime.fromisoformat(last) < self.now():
            return False
        at_gateway = self.do(lambda: {o.order_ref for o in self.gw.orders.values()})
        journaled = journal_rows(  # an adopted position's rest stands for no gateway order
            self.tmp_path,
            "SELECT client_order_id FROM orders "
            "WHERE status != 'rejected' AND reason != 'adopted_position'",
        )
        return {r["client_order_id"] for r in journaled} <= at_gateway

    def settle(self, timeout: float = 30) -> None:
        until(self.caught_up, daemon=self.daemon, timeout=timeout, what="daemon caught up")

    def step(self, bars: int = 1) -> None:
        """Advance one bar at a time, each time waiting until the daemon has dealt with it."""
        for _ in range(bars):
            if self.daemon.proc.poll() is not None:
                msg = f"daemon exited:\n{self.daemon.log_text()[-3000:]}"
                raise AssertionError(msg)
            self.advance()
            self.settle()

    def orders(self) -> int:
        return count(self.journal, "SELECT count(*) FROM orders")

    def step_until(self, condition: Callable[[], bool], *, what: str, limit: int = 200) -> None:
        for _ in range(limit):
            if condition():
                return
            self.step()
        msg = f"{what} not reached after {limit} bars:\n{self.daemon.log_text()[-3000:]}"
        raise AssertionError(msg)

    # ---- faults: each leaves `outage` bars closing while the daemon cannot see them live --------
    def drop(self, outage: int = 5) -> None:
        self.do(self.gw.drop_connections)
        self.advance(outage)

    def restart(self, outage: int = 5, seconds: float = 0.5) -> None:
        self.runner.call(self.gw.restart(seconds))
        self.advance(outage)

    def lose_link(self, outage: int = 5, *, data_lost: bool = True) -> None:
        self.do(self.gw.lose_connectivity)
        self.advance(outage)
        self.do(lambda: self.gw.restore_connectivity(data_lost=data_lost))


def gateway_snapshot(market: IbMarket) -> dict[str, Any]:
    gw = market.gw
    return market.do(
        lambda: {
            "orders": list(gw.orders.values()),
            "executions": list(gw.executions),
            "positions": {
                next(c.symbol for c in gw.contracts if c.con_id == con_id): qty
                for con_id, (qty, _) in gw.positions.items()
                if qty
            },
        }
    )


def assert_journal_matches_gateway(tmp_path: Path, gateway: dict[str, Any]) -> None:
    """Every order once at the gateway and in the journal; fills and positions equal."""
    orders = {r["client_order_id"]: r for r in journal_rows(tmp_path, "SELECT * FROM orders")}
    refs = Counter(o.order_ref for o in gateway["orders"])
    assert refs, "no orders reached the gateway"
    assert max(refs.values()) == 1, refs
    assert set(refs) <= set(orders)
    unsent = {c for c, r in orders.items() if c not in refs}
    assert all(orders[c]["status"] == "rejected" for c in unsent), unsent
    for o in gateway["orders"]:
        assert o.client_id == ORDER_CLIENT
        row = orders[o.order_ref]
        assert row["filled_quantity"] == pytest.approx(o.filled), o.order_ref
    executions = {e.exec_id: e for e in gateway["executions"]}
    fills = {r["fill_id"]: r for r in journal_rows(tmp_path, "SELECT * FROM fills")}
    assert set(fills) == set(executions)
    for fill_id, fill in fills.items():
        ex = executions[fill_id]
        assert fill["client_order_id"] == ex.order.order_ref
        assert fill["price"] == pytest.approx(ex.price)
        assert fill["quantity"] == pytest.approx(ex.shares)
        assert fill["commission"] == pytest.approx(ex.commission)
    positions = {
        r["symbol"]: r["quantity"]
        for r in journal_rows(tmp_path, "SELECT * FROM positions")
        if r["quantity"]
    }
    assert positions == pytest.approx(gateway["positions"])


def orders_on_old_bars(tmp_path: Path, gateway: dict[str, Any]) -> list[tuple[str, float]]:
    """(order ref, bar age in seconds) of every order that reached the gateway more than one bar
    interval after its bar closed, by the gateway's clock."""
    created = {
        r["client_order_id"]: datetime.fromisoformat(r["created_ts"])
        for r in journal_rows(tmp_path, "SELECT client_order_id, created_ts FROM orders")
    }
    old = []
    for o in gateway["orders"]:
        age = (o.placed_at - created[o.order_ref]).total_seconds()
        if age > BAR.total_seconds():
            old.append((o.order_ref, age))
    return old
