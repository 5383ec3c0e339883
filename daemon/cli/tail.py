"""`vlmtrader tail`: follow a JSON log (file or stdin) and print it readably, with colours on a TTY."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

_LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40, "critical": 50}
_COLOURS = {
    "debug": "\x1b[2m",
    "info": "\x1b[32m",
    "warning": "\x1b[33m",
    "error": "\x1b[31m",
    "critical": "\x1b[1;31m",
}
_RESET = "\x1b[0m"
_BOLD = "\x1b[1m"
_SKIP = ("event", "level", "timestamp")


def register(sub: Any) -> None:
    p = sub.add_parser("tail", help="follow a JSON log readably (file, or - for stdin)")
    p.add_argument(
        "file", nargs="?", default="-", help="log file, or - for stdin (journalctl -o cat -f)"
    )
    p.add_argument("--symbol", help="only events about this symbol")
    p.add_argument(
        "--event", help="only events whose name starts with this (e.g. order. or risk.rejected)"
    )
    p.add_argument("--level", choices=list(_LEVELS), default="debug", help="minimum level")
    p.add_argument("--no-follow", action="store_true", help="print what is there and exit")
    p.add_argument("--color", choices=["auto", "always", "never"], default="auto")
    p.set_defaults(func=_tail)


def matches(record: dict[str, Any], *, symbol: str | None, event: str | None, level: str) -> bool:
    """True when a log record passes the filters."""
    if symbol is not None and record.get("symbol") != symbol:
        return False
    if event is not None and not str(record.get("event", "")).startswith(event):
        return False
    return _LEVELS.get(str(record.get("level", "info")), 20) >= _LEVELS[level]


def format_record(record: dict[str, Any], *, colour: bool) -> str:
    """One readable line: time, level, event, then key=value pairs."""
    level = str(record.get("level", "info"))
    ts = str(record.get("timestamp", ""))[11:23]
    name = str(record.get("event", ""))
    fields = " ".join(f"{k}={_value(v)}" for k, v in record.items() if k not in _SKIP)
    if colour:
        c = _COLOURS.get(level, "")
        return f"\x1b[2m{ts}{_RESET} {c}{level[:4]:<4}{_RESET} {_BOLD}{name:<24}{_RESET} {fields}"
    return f"{ts} {level[:4]:<4} {name:<24} {fields}"


def _value(v: object) -> str:
    if isinstance(v, str):
        return v if v and " " not in v else json.dumps(v)
    return json.dumps(v, separators=(",", ":"))


def _record(text: str) -> dict[str, Any] | None:
    try:
        record = json.loads(text)
    except json.JSONDecodeError:
        return None
    return record if isinstance(record, dict) else None


def _lines(stream: IO[str], *, follow: bool) -> Iterator[str]:
    while True:
        line = stream.readline()
        if line:
            yield line
        elif follow:
            time.sleep(0.2)
        else:
            return


def _tail(args: argparse.Namespace) -> int:
    colour = args.color == "always" or (args.color == "auto" and sys.stdout.isatty())
    if args.file == "-":
        stream: IO[str] = sys.stdin
        follow = False  # stdin ends when the writer does
    else:
        path = Path(args.file)
        if not path.exists():
            print(f"error: {path}: no such log file", file=sys.stderr)
            return 2
        stream = path.open(encoding="utf-8", errors="replace")
        follow = not args.no_follow
    try:
        for line in _lines(stream, follow=follow):
            text = line.strip()
            if not text:
                continue
            record = _record(text)
            if record is None:
                # Not one of our JSON lines: it has no event, symbol or level, so any filter drops it.
                if args.symbol is None and args.event is None and args.level == "debug":
                    print(text, flush=True)
                continue
            if matches(record, symbol=args.symbol, event=args.event, level=args.level):
                print(format_record(record, colour=colour), flush=True)
    except KeyboardInterrupt:
        return 0
    finally:
        if stream is not sys.stdin:
            stream.close()
    return 0
