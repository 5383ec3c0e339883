"""When a contract trades, from IB's contract details (tradingHours / liquidHours + timeZoneId).

IB sends a few days of sessions as text, in the exchange's time zone, in one of two formats:

    20180323:0400-20180323:2000;20180326:0400-20180326:2000;20180324:CLOSED   (TWS >= 970)
    20090507:0700-1830,1830-2330;20090508:CLOSED                              (older)

MarketHours turns that into UTC intervals. Anything it cannot read (an empty field, an unknown
time zone, a malformed session) makes the hours unknown rather than raising: the feed's
staleness watchdog then treats the market as open, which is what it did before hours existed.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import structlog

log = structlog.get_logger("daemon.ib.hours")

Interval = tuple[datetime, datetime]


@dataclass(frozen=True)
class MarketHours:
    """UTC trading sessions over the days IB listed (`covered`); is_open() is None outside them."""

    sessions: tuple[Interval, ...]
    covered: Interval

    def is_open(self, now: datetime) -> bool | None:
        """True inside a session, False between sessions, None outside the listed days."""
        if not self.covered[0] <= now < self.covered[1]:
            return None
        return any(start <= now < end for start, end in self.sessions)

    @classmethod
    def parse(cls, text: str, time_zone: str) -> MarketHours | None:
        """The sessions in `text` (either IB format) in `time_zone`; None when unreadable or empty."""
        if not text or not text.strip():
            return None
        try:
            zone: tzinfo = ZoneInfo(time_zone.split()[0]) if time_zone.strip() else UTC
        except (ZoneInfoNotFoundError, ValueError):
            log.warning("ib.hours_unreadable", time_zone=time_zone, reason="unknown time zone")
            return None
        try:
            sessions, covered = _parse(text, zone)
        except ValueError as e:
            log.warning("ib.hours_unreadable", hours=text[:80], reason=str(e))
            return None
        return cls(sessions=tuple(sorted(sessions)), covered=covered)


def _parse(text: str, zone: tzinfo) -> tuple[list[Interval], Interval]:
    """Sessions and the span of the listed days (local midnight to local midnight), in UTC."""
    sessions: list[Interval] = []
    edges: list[datetime] = []
    for entry in filter(None, (e.strip() for e in text.split(";"))):
        day_text, sep, spans = entry.partition(":")
        if not sep:
            msg = f"session {entry!r} has no ':'"
            raise ValueError(msg)
        day = _day(day_text)
        edges += [_at(day, "0000", zone), _at(day + timedelta(days=1), "0000", zone)]
        if spans.strip().upper() == "CLOSED":
            continue
        for span in spans.split(","):
            start_text, dash, end_text = span.partition("-")
            if not dash:
                msg = f"session {span!r} has no '-'"
                raise ValueError(msg)
            start, end = _moment(day, start_text, zone), _moment(day, end_text, zone)
            if end <= start:  # an old-format session running past midnight
                end += timedelta(days=1)
            sessions.append((start, end))
            edges.append(end)
    if not edges:
        msg = "no sessions"
        raise ValueError(msg)
    return sessions, (min(edges), max(edges))


def _day(text: str) -> datetime:
    text = text.strip()
    if len(text) != 8 or not text.isdigit():
        msg = f"day {text!r} is not YYYYMMDD"
        raise ValueError(msg)
    return datetime.strptime(text, "%Y%m%d")


def _moment(day: datetime, text: str, zone: tzinfo) -> datetime:
    """'HHMM' on `day`, or 'YYYYMMDD:HHMM' (new format), in the exchange's zone, as UTC."""
    text = text.strip()
    if ":" in text:
        day_text, _, hhmm = text.partition(":")
        return _at(_day(day_text), hhmm, zone)
    return _at(day, text, zone)


def _at(day: datetime, hhmm: str, zone: tzinfo) -> datetime:
    if len(hhmm) != 4 or not hhmm.isdigit() or int(hhmm[:2]) > 24 or int(hhmm[2:]) > 59:
        msg = f"time {hhmm!r} is not HHMM"
        raise ValueError(msg)
    wall = day + timedelta(hours=int(hhmm[:2]), minutes=int(hhmm[2:]))
    return wall.replace(tzinfo=zone).astimezone(UTC)
