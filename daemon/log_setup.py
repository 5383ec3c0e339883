"""structlog set-up: JSON lines when not on a terminal, readable colours on one; sinks tap every event."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, MutableMapping
from typing import Any, Literal, TextIO

import structlog

EventSink = Callable[[str, MutableMapping[str, Any]], None]
_sinks: list[EventSink] = []


def add_event_sink(sink: EventSink) -> None:
    """Register a callable that sees every emitted event (name, fields); it must not block."""
    _sinks.append(sink)


def remove_event_sink(sink: EventSink) -> None:
    if sink in _sinks:
        _sinks.remove(sink)


def _tap(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """Hand each event to the registered sinks (MQTT publisher, metrics) before rendering."""
    if _sinks:
        name = str(event_dict.get("event", ""))
        for sink in tuple(_sinks):
            sink(name, event_dict)
    return event_dict


def configure_logging(
    *,
    level: str = "info",
    fmt: Literal["auto", "json", "console"] = "auto",
    stream: TextIO | None = None,
) -> None:
    """Configure structlog once per process; JSON unless `fmt` or a TTY says otherwise."""
    out = stream if stream is not None else sys.stdout
    use_console = fmt == "console" or (fmt == "auto" and out.isatty())
    # Without an explicit stream, write to whatever sys.stdout is at the time of each line, so a
    # cached logger never holds on to a stream that was replaced (and closed) since.
    factory: Any = (
        structlog.PrintLoggerFactory(file=stream) if stream is not None else _StdoutLoggerFactory()
    )
    renderer: Any
    if use_console:
        renderer = structlog.dev.ConsoleRenderer(colors=True)
    else:
        renderer = structlog.processors.JSONRenderer()
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _tap,
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=factory,
        cache_logger_on_first_use=True,
    )


class _StdoutLogger:
    """structlog's PrintLogger, but resolving sys.stdout on every line."""

    def msg(self, message: str) -> None:
        out = sys.stdout
        out.write(message + "\n")
        out.flush()

    log = debug = info = warn = warning = err = error = critical = exception = fatal = msg


class _StdoutLoggerFactory:
    def __call__(self, *args: Any) -> _StdoutLogger:
        return _StdoutLogger()
