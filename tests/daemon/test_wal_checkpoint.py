from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from structlog.testing import capture_logs

from daemon.wal_checkpoint import WalCheckpointer


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
