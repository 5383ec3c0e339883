"""`vlmtrader tail`: filters and readable lines from JSON logs."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path

import pytest
import structlog

from daemon.cli import main
from daemon.cli.tail import format_record, matches
from daemon.log_setup import configure_logging

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
    assert len(out) == 1  # the order line; the non-JSON line has no event to match
    assert "order.submitted" in out[0]


def test_tail_when_no_filter_then_non_json_line_shown_as_it_is(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = tmp_path / "daemon.log"
    log.write_text("\n".join([json.dumps(RECORDS[0]), "not json at all"]) + "\n")
    assert main(["tail", "--no-follow", "--color", "never", str(log)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[1] == "not json at all"


def test_tail_when_library_lines_logged_as_json_then_event_and_level_filters_apply(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    buf = io.StringIO()
    configure_logging(fmt="json", stream=buf)
    try:
        logging.getLogger("ib_async.client").error("Peer closed connection.")
        logging.getLogger("aiomqtt").warning("Disconnected %s", "broker")
        structlog.get_logger("daemon.test").info("order.submitted", symbol="AAPL")
    finally:
        configure_logging(fmt="json")
    lines = [json.loads(line) for line in buf.getvalue().splitlines()]
    assert [(r["event"], r.get("logger"), r.get("message")) for r in lines] == [
        ("library.logged", "ib_async.client", "Peer closed connection."),
        ("library.logged", "aiomqtt", "Disconnected broker"),
        ("order.submitted", None, None),
    ]
    log = tmp_path / "daemon.log"
    log.write_text(buf.getvalue())
    assert main(["tail", "--no-follow", "--color", "never", "--event", "order.", str(log)]) == 0
    assert [line.split()[2] for line in capsys.readouterr().out.splitlines()] == ["order.submitted"]
    assert main(["tail", "--no-follow", "--color", "never", "--level", "error", str(log)]) == 0
    assert "Peer closed connection." in capsys.readouterr().out


def test_tail_when_file_missing_then_exit_two_with_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["tail", "--no-follow", str(tmp_path / "absent.log")]) == 2
    assert "no such log file" in capsys.readouterr().err
