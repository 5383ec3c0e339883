"""The order path's write (Journal.record_orders_ahead): orders committed before it returns, the rest
group-committed by the writer thread, in order, with a sticky failure and no lost order at kill -9."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from daemon.journal import Journal, JournalError
from strategy.types import Fill, Order, OrderType, Position, Side, Signal

T0 = datetime(2024, 3, 1, 14, 30, tzinfo=UTC)
REPO = Path(__file__).resolve().parents[2]


def order(n: int) -> Order:
    return Order(
        client_order_id=f"VT-{n}",
        symbol="AAA",
        side=Side.BUY,
        quantity=10.0,
        order_type=OrderType.MARKET,
        created_ts=T0 + timedelta(minutes=n),
    )


def fill(n: int) -> Fill:
    return Fill(
        fill_id=f"F-{n}",
        client_order_id=f"VT-{n}",
        symbol="AAA",
        side=Side.BUY,
        quantity=10.0,
        price=100.0 + n,
        commission=0.5,
        ts=T0 + timedelta(minutes=n, seconds=30),
    )


def signals(n: int, count: int = 50) -> list[Signal]:
    ts = T0 + timedelta(minutes=n)
    return [
        Signal(symbol=f"S{k:03d}", ts=ts, p_up=0.6, confidence=0.3, scorer="rules")
        for k in range(count)
    ]


def raw(path: Path, sql: str) -> list[tuple[object, ...]]:
    """Read through a connection of its own: what another process would see now."""
    con = sqlite3.connect(path)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


@pytest.mark.parametrize("synchronous", ["normal", "full"])
def test_record_orders_ahead_when_batch_has_orders_then_committed_before_return_and_rest_follows(
    tmp_path: Path, synchronous: str
):
    path = tmp_path / "j.sqlite"
    with Journal(path, synchronous=synchronous) as journal:  # type: ignore[arg-type]
        journal.record_orders_ahead(
            orders=[order(1)], signals=signals(1), kv={"last_bar_ts": "1"}, fills=[]
        )
        # Another connection sees the order and the kv at once, before any wait for the writer.
        assert raw(path, "SELECT client_order_id FROM orders") == [("VT-1",)]
        assert raw(path, "SELECT value FROM kv WHERE key = 'last_bar_ts'") == [("1",)]
        assert raw(path, "SELECT value FROM kv WHERE key = 'order_sequence'") == [("1",)]
        # Reads wait for the writer: the batch's signals are there.
        assert journal.counts()["signals"] == 50
    assert raw(path, "SELECT count(*) FROM signals") == [(50,)]


def test_record_orders_ahead_when_fills_follow_orders_then_orders_filled_once_in_order(
    journal: Journal,
):
    for n in range(1, 31):
        previous = [fill(n - 1)] if n > 1 else []
        journal.record_orders_ahead(
            orders=[order(n)],
            fills=previous + previous,  # a repeat within the batch counts once
            positions=[Position(symbol="AAA", quantity=10.0 * (n - 1), average_price=100.0)],
            signals=signals(n, 5),
        )
        journal.record_orders_ahead(fills=previous)  # and a repeat in a later batch too
    orders = journal.load_orders()
    assert [o.filled_quantity for o in orders.values()] == [10.0] * 29 + [0.0]
    assert [f.fill_id for f in journal.load_fills()] == [f"F-{n}" for n in range(1, 30)]
    assert journal.fill_ids() == {f"F-{n}" for n in range(1, 30)}
    assert journal.load_positions()["AAA"].quantity == 290.0


def test_record_orders_ahead_when_older_kv_still_queued_then_never_overwrites_newer(
    tmp_path: Path,
):
    """The writer lags the order path: a kv value it holds from an earlier batch must not land on
    top of a later batch's value committed ahead (a restart would resume from the older bar)."""
    path = tmp_path / "j.sqlite"
    with Journal(path) as journal:
        seen: list[int] = []
        for n in range(1, 61):
            # A batch without orders (kv deferred, behind a few thousand rows), then one with.
            journal.record_orders_ahead(signals=signals(n, 400), kv={"last_bar_ts": f"{2 * n:04d}"})
            journal.record_orders_ahead(orders=[order(n)], kv={"last_bar_ts": f"{2 * n + 1:04d}"})
            seen.append(int(raw(path, "SELECT value FROM kv WHERE key = 'last_bar_ts'")[0][0]))
        assert journal.get("last_bar_ts") == "0121"
    assert all(value == 2 * n + 1 for n, value in enumerate(seen, start=1)), seen
    assert raw(path, "SELECT value FROM kv WHERE key = 'last_bar_ts'") == [("0121",)]


