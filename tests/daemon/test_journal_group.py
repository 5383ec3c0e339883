"""The writer's group write (journal_rows.write_group) and the order path carrying queued rows:
fewer statements and commits, the same rows as writing each batch on its own."""

from __future__ import annotations

import sqlite3
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from daemon.journal import Journal
from daemon.journal_rows import (
    BatchArgs,
    encode_batch,
    fill_then_status,
    folded_status,
    iso_utc,
    kv_text,
    update_runs,
    write_batch,
    write_group,
)
from daemon.journal_schema import ROW_ORDER, TABLES, migrate
from daemon.journal_writer import CARRY_AFTER_SECONDS
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

T0 = datetime(2024, 3, 1, 14, 30, tzinfo=UTC)


def order(n: int) -> Order:
    return Order(
        client_order_id=f"VT-{n}", symbol=f"S{n % 3}", side=Side.BUY, quantity=10.0,
        order_type=OrderType.MARKET, created_ts=T0 + timedelta(minutes=n),
    )  # fmt: skip


def mixed_batch(n: int) -> BatchArgs:
    """Batch n: signals and a decision always; a fill, then an event that reads the fill's
    quantity, for the order of the batch before; a rejected bar, a state change now and then."""
    ts = T0 + timedelta(minutes=n, microseconds=n)
    intent = OrderIntent(symbol=f"S{n % 3}", ts=ts, side=Side.BUY, quantity=10.0)
    batch = BatchArgs(
        signals=[
            Signal(symbol=f"S{k}", ts=ts, p_up=0.5 + k / 10, confidence=0.1 * n, scorer="rules")
            for k in range(3)
        ],
        decisions=[
            RiskDecision(
                intent=intent,
                accepted=n % 2 == 0,
                reason="ok" if n % 2 == 0 else "max_position",
                ts=ts if n % 4 else None,
            )
        ],
        positions=[Position(symbol=f"S{n % 3}", quantity=float(n), average_price=100.0 + n)],
        kv={"last_bar_ts": ts.isoformat(), f"k{n % 2}": str(n)},
    )
    if n > 1:
        # The partial fill lands before the event only in batch order: merging fills and events
        # across batches would mark the order filled at a different count.
        batch["fills"] = [
            Fill(fill_id=f"F-{n}", client_order_id=f"VT-{n - 1}", symbol=f"S{(n - 1) % 3}",
                 side=Side.BUY, quantity=4.0, price=100.0 + n, commission=0.1, ts=ts)
        ]  # fmt: skip
        batch["order_events"] = [
            OrderEvent(client_order_id=f"VT-{n - 1}", ts=ts, status=OrderStatus.PARTIALLY_FILLED,
                       filled_quantity=4.0 if n % 2 else 10.0)
        ]  # fmt: skip
    if n % 5 == 0:
        batch["bars_rejected"] = [
            BarRejected(symbol="S0", ts=ts, reason="stale", detail=f"bar {n} is old")
        ]
        batch["state_changes"] = [
            TradingStateChange(previous=TradingState.ACTIVE, current=TradingState.HALTED,
                               reason="max_drawdown", ts=ts)
        ]  # fmt: skip
    return batch


def database(path: Path) -> sqlite3.Connection:
    con = sqlite3.connect(path, isolation_level=None)
    migrate(con, path)
    orders = encode_batch(path, BatchArgs(orders=[order(n) for n in range(1, 31)]))
    write_batch(con.cursor(), lambda _: None, orders)
    return con


def dump(con: sqlite3.Connection) -> dict[str, list[Any]]:
    return {
        t: con.execute(f"SELECT * FROM {t} ORDER BY {ROW_ORDER.get(t, 'id')}").fetchall()
        for t in TABLES
    }


def each_then_grouped(
    tmp_path: Path, batches: list[BatchArgs]
) -> tuple[dict[str, list[Any]], dict[str, list[Any]]]:
    """The journal's rows after writing the batches one by one, and after one write_group (the
    batches' kv taken out and handed to it as the writer does: each key's last value)."""
    one_by_one = database(tmp_path / "a.sqlite")
    for batch in batches:
        write_batch(one_by_one.cursor(), lambda _: None, encode_batch(tmp_path, batch))
    grouped = database(tmp_path / "b.sqlite")
    last_kv: dict[str, str] = {}
    for batch in batches:
        last_kv.update({k: kv_text(v) for k, v in (batch.get("kv") or {}).items()})
    rest = [BatchArgs(**{k: v for k, v in b.items() if k != "kv"}) for b in batches]  # type: ignore[typeddict-item]
    write_group(tmp_path, grouped.cursor(), lambda _: None, rest, sorted(last_kv.items()))
    return dump(one_by_one), dump(grouped)


