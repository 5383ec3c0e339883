"""Finding 5: fatal storage errors stop the daemon with one line naming file and cause, and exit
EXIT_STORAGE, which the systemd unit does not restart on."""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import stat
import subprocess
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest

from daemon.errors import EXIT_STORAGE
from daemon.journal import Journal, JournalError, storage_cause
from strategy.types import Fill, Side
from tests.integration.daemon_process import DaemonProcess, count, wait_for, write_config

T0 = "2024-03-01T14:30:00+00:00"


def _events(log: Path) -> list[dict[str, object]]:
    out = []
    for line in log.read_text(errors="replace").splitlines():
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(event, dict):
            out.append(event)
    return out


def _run_until_exit(tmp_path: Path, state: Path, timeout: float = 120) -> tuple[int, Path]:
    config = write_config(tmp_path / "cfg.yaml", state_dir=state, speed=3000)
    log = tmp_path / "daemon.log"
    code = DaemonProcess(config, log_path=log).wait(timeout=timeout)
    return code, log


def _assert_one_line_storage_failure(log: Path, *, names: str, cause: str) -> None:
    text = log.read_text(errors="replace")
    assert "Traceback" not in text, text[-3000:]
    failures = [e for e in _events(log) if e.get("event") == "storage.failed"]
    assert len(failures) == 1, text[-3000:]
    error = str(failures[0]["error"])
    assert names in error
    assert cause in error
    assert "daemon.crashed" not in text


@pytest.mark.integration
def test_run_when_journal_is_not_a_database_then_exit_storage_naming_file_and_corrupt(
    tmp_path: Path,
) -> None:
    state = tmp_path / "state"
    state.mkdir()
    (state / "journal.sqlite").write_bytes(b"this is not a database" * 100)
    code, log = _run_until_exit(tmp_path, state)
    assert code == EXIT_STORAGE
    _assert_one_line_storage_failure(log, names="journal.sqlite", cause="corrupt")


@pytest.mark.integration
def test_run_when_journal_row_is_corrupt_json_then_exit_storage_naming_table_and_row(
    tmp_path: Path,
) -> None:
    state = tmp_path / "state"
    state.mkdir()
    with Journal(state / "journal.sqlite") as created:
        assert created.counts()["fills"] == 0
    con = sqlite3.connect(state / "journal.sqlite")
    con.execute(
        "INSERT INTO fills (id, fill_id, client_order_id, symbol, side, quantity, price, "
        "commission, ts, data) VALUES (7, 'F', 'C', 'SIM0', 'buy', 1, 1, 0, ?, '{\"fill_id\": [')",
        (T0,),
    )
    con.commit()
    con.close()
    code, log = _run_until_exit(tmp_path, state)
    assert code == EXIT_STORAGE
    _assert_one_line_storage_failure(
        log, names="journal.sqlite", cause="corrupt row 7 in table fills"
    )


@contextlib.contextmanager
def _read_only(directory: Path) -> Iterator[None]:
    """The directory read-only for the daemon: a read-only tmpfs mounted over it as root (root
    writes through file modes), its mode bits otherwise."""
    if os.geteuid() == 0:
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(directory)], check=True
        )
        try:
            yield
        finally:
            subprocess.run(["umount", str(directory)], check=True)
        return
    directory.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        yield
    finally:
        directory.chmod(stat.S_IRWXU)


@pytest.mark.integration
def test_run_when_state_dir_read_only_then_exit_storage(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    with _read_only(state):
        code, log = _run_until_exit(tmp_path, state)
    assert code == EXIT_STORAGE
    _assert_one_line_storage_failure(log, names="journal.sqlite", cause="read-only")


@pytest.mark.integration
def test_run_when_journal_locked_by_another_process_then_exit_storage_naming_pid(
    tmp_path: Path,
) -> None:
    state = tmp_path / "state"
    journal_path = state / "journal.sqlite"
    config = write_config(tmp_path / "cfg.yaml", state_dir=state, speed=600)
    log = tmp_path / "daemon.log"
    daemon = DaemonProcess(config, log_path=log)
    holder: sqlite3.Connection | None = None
    try:
        wait_for(lambda: count(journal_path, "SELECT count(*) FROM signals") > 0, timeout=120)
        holder = sqlite3.connect(journal_path, timeout=10, isolation_level=None)
        holder.execute("BEGIN EXCLUSIVE")  # another process keeps the journal locked > 5 s
        code = daemon.wait(timeout=60)
    finally:
        if holder is not None:
            holder.execute("ROLLBACK")
            holder.close()
        daemon.kill()
    assert code == EXIT_STORAGE
    _assert_one_line_storage_failure(log, names="journal.sqlite", cause=f"pid {os.getpid()}")
    assert any(e.get("event") == "journal.write_failed" for e in _events(log))


@pytest.mark.parametrize(
    ("error", "cause"),
    [
        (sqlite3.OperationalError("database or disk is full"), "disk full"),
        (OSError(28, "No space left on device"), "disk full"),
        (sqlite3.OperationalError("database is locked"), "locked"),
        (sqlite3.OperationalError("attempt to write a readonly database"), "read-only"),
        (sqlite3.DatabaseError("database disk image is malformed"), "corrupt"),
        (sqlite3.DatabaseError("file is not a database"), "corrupt"),
    ],
)
def test_storage_cause_when_sqlite_or_os_error_then_names_what_to_fix(
    tmp_path: Path, error: BaseException, cause: str
) -> None:
    described = storage_cause(error, tmp_path / "journal.sqlite")
    assert described is not None
    assert described.startswith(cause)


def test_record_when_disk_full_then_journal_error_says_disk_full(tmp_path: Path) -> None:
    with Journal(tmp_path / "j.sqlite", checkpoint_seconds=None) as journal:
        con = journal._con
        assert con is not None
        page_count = con.execute("PRAGMA page_count").fetchone()[0]
        con.execute(f"PRAGMA max_page_count = {page_count}")  # the disk has no more room
        fills = [
            Fill(
                fill_id=f"F{i}",
                client_order_id="C-1",
                symbol="SIM0",
                side=Side.BUY,
                quantity=1.0,
                price=100.0,
                commission=0.0,
                ts=datetime.fromisoformat(T0),
            )
            for i in range(500)
        ]
        with pytest.raises(JournalError, match="disk full") as e:
            journal.record(fills=fills)
        assert "\n" not in str(e.value)
        assert journal.last_error is not None


def test_open_when_locked_by_another_journal_then_error_names_pid(tmp_path: Path) -> None:
    with Journal(tmp_path / "j.sqlite"), pytest.raises(JournalError, match=f"pid {os.getpid()}"):
        Journal(tmp_path / "j.sqlite").open()
