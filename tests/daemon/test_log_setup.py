"""The console log: symbol first, prices rounded; JSON lines keep every field whole."""

from __future__ import annotations

import io
import json
import re
import sys

import pytest
import structlog

from daemon.log_setup import configure_logging, console_fields, readable_float


def test_console_fields_when_symbol_and_long_floats_then_symbol_first_and_rounded() -> None:
    fields = console_fields(
        None,
        "info",
        {"event": "order.filled", "qty": 10, "price": 95.37744919475492, "symbol": "SPY"},
    )
    assert list(fields) == ["symbol", "event", "price", "qty"]
    assert fields["price"] == 95.3774
    assert fields["qty"] == 10
    assert readable_float(100123.456789) == 100123.4568
    assert readable_float(0.000123456) == 0.0001235
    assert readable_float(0.0) == 0.0


def test_configure_logging_when_console_then_symbol_leads_and_json_keeps_full_price() -> None:
    console, lines = io.StringIO(), io.StringIO()
    configure_logging(fmt="console", stream=console)
    structlog.get_logger("daemon.test").info(
        "order.filled", qty=10, price=95.37744919475492, symbol="SPY"
    )
    configure_logging(fmt="json", stream=lines)
    structlog.get_logger("daemon.test").info("order.filled", price=95.37744919475492, symbol="SPY")
    text = re.sub(r"\x1b\[[0-9;]*m", "", console.getvalue())  # without the colours
    assert "order.filled" in text
    assert text.index("symbol=SPY") < text.index("price=95.3774") < text.index("qty=10")
    assert "95.37744919475492" not in text
    assert json.loads(lines.getvalue())["price"] == 95.37744919475492


def test_configure_logging_when_to_stderr_and_stderr_replaced_then_cached_logger_follows(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A command that logs to stderr (its stdout is the output) must not pin a cached logger to
    the stderr of the moment: a test's captured stream is closed after it, and the next line
    written there raised 'I/O operation on closed file' in every later test."""
    first, second = io.StringIO(), io.StringIO()
    monkeypatch.setattr(sys, "stderr", first)
    configure_logging(fmt="json", to="stderr")
    log = structlog.get_logger("daemon.test.stderr")
    log.warning("first.line")
    first.close()
    monkeypatch.setattr(sys, "stderr", second)
    log.warning("second.line")
    assert json.loads(second.getvalue())["event"] == "second.line"
