"""structlog set-up: JSON lines when not on a terminal, readable colours on one; sinks tap every event.

Third-party libraries log through the standard library (ib_async, aiomqtt, uvicorn): the root
logger gets one handler whose structlog ProcessorFormatter renders their records like our own
lines, as event `library.logged` with the library's `logger` name and its `message`, so a JSON log
holds nothing but JSON and `vlmtrader tail` filters apply to every line.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, MutableMapping
from typing import Any, Literal, TextIO

import structlog

EventSink = Callable[[str, MutableMapping[str, Any]], None]
_sinks: list[EventSink] = []
# The level in force: a reload (SIGHUP) changes it on loggers already bound (set_log_level).
_level = [logging.INFO]


def _level_number(level: str) -> int:
    return logging.getLevelNamesMapping()[level.upper()]


_METHOD_LEVELS = {**{k.lower(): v for k, v in logging.getLevelNamesMapping().items()},
                  "exception": logging.ERROR}  # fmt: skip


def _drop_below_level(
    _logger: Any, method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    if _METHOD_LEVELS.get(method, logging.CRITICAL) < _level[0]:
        raise structlog.DropEvent
    return event_dict


def set_log_level(level: str) -> None:
    """Change the level of our events and of the libraries' records in a running process."""
    _level[0] = _level_number(level)
    logging.getLogger().setLevel(max(logging.INFO, _level[0]))


def add_event_sink(sink: EventSink) -> None:
    """Register a callable that sees every emitted event (name, fields); it must not block."""
    _sinks.append(sink)


def remove_event_sink(sink: EventSink) -> None:
    if sink in _sinks:
        _sinks.remove(sink)


def event_sinks() -> tuple[EventSink, ...]:
    """The callables registered with add_event_sink, in order."""
    return tuple(_sinks)


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
    to: Literal["stdout", "stderr"] = "stdout",
) -> None:
    """Configure structlog once per process; JSON unless `fmt` or a TTY says otherwise. Lines go
    to `stream`, else to the standard stream named by `to` (stderr when stdout is a command's
    output)."""
    out = stream if stream is not None else getattr(sys, to)
    use_console = fmt == "console" or (fmt == "auto" and out.isatty())
    # Without an explicit stream, write to whatever sys.stdout/stderr is at the time of each line,
    # so a cached logger never holds on to a stream that was replaced (and closed) since.
    factory: Any = (
        structlog.PrintLoggerFactory(file=stream) if stream is not None else _StdLoggerFactory(to)
    )
    renderer: Any
    readable: list[Any] = []
    if use_console:
        renderer = structlog.dev.ConsoleRenderer(colors=True, sort_keys=False)
        readable = [console_fields]
    else:
        renderer = structlog.processors.JSONRenderer()
    _route_stdlib(renderer, level=level, stream=stream, to=to)
    _level[0] = _level_number(level)
    structlog.configure(
        processors=[
            _drop_below_level,
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _tap,
            structlog.processors.format_exc_info,
            *readable,
            renderer,
        ],
        # Loggers are cached on first use: the level is checked by _drop_below_level, so that
        # set_log_level reaches them too.
        wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG),
        logger_factory=factory,
        cache_logger_on_first_use=True,
    )


def readable_float(value: float) -> float:
    """4 decimals from 1 up (price=95.3774, equity=100123.45), 4 significant digits below (0.0001235)."""
    return round(value, 4) if abs(value) >= 1 or value == 0 else float(f"{value:.4g}")


def console_fields(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """For a human at a terminal: `symbol` first, the other fields sorted, floats rounded
    (readable_float: price=95.3774, not 95.37744919475492). JSON lines keep them whole."""
    fields: dict[str, Any] = {}
    if "symbol" in event_dict:
        fields["symbol"] = event_dict["symbol"]
    for key in sorted(event_dict):
        value = event_dict[key]
        if key != "symbol":
            fields[key] = readable_float(value) if type(value) is float else value
    return fields


def _library_event(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """A stdlib record as one of our events: library.logged, its logger name and message."""
    record = event_dict.get("_record")
    event_dict["message"] = str(event_dict.get("event", ""))
    event_dict["event"] = "library.logged"
    if record is not None:
        event_dict["logger"] = record.name
    return event_dict


class _LibraryHandler(logging.Handler):
    """Writes each record to `stream`, or to whatever sys.<to> is at the time of the record.

    A stream closed under us (a test's captured stdout) loses the line silently: reporting it
    through logging again would only recurse."""

    def __init__(self, stream: TextIO | None, to: str = "stdout") -> None:
        super().__init__()
        self._fixed = stream
        self._to = to

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
            out = self._fixed if self._fixed is not None else getattr(sys, self._to)
            out.write(line + "\n")
            out.flush()
        except (ValueError, OSError):
            pass


def _route_stdlib(renderer: Any, *, level: str, stream: TextIO | None, to: str = "stdout") -> None:
    """Send every stdlib logger's records through structlog's renderer (replacing our old handler)."""
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[
            structlog.stdlib.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _library_event,
        ],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            renderer,
        ],
        keep_exc_info=False,
    )
    handler = _LibraryHandler(stream, to)
    handler.setFormatter(formatter)
    handler.set_name(_HANDLER_NAME)
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == _HANDLER_NAME]:
        root.removeHandler(old)
    root.addHandler(handler)
    # Libraries are chatty at debug: they get info at the most verbose.
    root.setLevel(max(logging.INFO, logging.getLevelNamesMapping()[level.upper()]))


_HANDLER_NAME = "vlmtrader-structlog"


class _StdLogger:
    """structlog's PrintLogger, but resolving sys.stdout (or sys.stderr) on every line."""

    def __init__(self, to: str) -> None:
        self._to = to

    def msg(self, message: str) -> None:
        out = getattr(sys, self._to)
        out.write(message + "\n")
        out.flush()

    log = debug = info = warn = warning = err = error = critical = exception = fatal = msg


class _StdLoggerFactory:
    def __init__(self, to: str) -> None:
        self._to = to

    def __call__(self, *args: Any) -> _StdLogger:
        return _StdLogger(self._to)
