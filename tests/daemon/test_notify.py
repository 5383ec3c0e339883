"""systemd notify over a real unix datagram socket."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from daemon.notify import Notifier, watchdog_interval_seconds


def test_notify_when_socket_set_then_ready_watchdog_stopping_arrive_as_datagrams(
    tmp_path: Path,
) -> None:
    path = tmp_path / "notify.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(str(path))
    server.settimeout(2)
    notifier = Notifier(address=str(path))
    try:
        assert notifier.ready(status="trading")
        assert notifier.watchdog()
        assert notifier.stopping()
        received = [server.recv(1024).decode() for _ in range(3)]
    finally:
        notifier.close()
        server.close()
    assert received == ["READY=1\nSTATUS=trading", "WATCHDOG=1", "STOPPING=1"]


def test_notify_when_no_socket_configured_then_calls_are_noops(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    notifier = Notifier()
    assert not notifier.enabled
    assert notifier.ready() is False


def test_notify_when_socket_vanished_then_failure_is_reported_not_raised(tmp_path: Path) -> None:
    notifier = Notifier(address=str(tmp_path / "gone.sock"))
    assert notifier.watchdog() is False


def test_watchdog_interval_when_usec_set_then_half_of_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    assert watchdog_interval_seconds() == 15.0


def test_watchdog_interval_when_meant_for_another_pid_then_none(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    monkeypatch.setenv("WATCHDOG_PID", "1")
    assert watchdog_interval_seconds() is None


def test_watchdog_interval_when_garbage_then_none(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "soon")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    assert watchdog_interval_seconds() is None
