"""The journal's single-writer lock (an flock on `<journal>.lock`) and what an operator must fix
when SQLite or the OS refuses a write."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import time
from pathlib import Path
from typing import IO

from daemon.journal_schema import JournalError


def storage_cause(error: BaseException, path: Path) -> str | None:
    """What an operator must fix, from SQLite's or the OS's error: disk full, locked (by whom),
    read-only or corrupt; None when the error says nothing of the kind."""
    text = str(error).lower()
    code = getattr(error, "sqlite_errorcode", None)
    if "disk is full" in text or getattr(error, "errno", None) == errno.ENOSPC or code == 13:
        return f"disk full ({error})"
    if "locked" in text or "busy" in text or code in (5, 6):
        holders = lock_holders(path)
        by = f" by pid {', '.join(map(str, holders))}" if holders else " by another process"
        return f"locked{by} for longer than the 5 s busy timeout ({error})"
    if "readonly" in text or "read-only" in text or code == 8:
        return f"read-only: the journal or its directory cannot be written ({error})"
    if "malformed" in text or "not a database" in text or code in (11, 26):
        return f"corrupt database file ({error}); restore it from a backup or move it away"
    return None


def lock_holders(path: Path) -> list[int]:
    """PIDs (other than ours) holding POSIX or flock locks on the journal or its -shm, from /proc/locks."""
    inodes = set()
    for candidate in (path, path.with_name(path.name + "-shm")):
        with contextlib.suppress(OSError):
            st = candidate.stat()
            inodes.add((os.major(st.st_dev), os.minor(st.st_dev), st.st_ino))
    pids: set[int] = set()
    try:
        lines = Path("/proc/locks").read_text().splitlines()
    except OSError:
        return []
    for line in lines:
        fields = line.split()
        if len(fields) < 6 or fields[1] == "->":
            continue
        with contextlib.suppress(ValueError):
            major, minor, inode = fields[5].split(":")
            key = (int(major, 16), int(minor, 16), int(inode))
            pid = int(fields[4])
            if key in inodes and pid != os.getpid():
                pids.add(pid)
    return sorted(pids)


def _lock_file_pid(lock_path: Path) -> int | None:
    with contextlib.suppress(OSError, ValueError):
        return int(lock_path.read_text().strip() or "0") or None
    return None


# How long a journal whose lock holder has died waits for the holder's writer process
# (daemon/journal_process.py) to see its parent gone and exit.
ORPHAN_WAIT_SECONDS = 2.0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def take_lock(path: Path) -> IO[bytes]:
    """The single-writer lock of the journal at `path`; JournalError names the holder's pid."""
    lock_path = path.with_name(path.name + ".lock")
    try:
        f = lock_path.open("ab")
    except OSError as e:
        cause = "read-only" if e.errno in (errno.EROFS, errno.EACCES, errno.EPERM) else ""
        msg = (
            f"journal {path}: cannot create lock file {lock_path} "
            f"({cause + ': ' if cause else ''}{e.strerror})"
        )
        raise JournalError(msg) from None
    deadline = time.monotonic() + ORPHAN_WAIT_SECONDS
    while True:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except OSError:
            holder = _lock_file_pid(lock_path)
            # The holder died; its journal writer process (which shares the lock) is ending.
            if holder is not None and not _alive(holder) and time.monotonic() < deadline:
                time.sleep(0.01)
                continue
        f.close()
        holder = _lock_file_pid(lock_path)
        by = f"another process (pid {holder})" if holder else "another process"
        msg = f"journal {path}: in use by {by} (lock {lock_path})"
        raise JournalError(msg) from None
    with contextlib.suppress(OSError):  # who holds it, for the next one's error message
        os.truncate(f.fileno(), 0)
        os.write(f.fileno(), f"{os.getpid()}\n".encode())
    return f
