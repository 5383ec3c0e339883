"""Bars carry their origin (encoded only when not live); a window reset by a gap is a value."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import msgspec

from strategy.bars import BarStore, BarStoreConfig, WindowReset
from strategy.types import Bar

T0 = datetime(2024, 3, 1, 14, 30, tzinfo=UTC)


def _bar(i: int, symbol: str = "AAPL", **changes: object) -> Bar:
    fields: dict[str, object] = {
        "symbol": symbol,
        "ts": T0 + timedelta(minutes=i),
        "open": 100.0,
        "high": 101.0,
        "low": 99.0,
        "close": 100.5,
        "volume": 1000.0,
    }
    fields.update(changes)
    return Bar(**fields)  # type: ignore[arg-type]


def test_encode_when_bar_live_then_payload_as_before_and_backfill_says_origin() -> None:
    live = msgspec.json.encode(_bar(0))
    assert b"origin" not in live
    assert msgspec.json.decode(live, type=Bar).origin == "live"
    old = msgspec.json.decode(msgspec.json.encode(_bar(0, origin="backfill")), type=Bar)
    assert old.origin == "backfill"


def test_add_when_gap_resets_window_then_reset_returned_once_with_gap_and_policy() -> None:
    store = BarStore(config=BarStoreConfig(window=8, bar_seconds=60, max_gap_bars=5))
    for i in range(8):
        assert store.add(_bar(i)) is None
    assert store.add(_bar(7 + 6, symbol="AAPL")) is None  # 5 missing: within max_gap_bars
    assert store.pop_resets() == []
    assert store.add(_bar(13 + 45)) is None  # 44 missing: the window starts over
    assert store.count("AAPL") == 1
    assert store.pop_resets() == [
        WindowReset(
            symbol="AAPL",
            ts=_bar(58).ts,
            missing_bars=44,
            policy="reset",
            after=_bar(13).ts,
        )
    ]
    assert store.pop_resets() == []


def test_add_when_gap_policy_accept_or_reject_then_no_reset_reported() -> None:
    for policy in ("accept", "reject"):
        store = BarStore(
            config=BarStoreConfig(window=8, bar_seconds=60, max_gap_bars=0, gap_policy=policy)
        )
        store.add(_bar(0))
        store.add(_bar(10))
        assert store.pop_resets() == []