def test_record_orders_ahead_when_writer_commit_fails_then_next_write_raises_and_not_writable(
    tmp_path: Path,
):
    path = tmp_path / "j.sqlite"
    with Journal(path) as journal:
        journal.record_orders_ahead(orders=[order(1)])
        journal._writer_con.execute("PRAGMA query_only = ON")  # type: ignore[union-attr]
        with capture_logs() as logs:
            journal.record_orders_ahead(signals=signals(2))  # queued: returns at once
            journal._wait_for_writer()
        assert [e["write"] for e in logs if e["event"] == "journal.write_failed"] == [
            "group_commit"
        ]
        assert not journal.writable()
        with pytest.raises(JournalError, match=r"group_commit failed at begin: read-only"):
            journal.record_orders_ahead(orders=[order(2)])
        with pytest.raises(JournalError, match="group_commit failed"):
            journal.record(kv={"a": "1"})
    # Raised once already: close() releases everything without raising it again.
    with Journal(path) as journal:
        assert list(journal.load_orders()) == ["VT-1"]
        assert journal.counts()["signals"] == 0


def test_record_orders_ahead_when_queued_fill_not_finite_then_refused_and_next_write_raises(
    journal: Journal,
):
    bad = Fill(
        fill_id="F-nan", client_order_id="VT-1", symbol="AAA", side=Side.BUY, quantity=1.0,
        price=float("nan"), commission=0.0, ts=T0,
    )  # fmt: skip
    journal.record_orders_ahead(orders=[order(1)])
    with capture_logs() as logs:
        journal.record_orders_ahead(fills=[bad], signals=signals(1))
        journal._wait_for_writer()
    assert [(e["write"], e["stage"]) for e in logs if e["event"] == "journal.write_failed"] == [
        ("group_commit", "encode")
    ]
    with pytest.raises(JournalError, match="non-finite"):
        journal.record_orders_ahead(orders=[order(2)])
    assert list(journal.load_orders()) == ["VT-1"]
    assert journal.counts()["signals"] == 0


def test_close_when_writer_failed_unseen_then_raises_after_releasing(tmp_path: Path):
    path = tmp_path / "j.sqlite"
    journal = Journal(path)
    journal.open()
    journal._writer_con.execute("PRAGMA query_only = ON")  # type: ignore[union-attr]
    journal.record_orders_ahead(signals=signals(1))
    with pytest.raises(JournalError, match="group_commit failed"):
        journal.close()
    with Journal(path) as again:  # the lock was released
        assert again.counts()["signals"] == 0


_KILLER = textwrap.dedent(
    """
    import os, signal, sys
    from datetime import UTC, datetime, timedelta
    from daemon.journal import Journal
    from strategy.types import Fill, Order, OrderType, Position, Side, Signal

    j = Journal(sys.argv[1], synchronous=sys.argv[2], writer=sys.argv[3])
    j.open()
    t0 = datetime(2024, 3, 1, tzinfo=UTC)
    for i in range(1, 41):
        ts = t0 + timedelta(minutes=i)
        n = j.next_order_sequence()
        fills = [Fill(fill_id=f"F-{n - 1}", client_order_id=f"VT-{n - 1}", symbol="AAA",
                      side=Side.BUY, quantity=1.0, price=100.0, commission=0.0, ts=ts)] if n > 1 else []
        j.record_orders_ahead(
            signals=[Signal(symbol=f"S{k}", ts=ts, p_up=0.7, confidence=0.5, scorer="rules")
                     for k in range(100)],
            orders=[Order(client_order_id=f"VT-{n}", symbol="AAA", side=Side.BUY, quantity=1.0,
                          order_type=OrderType.MARKET, created_ts=ts)],
            fills=fills,
            positions=[Position(symbol="AAA", quantity=float(n - 1), average_price=100.0)],
            kv={"last_bar_ts": ts.isoformat()},
        )
    os.kill(os.getpid(), signal.SIGKILL)  # the writer may still hold queued batches
    """
)


@pytest.mark.parametrize("writer", ["thread", "process"])
@pytest.mark.parametrize("synchronous", ["normal", "full"])
def test_reopen_when_killed_with_writer_behind_then_every_order_kept_and_rows_consistent(
    tmp_path: Path, synchronous: str, writer: str
):
    path = tmp_path / "j.sqlite"
    done = subprocess.run(
        [sys.executable, "-c", _KILLER, str(path), synchronous, writer],
        cwd=REPO,
        timeout=120,
        check=False,
    )
    assert done.returncode == -9
    with Journal(path) as j:
        orders = j.load_orders()
        fills = j.load_fills()
        positions = j.load_positions()
        assert list(orders) == [f"VT-{n}" for n in range(1, 41)]  # every order committed ahead
        assert (
            j.get("last_bar_ts")
            == (datetime(2024, 3, 1, tzinfo=UTC) + timedelta(minutes=40)).isoformat()
        )
        assert j.next_order_sequence() == 41
        # Whatever the writer committed is a prefix of the batches, each batch whole.
        assert [f.fill_id for f in fills] == [f"F-{n}" for n in range(1, len(fills) + 1)]
        assert [o.filled_quantity for o in orders.values()] == [1.0] * len(fills) + [0.0] * (
            40 - len(fills)
        )
        assert positions.get("AAA", Position(symbol="AAA", quantity=0.0)).quantity == len(fills)
        committed = j.counts()["signals"] // 100  # batches the writer committed
        assert committed - 1 == len(fills) if fills else committed in (0, 1)


