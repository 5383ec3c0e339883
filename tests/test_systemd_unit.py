"""The shipped unit file: verified by systemd-analyze, and shaped the way the daemon expects."""

from __future__ import annotations

import configparser
import shutil
import subprocess
from pathlib import Path

import pytest

UNIT = Path(__file__).resolve().parents[1] / "systemd" / "vlmtrader.service"


def unit() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(UNIT)
    return parser


def test_unit_when_read_then_notify_watchdog_restart_and_sandboxing_are_set() -> None:
    service = unit()["Service"]
    assert service["Type"] == "notify"
    assert int(service["WatchdogSec"].rstrip("s")) > 0
    assert service["Restart"] == "on-failure"
    assert service["User"] == "vlmtrader"
    assert service["StateDirectory"]
    assert service["ProtectSystem"] == "strict"
    assert service["NoNewPrivileges"] in ("yes", "true")
    assert service["PrivateTmp"] in ("yes", "true")
    assert "--state-dir" in service["ExecStart"]


@pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed"
)
def test_unit_when_verified_by_systemd_analyze_then_no_errors(tmp_path: Path) -> None:
    # verify resolves ExecStart; point it at a real executable so only the unit's own content is judged.
    text = UNIT.read_text()
    exec_line = next(line for line in text.splitlines() if line.startswith("ExecStart="))
    binary = exec_line.split("=", 1)[1].split()[0]
    copy = tmp_path / "vlmtrader.service"
    copy.write_text(text.replace(binary, shutil.which("true") or "/bin/true"))
    result = subprocess.run(
        ["systemd-analyze", "verify", str(copy)], capture_output=True, text=True, check=False
    )
    problems = [
        line
        for line in result.stderr.splitlines()
        if "vlmtrader.service" in line and "Failed to" not in line.split(":", 1)[0]
    ]
    assert result.returncode == 0, result.stderr
    assert problems == [], result.stderr


def test_unit_when_read_then_config_and_storage_exits_are_not_restarted() -> None:
    from daemon.errors import EXIT_CONFIG, EXIT_STORAGE

    prevented = unit()["Service"]["RestartPreventExitStatus"].split()
    assert str(EXIT_STORAGE) in prevented
    assert str(EXIT_CONFIG) in prevented
    assert EXIT_STORAGE not in (0, 1, EXIT_CONFIG)
