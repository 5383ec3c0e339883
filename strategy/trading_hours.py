"""Trading hours: a local window on given weekdays (TradingHours, the risk config's
`trading_hours`), and the compiled check the risk engine asks whether a bar time is inside."""

from __future__ import annotations

from datetime import UTC, datetime, time
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec

HourMinute = Annotated[str, msgspec.Meta(pattern=r"^([01]\d|2[0-3]):[0-5]\d$")]
Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
_WEEKDAYS: tuple[Weekday, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


class TradingHours(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Local window [start, end) on the given weekdays; start > end means the window spans midnight."""

    start: HourMinute = "09:30"
    end: HourMinute = "16:00"
    timezone: str = "America/New_York"
    weekdays: tuple[Weekday, ...] = ("mon", "tue", "wed", "thu", "fri")

    def __post_init__(self) -> None:
        if self.start == self.end:
            msg = f"trading_hours start and end are both {self.start}: the window would be empty"
            raise ValueError(msg)
        if not self.weekdays:
            msg = "trading_hours.weekdays is empty: list at least one day (mon..sun)"
            raise ValueError(msg)
        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            msg = f"trading_hours.timezone {self.timezone!r} is not a known IANA zone (e.g. America/New_York)"
            raise ValueError(msg) from None


class TradingHoursCheck:
    """TradingHours compiled for fast checks."""

    __slots__ = ("_last", "days", "end", "overnight", "start", "text", "zone")

    def __init__(self, hours: TradingHours) -> None:
        self.zone = ZoneInfo(hours.timezone)
        self.start = _parse_hhmm(hours.start)
        self.end = _parse_hhmm(hours.end)
        self.overnight = self.start > self.end
        self.days = frozenset(_WEEKDAYS.index(d) for d in hours.weekdays)
        self.text = f"{hours.start}-{hours.end} {hours.timezone} {','.join(hours.weekdays)}"
        self._last: tuple[datetime, bool] | None = None

    def contains(self, now: datetime) -> bool:
        """Whether now is inside the window; the last answer is kept (a batch shares one now)."""
        last = self._last
        if last is not None and last[0] == now:
            return last[1]
        inside = self._contains(now)
        self._last = (now, inside)
        return inside

    def _contains(self, now: datetime) -> bool:
        if now.tzinfo is None:
            now = now.replace(tzinfo=UTC)
        local = now.astimezone(self.zone)
        t = local.time().replace(tzinfo=None)
        if not self.overnight:
            return local.weekday() in self.days and self.start <= t < self.end
        if t >= self.start:
            return local.weekday() in self.days
        # after midnight: the session belongs to the day it started on
        return t < self.end and (local.weekday() - 1) % 7 in self.days


def _parse_hhmm(text: str) -> time:
    hours, minutes = text.split(":")
    return time(int(hours), int(minutes))
