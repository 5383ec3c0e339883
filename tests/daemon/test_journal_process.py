"""Journal(writer="process"): the child process is the only writer; rows as the thread writer's,
failures raised at the next call, never a hang, one writer per file."""

from __future__ import annotations

import os
import signal
import sqlite3
import threading
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from daemon.errors import InputError
from daemon.journal import TABLES, Journal, JournalConfig, JournalError
from strategy.bars import BarRejected
from strategy.risk import TradingStateChange
from strategy.types import (
    Fill,
    Order,
    OrderEvent,
    OrderIntent,
    OrderStatus,
    OrderType,
    Position,
    RiskDecision,
    Side,
    Signal,
    TradingState,
)

T0 = datetime(2024, 3, 1, tzinfo=UTC)


def order(n: int, ts: datetime = T0) -> Order:
    return Order(client_order_id=f"VT-{n}", symbol="AAA", side=Side.BUY, quantity=2,
                 order_type=OrderType.MARKET, created_ts=ts)  # fmt: skip


def batches(n: int) -> list[dict[str, object]]:
    """n bar batches touching every table: orders every third batch, their fills and events
    in the next, a rejected bar, a state change, kv with a datetime."""
    out: list[dict[str, object]] = []
    for i in range(1, n + 1):
        ts = T0 + timedelta(minutes=i)
        batch: dict[str, object] = {
            "signals": [
                Signal(symbol=f"S{k}", ts=ts, p_up=0.6, confidence=0.1 * k, scorer="r")
                for k in range(1, 4)
            ],
            "kv": {"last_bar_ts": ts, "cash": str(1000.0 - i)},
        }
        if i % 3 == 0:
            intent = OrderIntent(symbol="AAA", side=Side.BUY, quantity=2.0, ts=ts)
            batch["decisions"] = [RiskDecision(intent=intent, accepted=True, reason="ok", ts=ts)]
            batch["orders"] = [order(i, ts)]
        if i % 3 == 1 and i > 1:
            coid = f"VT-{i - 1}"
            batch["fills"] = [Fill(fill_id=f"F-{i}", client_order_id=coid, symbol="AAA",
                                   side=Side.BUY, quantity=2, price=100.0 + i, commission=0.5,
                                   ts=ts)]  # fmt: skip
            batch["order_events"] = [OrderEvent(client_order_id=coid, ts=ts,
                                                status=OrderStatus.FILLED, filled_quantity=2.0)]  # fmt: skip
            batch["positions"] = [Position(symbol="AAA", quantity=2.0 * (i // 3),
                                           average_price=100.0)]  # fmt: skip
        if i == 5:
            batch["bars_rejected"] = [BarRejected(symbol="BBB", ts=ts, reason="stale", detail="x")]
        if i == 7:
            batch["state_changes"] = [TradingStateChange(previous=TradingState.ACTIVE,
                                                         current=TradingState.REDUCING,
                                                         reason="drawdown", ts=ts)]  # fmt: skip
        out.append(batch)
    return out


def every_row(journal: Journal) -> dict[str, list[dict[str, object]]]:
    return {table: journal.rows(table) for table in TABLES}


def test_rows_when_process_writer_then_identical_to_thread_writer(tmp_path: Path) -> None:
    written = {}
    for writer in ("thread", "process"):
        with Journal(tmp_path / f"{writer}.sqlite", writer=writer) as journal:
            for i, batch in enumerate(batches(40)):
                journal.record_orders_ahead(**batch)  # type: ignore[arg-type]
                if i == 20:
                    journal.record(kv={"note": "mid"}, signals=batch["signals"])  # type: ignore[arg-type]
            journal.record_daily_pnl(day=date(2024, 3, 1), equity=1.0, realized=2.0,
                                     unrealized=3.0, ts=T0)  # fmt: skip
            written[writer] = every_row(journal)
            sequence = journal.next_order_sequence()
        with Journal(tmp_path / f"{writer}.sqlite", writer=writer) as journal:
            assert every_row(journal) == written[writer]  # committed, not only visible
            assert journal.next_order_sequence() == sequence
    assert written["process"] == written["thread"]
    assert len(written["process"]["orders"]) == 13
    assert written["process"]["orders"][0]["status"] == "filled"
    assert written["process"]["kv"][1] == {"key": "last_bar_ts",
                                           "value": (T0 + timedelta(minutes=40)).isoformat()}  # fmt: skip


def test_record_orders_ahead_when_returned_then_orders_committed_for_other_readers(
    tmp_path: Path,
) -> None:
    path = tmp_path / "j.sqlite"
    with Journal(path, writer="process", synchronous="full") as journal:
        journal.record_orders_ahead(orders=[order(1)], signals=[])
        with sqlite3.connect(path) as other:
            assert other.execute("SELECT client_order_id FROM orders").fetchall() == [("VT-1",)]


def test_queued_rows_when_nobody_reads_then_reach_disk_on_their_own(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    with Journal(path, writer="process") as journal:
        journal.record_orders_ahead(kv={"last_bar_ts": "1"})
        done = threading.Event()
        for _ in range(200):  # up to 10 s; parent and child linger 0.05 s each
            with sqlite3.connect(path) as other:
                if other.execute("SELECT value FROM kv WHERE key = 'last_bar_ts'").fetchall():
                    done.set()
                    break
            done.wait(0.05)
        assert done.is_set()


def test_next_call_when_writer_process_killed_then_journal_error_and_close_releases(
    tmp_path: Path,
) -> None:
    path = tmp_path / "j.sqlite"
    journal = Journal(path, writer="process")
    journal.open()
    journal.record_orders_ahead(orders=[order(1)])
    assert journal._process is not None
    os.kill(journal._process.process.pid, signal.SIGKILL)
    journal._process.process.wait()
    with capture_logs() as logs, pytest.raises(JournalError, match="writer process"):
        journal.record_orders_ahead(orders=[order(2)])
    assert [e["event"] for e in logs] == ["journal.write_failed"]
    assert not journal.writable()
    journal.close()  # raised once already: releases without raising again
    with Journal(path, writer="process") as again:
        assert list(again.load_orders()) == ["VT-1"]


def test_queued_fill_when_not_finite_then_refused_and_next_write_raises(tmp_path: Path) -> None:
    bad = Fill(fill_id="F-nan", client_order_id="VT-1", symbol="AAA", side=Side.BUY,
               quantity=1.0, price=float("nan"), commission=0.0, ts=T0)  # fmt: skip
    with Journal(tmp_path / "j.sqlite", writer="process") as journal:
        journal.record_orders_ahead(orders=[order(1)])
        with capture_logs() as logs:
            journal.record_orders_ahead(fills=[bad], signals=[])
            journal._wait_for_writer()
        assert [(e["write"], e["stage"]) for e in logs if e["event"] == "journal.write_failed"] == [
            ("group_commit", "encode")
        ]
        with pytest.raises(JournalError, match="non-finite"):
            journal.record_orders_ahead(orders=[order(2)])
    with Journal(tmp_path / "j.sqlite") as journal:
        assert list(journal.load_orders()) == ["VT-1"]


def test_order_when_not_finite_then_refused_before_broker_and_journal_goes_on(
    tmp_path: Path,
) -> None:
    bad = Order(client_order_id="VT-9", symbol="AAA", side=Side.BUY, quantity=1.0,
                order_type=OrderType.LIMIT, limit_price=float("inf"), created_ts=T0)  # fmt: skip
    with Journal(tmp_path / "j.sqlite", writer="process") as journal:
        with pytest.raises(JournalError, match="refusing orders row 'VT-9' with a non-finite"):
            journal.record_orders_ahead(orders=[bad])
        journal.record_orders_ahead(orders=[order(1)])
        assert list(journal.load_orders()) == ["VT-1"]


def test_open_when_process_writer_holds_journal_then_second_refused(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    with Journal(path, writer="process") as journal:
        journal.flush()
        with pytest.raises(JournalError, match="in use by another process"):
            Journal(path).open()


def test_construct_when_process_writer_with_commit_every_then_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="commit_every"):
        Journal(tmp_path / "j.sqlite", writer="process", commit_every=5)
    with pytest.raises(InputError, match="writer"):
        Journal(tmp_path / "j.sqlite", writer="fork")  # type: ignore[arg-type]
    assert JournalConfig(writer="process").writer == "process"
