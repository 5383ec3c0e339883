"""The paper venue: a SimBroker persisted to its own SQLite file, surviving restarts like a broker."""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from daemon.errors import InvariantError, StorageError
from daemon.execution import paper
from daemon.execution.base import BrokerView, ExecutionClient
from daemon.execution.paper import PaperExecution
from strategy.sim_broker import SimBrokerConfig
from strategy.types import Bar, Order, OrderStatus, OrderType, Side

T0 = datetime(2024, 1, 2, 14, 30, tzinfo=UTC)
CONFIG = SimBrokerConfig()


def ts(i: int) -> datetime:
    return T0 + timedelta(minutes=i)


def bar(i: int, *, symbol: str = "AAA", open: float = 100.0, volume: float = 100_000.0) -> Bar:
    return Bar(symbol=symbol, ts=ts(i), open=open, high=open + 1, low=open - 1, close=open,
               volume=volume)  # fmt: skip


def order(coid: str, *, quantity: float = 100.0, side: Side = Side.BUY, symbol: str = "AAA",
          limit: float | None = None, at: int = 0) -> Order:  # fmt: skip
    return Order(client_order_id=coid, symbol=symbol, side=side, quantity=quantity,
                 order_type=OrderType.LIMIT if limit is not None else OrderType.MARKET,
                 limit_price=limit, created_ts=ts(at))  # fmt: skip


def view(venue: PaperExecution) -> BrokerView:
    return asyncio.run(venue.broker_view())


def test_paper_execution_when_used_as_execution_client_then_fits_the_protocol(
    tmp_path: Path,
) -> None:
    with PaperExecution(config=CONFIG, path=tmp_path / "venue.sqlite") as venue:
        client: ExecutionClient = venue
        assert client.drain().events == ()


def test_submit_when_next_bar_arrives_then_drain_returns_accepted_fill_and_status_once(
    tmp_path: Path,
) -> None:
    with PaperExecution(config=CONFIG, path=tmp_path / "venue.sqlite") as venue:
        venue.on_market_bars([bar(0)])
        asyncio.run(venue.submit([order("VT-1", at=0)]))
        venue.on_market_bars([bar(1, open=101.0)])

        updates = venue.drain()

        assert [e.status for e in updates.events] == [OrderStatus.ACCEPTED, OrderStatus.FILLED]
        assert [(f.fill_id, f.price) for f in updates.fills] == [
            ("VT-1-F1", pytest.approx(101.0202))
        ]
        assert not venue.drain()


def test_reopen_when_closed_then_orders_fills_and_positions_identical(tmp_path: Path) -> None:
    path = tmp_path / "venue.sqlite"
    with PaperExecution(config=CONFIG, path=path) as venue:
        asyncio.run(venue.submit([order("A", quantity=250), order("B", side=Side.SELL, symbol="BBB"),
                                  order("C", limit=90.0)]))  # fmt: skip
        venue.on_market_bars([bar(1, volume=1000.0), bar(1, symbol="BBB", open=20.0)])
        asyncio.run(venue.cancel("C"))
        before = view(venue)

    with PaperExecution(config=CONFIG, path=path) as reopened:
        after = view(reopened)

    assert after == before
    assert after.orders["A"].status is OrderStatus.PARTIALLY_FILLED
    assert after.orders["C"].status is OrderStatus.CANCELLED
    assert after.positions["AAA"].quantity == 100.0
    assert after.positions["BBB"].quantity == -100.0


def test_submit_when_known_client_order_id_after_restart_then_not_executed_twice(
    tmp_path: Path,
) -> None:
    path = tmp_path / "venue.sqlite"
    with PaperExecution(config=CONFIG, path=path) as venue:
        asyncio.run(venue.submit([order("VT-1")]))
        venue.on_market_bars([bar(1)])

    with PaperExecution(config=CONFIG, path=path) as reopened:
        asyncio.run(reopened.submit([order("VT-1", quantity=500)]))
        reopened.on_market_bars([bar(2), bar(3)])
        updates = reopened.drain()
        final = view(reopened)

    assert [(e.status, e.filled_quantity, e.reason) for e in updates.events] == [
        (OrderStatus.FILLED, 100.0, "duplicate_client_order_id")
    ]
    assert updates.fills == ()
    assert [f.fill_id for f in final.fills] == ["VT-1-F1"]
    assert final.positions["AAA"].quantity == 100.0
    assert list(final.orders) == ["VT-1"]


