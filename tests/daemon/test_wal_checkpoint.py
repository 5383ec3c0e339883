from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path
from typing import Literal

import pytest
from structlog.testing import capture_logs

from daemon.journal import SCHEMA_VERSION, Journal
from daemon.wal_checkpoint import BACKSTOP_PAGES, WalCheckpointer
from tests.daemon.test_journal_write_ahead import order, signals


def _until(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


def test_checkpointer_when_file_unusable_at_first_then_retries_and_checkpoints_later(
    tmp_path: Path,
) -> None:
    path = tmp_path / "later" / "journal.sqlite"
    with capture_logs() as logs:
        thread = WalCheckpointer(path, 0.02, event="journal.checkpoint_failed")
        thread.start()
        try:
            _until(lambda: sum(e["event"] == "journal.checkpoint_failed" for e in logs) >= 2)
            assert thread.is_alive()  # a failed connect is retried, not the end of the thread
            path.parent.mkdir()
            writer = sqlite3.connect(path, isolation_level=None)
            writer.execute("PRAGMA journal_mode=WAL")
            writer.execute("PRAGMA wal_autocheckpoint=0")  # only the thread copies the WAL
            writer.execute("CREATE TABLE t (x BLOB)")
            size = path.stat().st_size  # before the rows: the thread may copy some while they go in
            for _ in range(50):
                writer.execute("INSERT INTO t VALUES (randomblob(4000))")
            _until(lambda: path.stat().st_size > size + 100_000)
            writer.close()
        finally:
            thread.stop()
    assert not thread.is_alive()


def _wal_header(path: Path) -> tuple[bytes, int]:
    """The WAL's salts (new at every restart of the WAL) and the WAL file's size."""
    wal = path.with_name(path.name + "-wal")
    with wal.open("rb") as f:
        return f.read(32)[16:24], wal.stat().st_size


@pytest.mark.parametrize("synchronous", ["normal", "full"])
def test_checkpoint_when_wal_all_copied_then_thread_restarts_wal_not_the_next_order_commit(
    tmp_path: Path, synchronous: Literal["normal", "full"]
) -> None:
    path = tmp_path / "journal.sqlite"
    with Journal(path, synchronous=synchronous, checkpoint_seconds=3600) as journal:
        journal.record_orders_ahead(orders=[order(1)], signals=signals(1))
        journal.flush()
        # What SQLite does on its own: the first commit after a complete checkpoint restarts
        # the WAL (a new header, fsynced on the order path).
        with sqlite3.connect(path) as con:
            assert con.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()[0] == 0
        before = _wal_header(path)
        journal.record_orders_ahead(orders=[order(2)])
        assert _wal_header(path)[0] != before[0]
        journal.flush()
        # The checkpointer's pass restarts the WAL itself: the next order commit writes no header
        # and overwrites blocks the WAL file already has.
        journal.checkpoint()
        restarted = _wal_header(path)
        assert restarted[0] != before[0]
        journal.record_orders_ahead(orders=[order(3)], signals=signals(3))
        assert _wal_header(path) == restarted
        assert journal.schema_version() == SCHEMA_VERSION
        assert [o for o in journal.load_orders()] == ["VT-1", "VT-2", "VT-3"]


def _wal_file(tmp_path: Path) -> tuple[Path, sqlite3.Connection]:
    """A WAL file with rows in it, none of its pages copied into the database yet, and the
    writer's connection, left open (the last connection to close would delete the WAL)."""
    path = tmp_path / "venue.sqlite"
    writer = sqlite3.connect(path, isolation_level=None)
    writer.execute("PRAGMA journal_mode=WAL")
    writer.execute("PRAGMA wal_autocheckpoint=0")  # only the checkpointer copies the WAL
    writer.execute("CREATE TABLE t (x BLOB)")
    writer.execute("INSERT INTO t VALUES (randomblob(4000))")
    return path, writer


def test_checkpointer_when_it_connects_then_its_chores_never_checkpoint_inline(
    tmp_path: Path,
) -> None:
    seen: list[int] = []
    path, writer = _wal_file(tmp_path)
    thread = WalCheckpointer(
        path,
        3600,
        event="journal.checkpoint_failed",
        chores=lambda con: seen.append(con.execute("PRAGMA wal_autocheckpoint").fetchone()[0]),
    )
    thread.checkpoint_now()
    thread.checkpoint_now()
    writer.close()
    assert seen == [BACKSTOP_PAGES, BACKSTOP_PAGES]  # from the first pass's chores on


def test_restart_when_owner_holds_its_write_lock_then_pass_skips_it_and_next_pass_restarts(
    tmp_path: Path,
) -> None:
    path, writer = _wal_file(tmp_path)
    owner = threading.Lock()
    thread = WalCheckpointer(path, 3600, event="journal.checkpoint_failed", write_lock=owner)
    before = _wal_header(path)
    with owner:  # a batch in flight: the pass must not wait for it (up to `interval` before)
        worker = threading.Thread(target=thread.checkpoint_now)
        worker.start()
        worker.join(timeout=60)
        assert not worker.is_alive(), "the pass waited for the owner's write lock"
        assert _wal_header(path)[0] == before[0]  # checkpointed, WAL not restarted
    thread.checkpoint_now()  # the lock is free now: this pass writes the new header
    assert _wal_header(path)[0] != before[0]
    assert not owner.locked()
    writer.close()


def test_owner_writing_without_pause_when_wal_reaches_final_pass_pages_then_a_pass_restarts_it(
    tmp_path: Path,
) -> None:
    """PASSIVE passes alone never catch up with an owner that writes all the time; the WAL grew
    until SQLite checkpointed all of it inside one of the owner's commits. The final pass under
    the owner's write lock keeps the WAL file (its size: the most frames it ever held) short."""
    path, writer = _wal_file(tmp_path)
    owner = threading.Lock()
    thread = WalCheckpointer(
        path, 0.01, event="journal.checkpoint_failed", write_lock=owner, final_pass_pages=200
    )
    thread.start()
    restarts, salt = 0, _wal_header(path)[0]
    try:
        for _ in range(6_000):  # ~2 pages each: 12,000 pages written
            with owner:
                writer.execute("INSERT INTO t VALUES (randomblob(4000))")
            time.sleep(0)  # let a waiting pass take the lock, as the owner's other work does
            if (now := _wal_header(path)[0]) != salt:
                restarts, salt = restarts + 1, now
    finally:
        thread.stop()
    wal_pages = _wal_header(path)[1] // 4096
    writer.close()
    assert restarts >= 3
    assert wal_pages < 3_000, wal_pages  # not the 12,000 pages written
