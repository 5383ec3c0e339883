"""`vlmtrader tail`: filters and readable lines from JSON logs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from daemon.cli import main
from daemon.cli_tail import format_record, matches

RECORDS = [
    {
        "event": "order.submitted",
        "level": "info",
        "symbol": "AAPL",
        "timestamp": "2026-01-05T14:31:00.123Z",
        "quantity": 10,
    },
    {
        "event": "risk.rejected",
        "level": "info",
        "symbol": "MSFT",
        "timestamp": "2026-01-05T14:31:00.200Z",
        "reason": "max_drawdown",
    },
    {
        "event": "daemon.crashed",
        "level": "error",
        "timestamp": "2026-01-05T14:32:00.000Z",
        "error": "boom here",
    },
]


def test_matches_when_filters_given_then_only_matching_records_pass() -> None:
    assert [
        r["event"] for r in RECORDS if matches(r, symbol="AAPL", event=None, level="debug")
    ] == ["order.submitted"]
    assert [
        r["event"] for r in RECORDS if matches(r, symbol=None, event="risk.", level="debug")
    ] == ["risk.rejected"]
    assert [r["event"] for r in RECORDS if matches(r, symbol=None, event=None, level="error")] == [
        "daemon.crashed"
    ]


def test_format_when_plain_then_time_level_event_and_fields() -> None:
    line = format_record(RECORDS[2], colour=False)
    assert line.startswith("14:32:00.000 erro daemon.crashed")
    assert 'error="boom here"' in line
    assert "\x1b[" not in line
    assert "\x1b[" in format_record(RECORDS[2], colour=True)


def test_tail_when_file_given_without_follow_then_prints_filtered_lines(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = tmp_path / "daemon.log"
    log.write_text("\n".join([*map(json.dumps, RECORDS), "not json at all"]) + "\n")
    assert main(["tail", "--no-follow", "--color", "never", "--event", "order.", str(log)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 2  # the order line, and the non-JSON line shown as it is
    assert "order.submitted" in out[0]
    assert out[1] == "not json at all"


def test_tail_when_file_missing_then_exit_two_with_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["tail", "--no-follow", str(tmp_path / "absent.log")]) == 2
    assert "no such log file" in capsys.readouterr().err
