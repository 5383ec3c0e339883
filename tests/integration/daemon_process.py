"""Start `vlmtrader run` as a real subprocess with a fake NOTIFY_SOCKET, and read its journal."""

from __future__ import annotations

import contextlib
import os
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]


def write_config(
    path: Path,
    *,
    state_dir: Path,
    speed: float = 600.0,
    symbols: int = 4,
    extra: dict[str, Any] | None = None,
) -> Path:
    """A small accelerated paper-sim config; `extra` is merged on top (one level deep)."""
    cfg: dict[str, Any] = {
        "mode": "paper-sim",
        "account": "test",
        "state_dir": str(state_dir),
        "log": {"level": "info", "format": "json"},
        "feed": {
            "kind": "sim",
            "sim": {
                "speed": speed,
                "market": {
                    "symbols": [f"SIM{i}" for i in range(symbols)],
                    "bar_seconds": 60,
                    "seed": 11,
                    "pattern_rate": 0.05,
                },
            },
        },
        "bars": {"window": 32, "bar_seconds": 60},
        "strategy": {"hold_bars": 3, "position_notional": 5000},
        "journal": {"synchronous": "full"},
    }
    for key, value in (extra or {}).items():
        if isinstance(value, dict) and isinstance(cfg.get(key), dict):
            cfg[key] = {**cfg[key], **value}
        else:
            cfg[key] = value
    path.write_text(yaml.safe_dump(cfg))
    return path


class NotifySocket:
    """A unix datagram socket standing in for systemd's notify socket."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.messages: list[str] = []
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(str(path))
        self._sock.settimeout(0.2)
        self._stop = False
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._stop:
            try:
                data = self._sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            self.messages.extend(data.decode().splitlines())

    def seen(self, line: str) -> bool:
        return line in list(self.messages)

    def close(self) -> None:
        self._stop = True
        self._thread.join(timeout=2)
        self._sock.close()


class DaemonProcess:
    """`vlmtrader run` in a subprocess; logs go to a file so tests can read them."""

    def __init__(
        self,
        config: Path,
        *,
        log_path: Path,
        env: dict[str, str] | None = None,
        args: tuple[str, ...] = (),
    ) -> None:
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.log_path = log_path
        self._log = log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "daemon.cli", "run", "--config", str(config), *args],
            cwd=REPO,
            env=full_env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def wait(self, timeout: float = 60) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        finally:
            self._log.close()

    def terminate(self, timeout: float = 60) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
        return self.wait(timeout)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=30)
        self._log.close()

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")


def wait_for(
    predicate: Callable[[], bool], *, timeout: float = 90, what: str = "condition"
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    msg = f"timed out after {timeout}s waiting for {what}"
    raise AssertionError(msg)


@contextlib.contextmanager
def read_db(path: Path) -> Iterator[sqlite3.Connection]:
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
    con.row_factory = sqlite3.Row
    try:
        yield con
    finally:
        con.close()


def count(path: Path, sql: str) -> int:
    if not path.exists():
        return 0
    try:
        with read_db(path) as con:
            return int(con.execute(sql).fetchone()[0])
    except sqlite3.OperationalError:
        return 0