def test_write_group_when_batches_mixed_then_rows_equal_writing_each_batch(tmp_path: Path) -> None:
    batches = [mixed_batch(n) for n in range(1, 31)]
    expected, got = each_then_grouped(tmp_path, batches)
    assert len(expected["fills"]) == 29
    assert len(expected["state_changes"]) == 6
    assert got == expected


def test_write_group_when_event_then_fill_of_one_order_then_updates_keep_batch_order(
    tmp_path: Path,
) -> None:
    """An order's status event (filled 4, as the broker counts) a batch before its fill of 4:
    the fill adds to the quantity the event set. Updates run fills-then-events per run, so the
    fill must not join the event's run (it would count 4, not 8, as batch by batch does)."""
    ts = T0 + timedelta(minutes=40)

    def fill(n: int, coid: str) -> Fill:
        return Fill(fill_id=f"G-{n}", client_order_id=coid, symbol="S1", side=Side.BUY,
                    quantity=4.0, price=100.0 + n, commission=0.1, ts=ts)  # fmt: skip

    def event(coid: str, status: OrderStatus) -> OrderEvent:
        return OrderEvent(client_order_id=coid, ts=ts, status=status, filled_quantity=4.0)

    batches = [
        BatchArgs(order_events=[event("VT-1", OrderStatus.PARTIALLY_FILLED)]),
        BatchArgs(fills=[fill(1, "VT-2")]),  # another order: may join the run
        BatchArgs(fills=[fill(2, "VT-1")], order_events=[event("VT-2", OrderStatus.FILLED)]),
        BatchArgs(fills=[fill(3, "VT-2"), fill(4, "VT-3")]),
        BatchArgs(order_events=[event("VT-3", OrderStatus.CANCELLED)], fills=[fill(5, "VT-4")]),
    ]
    expected, got = each_then_grouped(tmp_path, batches)
    filled = {r[1]: r[9] for r in expected["orders"]}  # client_order_id: filled_quantity
    assert (filled["VT-1"], filled["VT-2"], filled["VT-3"]) == (8.0, 8.0, 4.0)
    assert got == expected


def test_update_runs_when_fill_follows_event_of_its_order_then_new_run() -> None:
    fills = [{"coid": "A"}, {"coid": "B"}, {"coid": "A"}]
    events = [{"coid": "A"}, {"coid": "C"}]
    # batch 1: fill A, event A; batch 2: fill B, event C; batch 3: fill A (after A's event)
    runs = update_runs(fills, events, [(1, 1), (2, 2), (3, 2)])
    assert runs == [([fills[0], fills[1]], [events[0], events[1]]), ([fills[2]], [])]


def test_record_orders_ahead_when_rows_queued_a_while_then_order_commit_carries_them(
    tmp_path: Path,
) -> None:
    """Held writer (orders going out): once queued rows have waited CARRY_AFTER_SECONDS, the next
    batch's order commit takes them, older first, so a kill -9 after it keeps them and the
    writer has less to do."""
    path = tmp_path / "j.sqlite"
    with Journal(path) as journal, journal.order_path():
        signals = [
            Signal(symbol=f"S{k}", ts=T0, p_up=0.6, confidence=0.3, scorer="rules")
            for k in range(20)
        ]
        journal.record_orders_ahead(orders=[order(1)], signals=signals, kv={"last_bar_ts": "1"})
        time.sleep(CARRY_AFTER_SECONDS)
        journal.record_orders_ahead(orders=[order(2)], kv={"last_bar_ts": "2"})
        con = sqlite3.connect(path)  # another process's view, without waiting for the writer
        try:
            assert con.execute("SELECT count(*) FROM signals").fetchone() == (20,)
            assert con.execute("SELECT value FROM kv WHERE key = 'last_bar_ts'").fetchone() == (
                "2",
            )
        finally:
            con.close()


def test_group_write_when_older_batch_holds_a_key_the_newest_lacks_then_its_own_batch_decides(
    tmp_path: Path,
) -> None:
    """A queued batch's kv key (trading_state) that later queued batches lack is judged by that
    batch's place: the order path wrote the key in a later batch, so the older value must not
    land on top of it, while the newest queued last_bar_ts still does."""
    path = tmp_path / "j.sqlite"
    with Journal(path) as journal:
        sig = [Signal(symbol="S0", ts=T0, p_up=0.6, confidence=0.3, scorer="rules")]
        journal.record_orders_ahead(signals=sig, kv={"last_bar_ts": "1", "trading_state": "halted"})
        journal.record_orders_ahead(orders=[order(1)], kv={"trading_state": "active"})
        journal.record_orders_ahead(signals=sig, kv={"last_bar_ts": "3"})
        journal.flush()
        assert journal.get("trading_state") == "active"
        assert journal.get("last_bar_ts") == "3"
        assert journal.counts()["signals"] == 2