def test_record_orders_ahead_when_record_group_open_then_group_committed_first(tmp_path: Path):
    path = tmp_path / "j.sqlite"
    with Journal(path, commit_every=100) as journal:
        journal.record(signals=signals(1))  # an open group: not yet visible to others
        assert raw(path, "SELECT count(*) FROM signals") == [(0,)]
        journal.record_orders_ahead(orders=[order(1)], signals=signals(2))
        assert raw(path, "SELECT count(*) FROM orders") == [(1,)]
        assert journal.counts()["signals"] == 100  # the group, then the writer's batch
        assert journal.writable()


@pytest.fixture
def journal(tmp_path: Path):
    with Journal(tmp_path / "journal.sqlite") as j:
        yield j


def test_record_orders_ahead_when_keyword_names_no_table_then_type_error_and_nothing_written(
    tmp_path: Path,
):
    path = tmp_path / "j.sqlite"
    with Journal(path) as journal:
        with pytest.raises(TypeError, match="no table for bogus"):
            journal.record_orders_ahead(orders=[order(1)], bogus=[1])  # type: ignore[call-arg]
        assert journal.load_orders() == {}
    assert raw(path, "SELECT count(*) FROM orders") == [(0,)]


def test_order_path_when_held_then_reads_and_close_still_see_every_queued_row(tmp_path: Path):
    """The writer waits while the orders go out; a read inside that wait ends it (never a hang)."""
    path = tmp_path / "journal.sqlite"
    seen: list[int] = []

    def batch() -> None:
        with Journal(path) as journal, journal.order_path():
            journal.record_orders_ahead(orders=[order(1)], signals=signals(1))
            assert raw(path, "SELECT count(*) FROM orders") == [(1,)]  # ahead of the broker
            seen.append(len(journal.rows("signals")))
            journal.record_orders_ahead(orders=[order(2)], signals=signals(2, count=3))
        # closed while still held: the queued signals were committed first

    worker = threading.Thread(target=batch, daemon=True)
    worker.start()
    worker.join(timeout=30)
    assert not worker.is_alive(), "order_path hold deadlocked a read or the close"
    assert seen == [50]
    assert raw(path, "SELECT count(*) FROM signals") == [(53,)]


def test_record_orders_ahead_when_kv_value_is_datetime_then_its_isoformat_is_stored(
    tmp_path: Path,
) -> None:
    """The kernel hands last_bar_ts over as the bar's datetime: both the order path's commit and
    the writer's store the text the kernel used to make, and readers get that text back."""
    path = tmp_path / "j.sqlite"
    with Journal(path) as journal:
        journal.record_orders_ahead(orders=[order(1)], kv={"last_bar_ts": T0})
        assert raw(path, "SELECT value FROM kv WHERE key = 'last_bar_ts'") == [(T0.isoformat(),)]
        later = T0 + timedelta(minutes=1, microseconds=7)
        journal.record_orders_ahead(signals=signals(1, 2), kv={"last_bar_ts": later})
        assert journal.get("last_bar_ts") == later.isoformat()
    assert raw(path, "SELECT value FROM kv WHERE key = 'last_bar_ts'") == [(later.isoformat(),)]


def test_writer_when_nobody_reads_or_orders_then_queued_rows_reach_disk_on_their_own(
    tmp_path: Path,
) -> None:
    """The writer thread lingers only until the oldest queued row has waited LINGER_SECONDS:
    without a read, a flush or an order commit to carry them, the rows still get committed."""
    path = tmp_path / "j.sqlite"
    with Journal(path) as journal:
        journal.record_orders_ahead(signals=signals(1, 3), kv={"last_bar_ts": "1"})
        journal.record_orders_ahead(signals=signals(2, 3), kv={"last_bar_ts": "2"})
        done = threading.Event()
        for _ in range(200):  # up to 10 s; the writer's linger is 0.05 s
            if raw(path, "SELECT value FROM kv WHERE key = 'last_bar_ts'") == [("2",)]:
                done.set()
                break
            done.wait(0.05)
        assert done.is_set()
        assert raw(path, "SELECT count(*) FROM signals") == [(6,)]
