"""A journal without trading history adopts the broker's state at start (daemon/adoption.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from daemon.execution.base import BrokerView
from daemon.journal import Journal
from daemon.reconcile import reconcile, restore_book
from strategy.sim_broker import SimBroker, SimBrokerConfig
from strategy.types import Bar, Fill, Order, OrderType, Position, Side

T0 = datetime(2024, 3, 1, 14, 30, tzinfo=UTC)
NOW = T0 + timedelta(days=1)


def _traded_broker() -> SimBroker:
    """Six filled market orders over two symbols, then one resting limit order."""
    broker = SimBroker(config=SimBrokerConfig())
    for i in range(6):
        symbol = ("AAA", "BBB")[i % 2]
        ts = T0 + timedelta(minutes=i)
        order = Order(
            client_order_id=f"ACCT-{i + 1}",
            symbol=symbol,
            side=Side.BUY if i % 3 else Side.SELL,
            quantity=float(10 + i),
            order_type=OrderType.MARKET,
            created_ts=ts,
            reason="enter_long",
        )
        broker.submit(order, ts)
        price = 100.0 + i
        bar = Bar(symbol=symbol, ts=ts + timedelta(minutes=1), open=price, high=price + 1,
                  low=price - 1, close=price, volume=10_000.0)  # fmt: skip
        broker.on_bar(bar)
    resting = Order(
        client_order_id="ACCT-7",
        symbol="AAA",
        side=Side.BUY,
        quantity=5.0,
        order_type=OrderType.LIMIT,
        limit_price=1.0,
        created_ts=T0 + timedelta(minutes=7),
    )
    broker.submit(resting, T0 + timedelta(minutes=7))
    return broker


def _view(broker: SimBroker) -> BrokerView:
    return BrokerView(orders=broker.orders(), fills=broker.fills(), positions=broker.positions())


def _positions(journal: Journal) -> dict[str, float]:
    book = restore_book(journal, starting_cash=100_000.0)
    return {s: p.quantity for s, p in book.positions.items() if p.quantity}


def test_reconcile_when_journal_empty_and_broker_traded_then_adopts_orders_fills_and_numbers(
    tmp_path: Path,
) -> None:
    broker = _traded_broker()
    with Journal(tmp_path / "journal.sqlite", checkpoint_seconds=None) as journal:
        book = restore_book(journal, starting_cash=100_000.0)
        with capture_logs() as logs:
            report = reconcile(journal, book, _view(broker), now=NOW, adopt=True)
        assert report.adopted
        assert report.refused == ""
        assert report.position_mismatches == ()
        assert report.positions_adopted == ()  # the venue's executions explain every position
        orders = journal.load_orders()
        assert set(orders) == set(broker.orders())
        assert all(o.reason.startswith("adopted") for o in orders.values())
        assert orders["ACCT-1"].reason == "adopted:enter_long"
        assert set(book.open_orders) == {"ACCT-7"}  # the resting order counts as pending
        # Never a number the lost journal may have used (the broker may not report them all).
        assert journal.next_order_sequence() == int(NOW.timestamp()) + 1
        assert journal.get("adopted_at") == NOW.isoformat()
        at_broker = {s: p.quantity for s, p in broker.positions().items() if p.quantity}
        assert _positions(journal) == pytest.approx(at_broker)
        (line,) = [e for e in logs if e["event"] == "journal.adopted"]
        assert line["orders"] == 7
        assert line["open_orders"] == 1
    with Journal(tmp_path / "journal.sqlite", checkpoint_seconds=None) as journal:
        assert journal.next_order_sequence() > int(NOW.timestamp())  # kept across a restart
        book = restore_book(journal, starting_cash=100_000.0)
        again = reconcile(journal, book, _view(broker), now=NOW, adopt=True)
        assert not again.adopted  # it has a history now: an ordinary restart
        assert again.fills_recovered == 0
        assert again.position_mismatches == ()


def test_reconcile_when_journal_empty_and_executions_gone_then_positions_adopted_and_kept(
    tmp_path: Path,
) -> None:
    # IB the next day: positions, but yesterday's executions and orders are no longer reported.
    view = BrokerView(
        orders={},
        fills=(),
        positions={
            "SPY": Position(symbol="SPY", quantity=-43.0, average_price=470.5),
            "AAPL": Position(symbol="AAPL", quantity=26.0, average_price=185.25),
        },
    )
    with Journal(tmp_path / "journal.sqlite", checkpoint_seconds=None) as journal:
        book = restore_book(journal, starting_cash=100_000.0)
        report = reconcile(journal, book, view, now=NOW, adopt=True)
        assert report.adopted
        assert report.positions_adopted == ("AAPL", "SPY")
        assert report.position_mismatches == ()
        assert book.positions["SPY"].average_price == pytest.approx(470.5)
        rows = journal.rows("orders")
        assert {r["reason"] for r in rows} == {"adopted_position"}
        assert {r["status"] for r in rows} == {"filled"}
    with Journal(tmp_path / "journal.sqlite", checkpoint_seconds=None) as journal:
        assert _positions(journal) == {"AAPL": 26.0, "SPY": -43.0}
        book = restore_book(journal, starting_cash=100_000.0)
        assert reconcile(journal, book, view, now=NOW, adopt=True).position_mismatches == ()


def test_reconcile_when_position_closed_today_then_rest_priced_from_its_executions(
    tmp_path: Path,
) -> None:
    # Short 43 SPY from yesterday, bought back today: flat, and only today's buy is reported.
    buy = Fill(fill_id="E1", client_order_id="ACCT-9", symbol="SPY", side=Side.BUY,
               quantity=43.0, price=471.0, commission=1.0, ts=T0)  # fmt: skip
    view = BrokerView(orders={}, fills=(buy,), positions={})
    with Journal(tmp_path / "journal.sqlite", checkpoint_seconds=None) as journal:
        book = restore_book(journal, starting_cash=100_000.0)
        report = reconcile(journal, book, view, now=NOW, adopt=True)
        assert report.positions_adopted == ("SPY",)
        assert report.position_mismatches == ()
        assert book.position("SPY") == 0.0
        fills = journal.load_fills()
        assert [(f.side, f.quantity, f.price) for f in fills] == [
            (Side.SELL, 43.0, 471.0),
            (Side.BUY, 43.0, 471.0),
        ]


def test_reconcile_when_position_has_no_price_then_refused_and_nothing_journaled(
    tmp_path: Path,
) -> None:
    view = BrokerView(orders={}, fills=(), positions={"SPY": Position(symbol="SPY", quantity=10.0)})
    with Journal(tmp_path / "journal.sqlite", checkpoint_seconds=None) as journal:
        book = restore_book(journal, starting_cash=100_000.0)
        report = reconcile(journal, book, view, now=NOW, adopt=True)
        assert "SPY" in report.refused
        assert not report.adopted
        assert journal.counts()["orders"] == journal.counts()["fills"] == 0
        assert book.positions == {}


def test_reconcile_when_reconnecting_with_empty_journal_then_position_is_a_mismatch(
    tmp_path: Path,
) -> None:
    # Adoption is for the start only: a position appearing later is someone else's trading.
    view = BrokerView(
        orders={},
        fills=(),
        positions={"AAPL": Position(symbol="AAPL", quantity=100.0, average_price=185.0)},
    )
    with Journal(tmp_path / "journal.sqlite", checkpoint_seconds=None) as journal:
        book = restore_book(journal, starting_cash=100_000.0)
        report = reconcile(journal, book, view, now=NOW)
        assert not report.adopted
        assert report.position_mismatches == ("AAPL",)
        assert journal.counts()["fills"] == 0