def test_reopen_when_process_died_without_close_then_every_returned_call_is_on_disk(
    tmp_path: Path,
) -> None:
    path = tmp_path / "venue.sqlite"
    crashed = PaperExecution(config=CONFIG, path=path)  # never closed: stands in for kill -9
    asyncio.run(crashed.submit([order("A", quantity=250), order("B", limit=95.0)]))
    crashed.on_market_bars([bar(1, volume=1000.0)])

    survivor = PaperExecution(config=CONFIG, path=path)
    try:
        assert view(survivor) == view(crashed)
    finally:
        survivor.close()
        crashed.close()


def test_reopen_when_partially_filled_then_continues_exactly_like_an_uninterrupted_venue(
    tmp_path: Path,
) -> None:
    bars = [[bar(i, volume=1000.0, open=100.0 + i)] for i in range(1, 5)]
    with PaperExecution(config=CONFIG, path=tmp_path / "straight.sqlite") as straight:
        asyncio.run(straight.submit([order("A", quantity=350)]))
        for batch in bars:
            straight.on_market_bars(batch)
        expected = view(straight)

    path = tmp_path / "restarted.sqlite"
    with PaperExecution(config=CONFIG, path=path) as first:
        asyncio.run(first.submit([order("A", quantity=350)]))
        for batch in bars[:2]:
            first.on_market_bars(batch)
    with PaperExecution(config=CONFIG, path=path) as second:
        for batch in bars[:2]:  # replayed bars the venue already saw are ignored
            second.on_market_bars(batch)
        for batch in bars[2:]:
            second.on_market_bars(batch)
        got = view(second)

    assert got == expected
    assert [f.fill_id for f in got.fills] == ["A-F1", "A-F2", "A-F3", "A-F4"]


def test_async_context_when_exited_then_closed_and_further_use_is_an_invariant_error(
    tmp_path: Path,
) -> None:
    async def use() -> PaperExecution:
        async with PaperExecution(config=CONFIG, path=tmp_path / "venue.sqlite") as venue:
            await venue.submit([order("A")])
        return venue

    venue = asyncio.run(use())

    with pytest.raises(InvariantError, match="after close"):
        asyncio.run(venue.submit([order("B")]))


def test_open_when_file_is_not_sqlite_then_invariant_error_naming_the_path(tmp_path: Path) -> None:
    path = tmp_path / "venue.sqlite"
    path.write_bytes(b"this is not a database" * 100)

    with pytest.raises(InvariantError, match=r"paper venue .*venue\.sqlite"):
        PaperExecution(config=CONFIG, path=path)


@pytest.mark.parametrize("table", ["venue_orders", "venue_log"])
def test_open_when_a_row_is_corrupt_then_storage_error_naming_the_table(
    tmp_path: Path, table: str
) -> None:
    path = tmp_path / "venue.sqlite"
    venue = PaperExecution(config=CONFIG, path=path)
    asyncio.run(venue.submit([order("A")]))
    if table == "venue_orders":
        venue.close()  # folds its log row into the tables
    with sqlite3.connect(path) as con:
        con.execute(f"UPDATE {table} SET data = '{{\"orders\": 1}}'")
    con.close()

    with pytest.raises(StorageError, match=table):
        PaperExecution(config=CONFIG, path=path)
    with capture_logs() as logs:
        venue.close()  # a second close, or a fold that meets the row too: logged, never raised
    assert [e["event"] for e in logs] == ([] if table == "venue_orders" else ["venue.fold_failed"])


def test_on_market_bars_when_no_orders_then_nothing_is_written(tmp_path: Path) -> None:
    path = tmp_path / "venue.sqlite"
    with PaperExecution(config=CONFIG, path=path) as venue:
        venue.on_market_bars([bar(1, symbol=s) for s in ("AAA", "BBB", "CCC")])
        venue.on_market_bars([bar(2, symbol=s) for s in ("AAA", "BBB", "CCC")])

    con = sqlite3.connect(path)
    try:
        counts = [con.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]
                  for t in ("venue_orders", "venue_fills", "venue_tapes", "venue_log")]  # fmt: skip
        mode = con.execute("PRAGMA journal_mode").fetchone()[0]
    finally:
        con.close()
    assert counts == [0, 0, 0, 0]
    assert mode == "wal"