def _event(coid: str, status: OrderStatus, filled: float = 0.0, reason: str = "",
           broker: str | None = None) -> OrderEvent:  # fmt: skip
    return OrderEvent(client_order_id=coid, ts=T0 + timedelta(minutes=50), status=status,
                      filled_quantity=filled, reason=reason, broker_order_id=broker)  # fmt: skip


S = OrderStatus


def test_write_group_when_an_order_has_several_events_then_folded_updates_leave_the_same_rows(
    tmp_path: Path,
) -> None:
    """Accepted-then-filled (and other sequences) of one order in one run are one update, and
    the rows are those of applying each event in turn: ids and reasons kept from the earlier
    event when the later has none, nothing after a terminal status or after a partial fill that
    reaches the quantity (quantity 10 in database())."""
    first = [
        _event("VT-1", S.SUBMITTED),
        _event("VT-1", S.ACCEPTED, broker="B1", reason="acked"),
        _event("VT-2", S.ACCEPTED, reason="acked"),
        _event("VT-2", S.PARTIALLY_FILLED, 10.0),
        _event("VT-3", S.ACCEPTED),
        _event("VT-3", S.CANCELLED, reason="user"),
        _event("VT-6", S.REJECTED, reason="margin"),
    ]
    second = [
        _event("VT-1", S.FILLED, 10.0),  # no broker id, no reason: VT-1 keeps B1, "acked"
        _event("VT-2", S.CANCELLED, reason="late"),  # VT-2 was filled by its partial fill
        _event("VT-3", S.ACCEPTED, broker="B3"),  # after cancelled: not applied
        _event("VT-4", S.PARTIALLY_FILLED, 4.0, broker="B4"),
        _event("VT-4", S.ACCEPTED, reason="requeued"),  # after a partial fill: its own update
        _event("VT-4", S.SUBMITTED, 2.0),  # folds into the one before: filled stays 4
        _event("VT-6", S.ACCEPTED),  # after rejected: neither this
        _event("VT-6", S.FILLED, 10.0),  # nor this
    ]
    fill = Fill(fill_id="H-1", client_order_id="VT-4", symbol="S1", side=Side.BUY, quantity=2.0,
                price=101.0, commission=0.1, ts=T0)  # fmt: skip
    third = [
        _event("VT-4", S.PARTIALLY_FILLED, 6.0),  # a new run: VT-4's fill comes after its events
        _event("VT-5", S.ACCEPTED, reason="r5", broker="B5"),
        _event("VT-5", S.SUBMITTED),
    ]
    batches = [
        BatchArgs(order_events=first),
        BatchArgs(order_events=second),
        BatchArgs(fills=[fill], order_events=third),
    ]
    expected, got = each_then_grouped(tmp_path, batches)
    by_id = {r[1]: r for r in expected["orders"]}  # status, filled, reason, broker order id
    assert [(by_id[c][8], by_id[c][9], by_id[c][12], by_id[c][13]) for c in
            ("VT-1", "VT-2", "VT-3", "VT-4", "VT-5", "VT-6")] == [
        ("filled", 10.0, "acked", "B1"),
        ("filled", 10.0, "acked", None),
        ("cancelled", 0.0, "user", None),
        ("partially_filled", 6.0, "requeued", "B4"),
        ("submitted", 0.0, "r5", "B5"),
        ("rejected", 0.0, "margin", None),
    ]  # fmt: skip
    assert got == expected


def test_folded_status_when_accepted_then_filled_then_one_update_with_the_later_status() -> None:
    events = [
        {"coid": "A", "ts": "t1", "status": "accepted", "filled": 0.0, "broker_order_id": "B",
         "reason": "", "data": "{}"},
        {"coid": "C", "ts": "t1", "status": "accepted", "filled": 0.0, "broker_order_id": None,
         "reason": "", "data": "{}"},
        {"coid": "A", "ts": "t2", "status": "filled", "filled": 5.0, "broker_order_id": None,
         "reason": "", "data": "{}"},
        {"coid": "A", "ts": "t3", "status": "cancelled", "filled": 0.0, "broker_order_id": None,
         "reason": "late", "data": "{}"},
    ]  # fmt: skip
    folded = folded_status(events)
    assert [(e["coid"], e["status"]) for e in folded] == [
        ("A", "filled"), ("C", "accepted"), ("A", "cancelled"),
    ]  # fmt: skip
    assert folded[0] == {"coid": "A", "ts": "t2", "status": "filled", "filled": 5.0,
                         "broker_order_id": "B", "reason": ""}  # fmt: skip


