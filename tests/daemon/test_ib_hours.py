"""IB's trading-hours text -> UTC sessions, both formats, and unreadable input as unknown."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from structlog.testing import capture_logs

from daemon.ib.hours import MarketHours

NEW = "20180323:0400-20180323:2000;20180324:CLOSED;20180326:0400-20180326:2000"
OLD = "20090507:0700-1830,1830-2330;20090508:CLOSED"


def at(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def test_parse_when_new_format_in_exchange_zone_then_utc_sessions_with_dst() -> None:
    hours = MarketHours.parse(NEW, "US/Eastern")
    assert hours is not None
    # 04:00 New York on 23 March 2018 is daylight time: 08:00 UTC.
    assert hours.sessions[0] == (at(2018, 3, 23, 8), at(2018, 3, 24, 0))
    assert hours.is_open(at(2018, 3, 23, 15)) is True
    assert hours.is_open(at(2018, 3, 23, 7, 59)) is False  # before the session
    assert hours.is_open(at(2018, 3, 24, 15)) is False  # CLOSED day
    assert hours.is_open(at(2018, 3, 25, 15)) is False  # an unlisted weekend day between two listed
    assert hours.is_open(at(2018, 3, 26, 12)) is True
    assert hours.is_open(at(2018, 3, 30, 12)) is None  # past the listed days: unknown


def test_parse_when_old_format_then_comma_sessions_and_zone_name_with_description() -> None:
    hours = MarketHours.parse(OLD, "EST (Eastern Standard Time)")
    assert hours is not None
    assert [s for s, _ in hours.sessions] == [at(2009, 5, 7, 12), at(2009, 5, 7, 23, 30)]
    assert hours.is_open(at(2009, 5, 8, 4)) is True  # 23:00 EST, inside 1830-2330
    assert hours.is_open(at(2009, 5, 8, 5)) is False  # 00:00 EST on the CLOSED day


def test_parse_when_session_runs_past_midnight_then_it_ends_next_day() -> None:
    hours = MarketHours.parse("20240102:1700-0400", "UTC")
    assert hours is not None
    assert hours.sessions == ((at(2024, 1, 2, 17), at(2024, 1, 3, 4)),)
    assert hours.is_open(at(2024, 1, 3, 3)) is True


@pytest.mark.parametrize(
    ("text", "zone"),
    [
        ("", "US/Eastern"),
        ("20180323:0400-20180323:2000", "Mars/Olympus"),
        ("2018032:0400-2000", "UTC"),
        ("20180323:0400", "UTC"),
        ("20180323:4000-2000", "UTC"),
        ("garbage", "UTC"),
    ],
    ids=["empty", "unknown_zone", "short_day", "no_dash", "bad_time", "garbage"],
)
def test_parse_when_unreadable_then_unknown_hours_and_one_warning(text: str, zone: str) -> None:
    with capture_logs() as logs:
        assert MarketHours.parse(text, zone) is None
    assert len([e for e in logs if e["event"] == "ib.hours_unreadable"]) == (1 if text else 0)