def test_venue_when_open_then_wal_checkpointed_in_background_and_thread_stopped_on_close(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading
    import time

    from daemon.execution import paper

    monkeypatch.setattr(paper, "VENUE_CHECKPOINT_SECONDS", 0.01)
    path = tmp_path / "venue.sqlite"
    with PaperExecution(config=CONFIG, path=path) as venue:
        # No commit on the order path checkpoints inline: only the backstop would.
        assert venue._con is not None
        assert venue._con.execute("PRAGMA wal_autocheckpoint").fetchone()[0] > 1000
        venue.on_market_bars([bar(0)])
        asyncio.run(venue.submit([order(f"VT-{i}", at=0) for i in range(50)]))
        venue.on_market_bars([bar(1, open=101.0)])
        size = path.stat().st_size
        deadline = time.monotonic() + 30
        while path.stat().st_size <= size and time.monotonic() < deadline:
            time.sleep(0.01)
        assert path.stat().st_size > size  # the thread copied the WAL into the database
    assert not [t for t in threading.enumerate() if t.name == f"wal-checkpoint:{path.name}"]


def test_submit_when_bars_came_before_then_events_are_stamped_with_the_newest_bar_time(
    tmp_path: Path,
) -> None:
    """The venue's clock is the newest bar of any symbol; an older order is stamped with it, a
    newer one with its own time; a stale bar does not move the clock back."""
    with PaperExecution(config=CONFIG, path=tmp_path / "venue.sqlite") as venue:
        venue.on_market_bars([bar(0), bar(3, symbol="BBB")])
        venue.on_market_bars([bar(2, symbol="BBB")])  # stale for BBB: ignored
        asyncio.run(venue.submit([order("VT-1", at=1), order("VT-2", at=5)]))
        stamps = {e.client_order_id: e.ts for e in venue.drain().events}
        assert stamps == {"VT-1": ts(3), "VT-2": ts(5)}


def _rows(path: Path) -> dict[str, list[tuple[object, ...]]]:
    con = sqlite3.connect(path)
    try:
        tables = ("venue_orders", "venue_fills", "venue_tapes", "venue_log")
        return {t: con.execute(f"SELECT * FROM {t} ORDER BY 1").fetchall() for t in tables}
    finally:
        con.close()


def test_calls_when_committed_then_one_log_row_each_until_close_folds_them_into_the_tables(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(paper, "VENUE_CHECKPOINT_SECONDS", 3600.0)  # no background pass folds
    path = tmp_path / "venue.sqlite"
    with PaperExecution(config=CONFIG, path=path) as venue:
        asyncio.run(venue.submit([order("A", quantity=250), order("B", limit=90.0)]))
        venue.on_market_bars([bar(1, volume=1000.0)])
        open_rows = _rows(path)  # what another reader sees while the venue trades
    closed_rows = _rows(path)

    assert [len(open_rows[t]) for t in open_rows] == [0, 0, 0, 2]  # one insert per call
    assert closed_rows["venue_log"] == []
    assert [r[0] for r in closed_rows["venue_orders"]] == ["A", "B"]
    assert [r[1] for r in closed_rows["venue_fills"]] == ["A-F1"]
    assert [r[0] for r in closed_rows["venue_tapes"]] == ["AAA"]


def test_reopen_when_a_crash_left_the_log_then_folded_into_the_same_rows_as_a_close(
    tmp_path: Path,
) -> None:
    def trade(venue: PaperExecution) -> None:
        asyncio.run(
            venue.submit([order("A", quantity=350), order("B", side=Side.SELL, symbol="BBB")])
        )
        for i in range(1, 4):
            venue.on_market_bars([bar(i, volume=1000.0), bar(i, symbol="BBB", open=20.0)])
        asyncio.run(venue.cancel("A"))

    with PaperExecution(config=CONFIG, path=tmp_path / "closed.sqlite") as closed:
        trade(closed)
        expected = view(closed)
    crashed = PaperExecution(config=CONFIG, path=tmp_path / "crashed.sqlite")
    trade(crashed)  # never closed: stands in for kill -9, its log not folded

    with PaperExecution(config=CONFIG, path=tmp_path / "crashed.sqlite") as reopened:
        assert _rows(tmp_path / "crashed.sqlite")["venue_log"] == []  # folded at open
        assert view(reopened) == expected
    crashed.close()
    assert _rows(tmp_path / "crashed.sqlite") == _rows(tmp_path / "closed.sqlite")


def test_checkpoint_pass_when_calls_were_logged_then_folds_them_while_the_venue_trades_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The log never grows with uptime: each background pass folds it (here run at once)."""
    monkeypatch.setattr(paper, "VENUE_CHECKPOINT_SECONDS", 3600.0)  # only the passes we run
    path = tmp_path / "venue.sqlite"
    with PaperExecution(config=CONFIG, path=path) as venue:
        asyncio.run(venue.submit([order("A", quantity=250), order("B", limit=90.0)]))
        venue.on_market_bars([bar(1, volume=1000.0)])
        venue.checkpoint()
        folded = _rows(path)
        venue.on_market_bars([bar(2, volume=1000.0)])  # A's rest fills: logged after the fold
        asyncio.run(venue.cancel("B"))
        assert len(_rows(path)["venue_log"]) == 2
        venue.checkpoint()
        refolded = _rows(path)
        expected = view(venue)
    assert folded["venue_log"] == []
    assert [r[0] for r in folded["venue_orders"]] == ["A", "B"]
    assert [r[1] for r in folded["venue_fills"]] == ["A-F1"]
    assert refolded["venue_log"] == []
    assert [r[1] for r in refolded["venue_fills"]] == ["A-F1", "A-F2"]
    assert refolded == _rows(path)  # the close had nothing left to fold
    with PaperExecution(config=CONFIG, path=path) as reopened:
        assert view(reopened) == expected


def _trade_many(venue: PaperExecution, calls: int) -> None:
    """Orders on three symbols, bars that fill some and rest others, cancels: `calls` log rows."""
    symbols = ("AAA", "BBB", "CCC")
    for i in range(calls // 2):
        symbol = symbols[i % 3]
        asyncio.run(venue.submit([order(f"M-{i}", symbol=symbol, quantity=50.0 + i, at=i),
                                  order(f"L-{i}", symbol=symbol, limit=95.0, at=i)]))  # fmt: skip
        venue.on_market_bars([bar(i + 1, symbol=s, open=100.0 + i % 7) for s in symbols])
    venue.drain()


def test_checkpoint_pass_when_the_log_spans_several_chunks_then_same_tables_as_one_fold(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Folded a chunk at a time, with each table's statements grouped per chunk: the tables
    come out as the log folded in one transaction, row after row."""
    monkeypatch.setattr(paper, "VENUE_CHECKPOINT_SECONDS", 3600.0)  # only the passes we run
    chunk_rows = paper.FOLD_CHUNK
    calls = 2 * (2 * chunk_rows + 3)  # a last chunk part full
    tables = {}
    for chunk in (chunk_rows, 10 * calls):
        monkeypatch.setattr(paper, "FOLD_CHUNK", chunk)
        path = tmp_path / f"chunk{chunk}.sqlite"
        with PaperExecution(config=CONFIG, path=path) as venue:
            _trade_many(venue, calls)
            assert len(_rows(path)["venue_log"]) == calls
            venue.checkpoint()
            tables[chunk] = _rows(path)
            expected = view(venue)
        with PaperExecution(config=CONFIG, path=path) as reopened:
            assert view(reopened) == expected
    chunked, whole = tables.values()
    assert chunked["venue_log"] == []
    assert chunked == whole
    assert len(whole["venue_fills"]) > chunk_rows  # fills from many chunks


class _LockSpy:
    """The venue's write lock, counting acquisitions; decoding a log row while it is held fails."""

    def __init__(self) -> None:
        self.lock = paper.threading.Lock()
        self.acquired = 0

    def __enter__(self) -> _LockSpy:
        self.lock.acquire()
        self.acquired += 1
        return self

    def __exit__(self, *exc: object) -> None:
        self.lock.release()

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        taken = self.lock.acquire(blocking, timeout)
        self.acquired += taken
        return taken

    def release(self) -> None:
        self.lock.release()


def test_checkpoint_pass_when_folding_then_the_write_lock_is_free_while_rows_are_decoded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The order path waits on the write lock for one chunk's SQLite writes, never for the
    decoding, nor for a checkpoint SQLite would run inline in the fold's commits."""
    monkeypatch.setattr(paper, "VENUE_CHECKPOINT_SECONDS", 3600.0)
    calls = 3 * paper.FOLD_CHUNK
    spy = _LockSpy()
    decoder = paper._CHANGES

    class CheckedDecoder:
        def decode(self, data: bytes) -> paper.VenueChanges:
            assert not spy.lock.locked(), "a log row decoded under the write lock"
            return decoder.decode(data)

    with PaperExecution(config=CONFIG, path=tmp_path / "venue.sqlite") as venue:
        _trade_many(venue, calls)
        assert venue._checkpointer is not None
        venue._write_lock = venue._checkpointer.write_lock = spy  # type: ignore[assignment]
        monkeypatch.setattr(paper, "_CHANGES", CheckedDecoder())
        venue.checkpoint()
        con = venue._checkpointer._con
        assert con is not None
        autocheckpoint = con.execute("PRAGMA wal_autocheckpoint").fetchone()[0]
    assert spy.acquired >= calls // paper.FOLD_CHUNK  # a lock hold per chunk
    assert autocheckpoint == paper.BACKSTOP_PAGES