def test_write_group_when_an_order_has_one_fill_and_one_status_then_one_update_leaves_the_same_rows(
    tmp_path: Path,
) -> None:
    """ORDER_FILLED_THEN_STATUS against the two statements in turn: on an order already terminal
    (the fill applies, the status does not), a partial fill below and at the quantity, and the
    orders it must leave to the two statements (two fills; two status updates after a fold stop)."""
    late = T0 + timedelta(minutes=90)

    def fill(n: int, coid: str, qty: float) -> Fill:
        return Fill(fill_id=f"K-{n}", client_order_id=coid, symbol="S1", side=Side.BUY,
                    quantity=qty, price=100.0 + n, commission=0.1, ts=late)  # fmt: skip

    batches = [
        BatchArgs(
            order_events=[
                _event("VT-7", S.CANCELLED, reason="user"),
                _event("VT-12", S.PARTIALLY_FILLED, 6.0),
            ]
        ),
        BatchArgs(
            fills=[
                fill(1, "VT-7", 3.0),
                fill(2, "VT-8", 4.0),
                fill(3, "VT-9", 10.0),
                fill(4, "VT-10", 2.0),
                fill(5, "VT-10", 3.0),
                fill(6, "VT-11", 4.0),
                fill(7, "VT-12", 4.0),
            ],
            order_events=[
                _event("VT-7", S.FILLED, 5.0, reason="late", broker="B7"),  # terminal: ignored
                _event("VT-8", S.PARTIALLY_FILLED, 4.0, reason="r8", broker="B8"),
                _event("VT-9", S.PARTIALLY_FILLED, 10.0),
                _event("VT-10", S.PARTIALLY_FILLED, 5.0),
                _event("VT-11", S.PARTIALLY_FILLED, 4.0),
                _event("VT-11", S.CANCELLED, reason="rest cancelled"),
                _event("VT-12", S.PARTIALLY_FILLED, 8.0),  # the broker's count lags the fill
            ],
        ),
    ]
    expected, got = each_then_grouped(tmp_path, batches)
    by_id = {r[1]: r for r in expected["orders"]}
    # status, filled_quantity, average_fill_price, reason
    assert [(by_id[c][8], by_id[c][9], by_id[c][10], by_id[c][12]) for c in
            ("VT-7", "VT-8", "VT-9", "VT-10", "VT-11", "VT-12")] == [
        ("cancelled", 3.0, 101.0, "user"),  # the fill's 3, not the event's 5
        ("partially_filled", 4.0, 102.0, "r8"),
        ("filled", 10.0, 103.0, ""),
        ("partially_filled", 5.0, pytest.approx((104.0 * 2 + 105.0 * 3) / 5), ""),
        ("cancelled", 4.0, 106.0, "rest cancelled"),
        ("filled", 10.0, 107.0, ""),  # 6 + the fill's 4 reach the quantity: filled
    ]  # fmt: skip
    assert by_id["VT-7"][15] == iso_utc(late)  # updated_ts: the fill's time on the terminal order
    assert by_id["VT-8"][15] == iso_utc(T0 + timedelta(minutes=50))  # the status event's
    assert got == expected


def test_fill_then_status_when_one_fill_and_one_status_then_one_statement_else_two() -> None:
    fills = [{"coid": c, "qty": 1.0, "price": 2.0, "ts": "f"} for c in ("A", "B", "B", "C")]
    status = [{"coid": c, "ts": "e", "status": "filled", "filled": 1.0, "broker_order_id": None,
               "reason": ""} for c in ("A", "B", "C", "C", "D")]  # fmt: skip
    alone, rest, both = fill_then_status(fills, status)
    assert [f["coid"] for f in alone] == ["B", "B", "C"]
    assert [e["coid"] for e in rest] == ["B", "C", "C", "D"]
    assert both == [{"coid": "A", "qty": 1.0, "price": 2.0, "fill_ts": "f", "ts": "e",
                     "status": "filled", "filled": 1.0, "broker_order_id": None, "reason": ""}]  # fmt: skip
