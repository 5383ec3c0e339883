"""A background WAL checkpoint for a SQLite file written on the bar-to-order path.

SQLite otherwise checkpoints inside whichever commit pushes the WAL past 1000 pages, and that
commit pays for copying the WAL and an fsync: a multi-millisecond stall on the order path. The
writer raises its own autocheckpoint to a backstop (BACKSTOP_PAGES) and this thread checkpoints
PASSIVE-ly every `interval` seconds on its own connection, never blocking the writer.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import structlog

log = structlog.get_logger("daemon.wal_checkpoint")

BACKSTOP_PAGES = 20_000  # ~80 MB of WAL: SQLite checkpoints inline only past this


class WalCheckpointer(threading.Thread):
    """Copies the WAL into the database off the hot path, so no commit waits for a checkpoint's fsync."""

    def __init__(self, path: Path, interval: float, *, event: str) -> None:
        super().__init__(name=f"wal-checkpoint:{path.name}", daemon=True)
        self.path = path
        self.interval = interval
        self.event = event  # the failure log line, e.g. "journal.checkpoint_failed"
        self._stopped = threading.Event()

    def run(self) -> None:
        # Self-supervising: a failed connect or checkpoint is logged and retried at the next
        # interval (the writer's backstop autocheckpoint covers the time in between).
        con: sqlite3.Connection | None = None
        try:
            while not self._stopped.wait(self.interval):
                try:
                    if con is None:
                        con = sqlite3.connect(self.path, isolation_level=None, timeout=1.0)
                    _, wal_pages, _ = con.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                    if wal_pages == -1:
                        # Not in WAL mode as this connection sees it (it opened the file before
                        # the writer switched it to WAL): a later connection will see the WAL.
                        con.close()
                        con = None
                except sqlite3.Error as e:
                    log.warning(self.event, path=str(self.path), error=str(e))
        finally:
            if con is not None:
                con.close()

    def stop(self) -> None:
        self._stopped.set()
        self.join(timeout=10)
