"""Finding 3: recovering from a lost journal (or lost last commits) counts every fill once."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from daemon.execution.base import BrokerView
from daemon.journal import Journal
from daemon.reconcile import reconcile, restore_book
from strategy.sim_broker import SimBroker, SimBrokerConfig
from strategy.types import Bar, Order, OrderType, Side

T0 = datetime(2024, 3, 1, 14, 30, tzinfo=UTC)
NOW = T0 + timedelta(days=1)


def _bar(i: int, symbol: str, volume: float = 10_000.0) -> Bar:
    price = 100.0 + (i % 5)
    return Bar(
        symbol=symbol,
        ts=T0 + timedelta(minutes=i),
        open=price,
        high=price + 0.5,
        low=price - 0.5,
        close=price,
        volume=volume,
    )


def _trade(journal: Journal | None, *, orders: int = 12) -> SimBroker:
    """Trade through a SimBroker, journaling each order and then its fills as the pipeline does;
    the last order is bigger than one bar's volume allows, so it stays partially filled."""
    broker = SimBroker(config=SimBrokerConfig())
    for i in range(orders):
        symbol = ("AAA", "BBB")[i % 2]
        quantity = 5_000.0 if i == orders - 1 else float(10 + i)
        order = Order(
            client_order_id=f"T-{i + 1}",
            symbol=symbol,
            side=Side.BUY if i % 3 else Side.SELL,
            quantity=quantity,
            order_type=OrderType.MARKET,
            created_ts=T0 + timedelta(minutes=i),
        )
        if journal is not None:
            journal.record(orders=[order])
        events = broker.submit(order, T0 + timedelta(minutes=i))
        more_events, fills = broker.on_bar(_bar(i + 1, symbol))
        if journal is not None:
            journal.record(order_events=[*events, *more_events], fills=fills)
    return broker


def _view(broker: SimBroker) -> BrokerView:
    return BrokerView(orders=broker.orders(), fills=broker.fills(), positions=broker.positions())


def _check_counted_once(journal: Journal, broker: SimBroker) -> None:
    orders = journal.load_orders()
    for coid, at_broker in broker.orders().items():
        assert orders[coid].filled_quantity == pytest.approx(at_broker.filled_quantity), coid
    assert sorted(f.fill_id for f in journal.load_fills()) == sorted(
        f.fill_id for f in broker.fills()
    )
    rows = {r["client_order_id"]: r for r in journal.rows("orders")}
    for coid, at_broker in broker.orders().items():
        assert rows[coid]["filled_quantity"] <= rows[coid]["quantity"] + 1e-9, coid
        assert rows[coid]["filled_quantity"] == pytest.approx(at_broker.filled_quantity)


def test_reconcile_when_journal_empty_and_broker_has_history_then_fills_counted_once(
    tmp_path: Path,
) -> None:
    broker = _trade(None)
    assert any(not o.status.is_terminal for o in broker.orders().values())
    with Journal(tmp_path / "journal.sqlite", checkpoint_seconds=None) as journal:
        book = restore_book(journal, starting_cash=100_000.0)
        report = reconcile(journal, book, _view(broker), now=NOW)
        assert report.position_mismatches == ()
        _check_counted_once(journal, broker)
        for coid, order in book.open_orders.items():
            assert order.filled_quantity == pytest.approx(broker.orders()[coid].filled_quantity)
    with Journal(tmp_path / "journal.sqlite", checkpoint_seconds=None) as journal:
        book = restore_book(journal, starting_cash=100_000.0)
        again = reconcile(journal, book, _view(broker), now=NOW)  # a second restart adds nothing
        assert again.fills_recovered == 0
        assert again.position_mismatches == ()
        _check_counted_once(journal, broker)


@pytest.mark.parametrize("keep", [0.2, 0.45, 0.7, 0.9])
def test_reconcile_when_wal_truncated_by_power_loss_then_fills_counted_once(
    tmp_path: Path, keep: float
) -> None:
    live = tmp_path / "live"
    live.mkdir()
    journal = Journal(live / "journal.sqlite", checkpoint_seconds=None)
    journal.open()
    try:
        broker = _trade(journal)
        # What the disk held when the power went: the database and a WAL cut short.
        lost = tmp_path / "lost"
        lost.mkdir()
        shutil.copy(live / "journal.sqlite", lost / "journal.sqlite")
        wal = (live / "journal.sqlite-wal").read_bytes()
        (lost / "journal.sqlite-wal").write_bytes(wal[: int(len(wal) * keep)])
    finally:
        journal.close()
    with Journal(lost / "journal.sqlite", checkpoint_seconds=None) as recovered:
        assert len(recovered.load_fills()) < len(broker.fills())  # the last commits are gone
        book = restore_book(recovered, starting_cash=100_000.0)
        report = reconcile(recovered, book, _view(broker), now=NOW)
        assert report.position_mismatches == ()
        _check_counted_once(recovered, broker)
