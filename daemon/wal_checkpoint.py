"""A background WAL checkpoint for a SQLite file written on the bar-to-order path.

SQLite otherwise checkpoints inside whichever commit pushes the WAL past 1000 pages, and that
commit pays for copying the WAL and an fsync: a multi-millisecond stall on the order path. The
writer raises its own autocheckpoint to a backstop (BACKSTOP_PAGES) and this thread checkpoints
PASSIVE-ly every `interval` seconds on its own connection, never blocking the writer.

Once a checkpoint has copied the whole WAL, the next write starts the WAL over from its beginning
and first fsyncs the new WAL header (any synchronous mode but OFF): left to itself, that is the
next batch's commit, which then pays two fsyncs under FULL (one under NORMAL, where it would pay
none). So this thread makes that first write itself: an unchanged `PRAGMA user_version` (one
page, no row or value changes), under the owner's write lock so that it never makes a writer
on the order path wait in SQLite's busy handler. The WAL file is never truncated
(no journal_size_limit), so every later commit overwrites blocks the file already has: its
fdatasync does not have to write the file's size.

A PASSIVE pass never waits for the owner, so while the owner writes without pause (a backtest
replaying bars into the live journal) no pass copies the whole WAL: new frames land while it
copies. The WAL then grew to the backstop, and SQLite checkpointed all of it inside one of the
owner's commits (17-66 ms, an order commit among them). So once the WAL holds FINAL_PASS_PAGES,
a pass copies the bulk PASSIVE-ly first, then takes the owner's write lock for a second pass over
the few frames written meanwhile and restarts the WAL under it: the owner waits for those frames
and one fsync, once per FINAL_PASS_PAGES pages.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path

import structlog

from daemon.runtime import ORDER_PATH_GATE
from vlm_engine.thread_policy import lower_calling_thread

log = structlog.get_logger("daemon.wal_checkpoint")

BACKSTOP_PAGES = 20_000  # ~80 MB of WAL: SQLite checkpoints inline only past this
FINAL_PASS_PAGES = 4_000  # a WAL this long is finished under the owner's write lock (~16 MB)
# A pass waits while a batch is on its way to the broker (daemon.runtime.ORDER_PATH_GATE: tens of
# milliseconds), at most this long: a hold that was never released delays passes, never stops them.
MAX_DEFER_SECONDS = 5.0


class WalCheckpointer(threading.Thread):
    """Copies the WAL into the database off the hot path, so no commit waits for a checkpoint's
    fsync, and restarts the WAL itself so no commit waits for the new header's fsync either.
    write_lock: the lock the owner holds around its own writes (None: the owner has none).
    chores: the owner's own upkeep, run on this thread's connection at the start of each pass
    (the paper venue folds its log there); its sqlite3 errors are logged like the checkpoint's."""

    def __init__(
        self,
        path: Path,
        interval: float,
        *,
        event: str,
        write_lock: threading.Lock | None = None,
        chores: Callable[[sqlite3.Connection], None] | None = None,
        final_pass_pages: int = FINAL_PASS_PAGES,
    ) -> None:
        super().__init__(name=f"wal-checkpoint:{path.name}", daemon=True)
        self.path = path
        self.interval = interval
        self.event = event  # the failure log line, e.g. "journal.checkpoint_failed"
        self.write_lock = write_lock
        self.chores = chores
        self.final_pass_pages = final_pass_pages
        self._stopped = threading.Event()
        self._con: sqlite3.Connection | None = None
        self._running = threading.Lock()  # the thread's pass and checkpoint_now() take turns

    def run(self) -> None:
        # Self-supervising: a failed connect or checkpoint is logged and retried at the next
        # interval (the writer's backstop autocheckpoint covers the time in between).
        lower_calling_thread()  # nothing an order waits for: the batch's threads come first
        try:
            while not self._stopped.wait(self.interval):
                ORDER_PATH_GATE.wait_idle(MAX_DEFER_SECONDS)  # not while an order is in flight
                if self._stopped.is_set():
                    break
                self.checkpoint_now()
        finally:
            with self._running:
                con, self._con = self._con, None
                if con is not None:
                    con.close()

    def checkpoint_now(self) -> None:
        """One pass, on the calling thread: what the thread does every interval (a bench calls it
        to stand for the gap between live bars). Failures are logged, never raised."""
        with self._running:
            try:
                con = self._con
                if con is None:
                    con = self._con = sqlite3.connect(
                        self.path, isolation_level=None, timeout=1.0, check_same_thread=False
                    )
                    con.execute("PRAGMA synchronous=NORMAL")  # the restart's commit: no fsync
                    # The owner's chores commit on this connection under its write lock: left at
                    # SQLite's default (1000 pages) one of those commits would checkpoint inline,
                    # a copy of the WAL and an fsync the order path waits for. Set once, here.
                    con.execute(f"PRAGMA wal_autocheckpoint={BACKSTOP_PAGES}")
                if self.chores is not None:
                    self.chores(con)
                busy, wal_pages, copied = con.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                if wal_pages == -1:
                    # Not in WAL mode as this connection sees it (it opened the file before
                    # the writer switched it to WAL): a later connection will see the WAL.
                    con.close()
                    self._con = None
                elif wal_pages >= self.final_pass_pages and self.write_lock is not None:
                    with self.write_lock:  # the owner's writes wait for the frames left
                        busy, wal_pages, copied = con.execute(
                            "PRAGMA wal_checkpoint(PASSIVE)"
                        ).fetchone()
                        if busy == 0 and copied == wal_pages:
                            self._write_first_frame(con)
                elif busy == 0 and wal_pages > 0 and copied == wal_pages:
                    self._restart_wal(con)
            except sqlite3.Error as e:
                log.warning(self.event, path=str(self.path), error=str(e))

    def _restart_wal(self, con: sqlite3.Connection) -> None:
        """The first write after a complete checkpoint (it writes and fsyncs the new WAL header);
        skipped when the owner is busy writing (its lock is not free at once): waiting would hold
        the owner's next batch behind this commit's fsync of the new header. The owner's commit
        then starts the WAL over, as before, or the next pass tries again."""
        lock = self.write_lock
        if lock is not None and not lock.acquire(blocking=False):
            return
        try:
            self._write_first_frame(con)
        finally:
            if lock is not None:
                lock.release()

    @staticmethod
    def _write_first_frame(con: sqlite3.Connection) -> None:
        """An unchanged user_version committed: the write that starts a fully copied WAL over
        (called with the owner's write lock held, when it has one)."""
        con.execute("PRAGMA busy_timeout = 0")  # never wait holding the owner's lock
        try:
            con.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as e:
            if e.sqlite_errorcode != sqlite3.SQLITE_BUSY:
                raise
            return  # another writer (not the owner): it starts the WAL over, as before
        finally:
            con.execute("PRAGMA busy_timeout = 1000")
        try:
            version = int(con.execute("PRAGMA user_version").fetchone()[0])
            con.execute(f"PRAGMA user_version = {version}")
            con.execute("COMMIT")
        except BaseException:
            if con.in_transaction:
                con.execute("ROLLBACK")
            raise

    def stop(self) -> None:
        self._stopped.set()
        self.join(timeout=10)
