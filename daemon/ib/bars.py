"""IB's bars as ours: conversion, 5-second real-time bars summed into bars, batches by close time."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any

from strategy.types import Bar, BarOrigin


def duration_for(seconds: float) -> str:
    """The shortest IB duration string covering `seconds`."""
    seconds = max(60, math.ceil(seconds))
    if seconds <= 86400:
        return f"{seconds} S"
    return f"{min(math.ceil(seconds / 86400), 365)} D"


def to_bar(symbol: str, item: Any, *, bar_seconds: int, origin: BarOrigin = "live") -> Bar:
    """An ib_async BarData / RealTimeBar (stamped at its start) as our Bar (stamped at its close)."""
    start = getattr(item, "date", None) or item.time
    if not isinstance(start, datetime):
        start = datetime(start.year, start.month, start.day, tzinfo=UTC)
    return Bar(
        symbol=symbol,
        ts=start.astimezone(UTC) + timedelta(seconds=bar_seconds),
        open=float(item.open_ if hasattr(item, "open_") else item.open),
        high=float(item.high),
        low=float(item.low),
        close=float(item.close),
        volume=float(item.volume),
        origin=origin,
    )


def add_realtime(
    partial: dict[datetime, list[Any]], symbol: str, payload: Any, *, bar_seconds: int
) -> Bar | None:
    """Add one 5-second real-time bar to `partial` (bucket start -> parts); the bar it completes, if any."""
    start = payload.time.astimezone(UTC)
    epoch = int(start.timestamp())
    bucket = datetime.fromtimestamp(epoch - epoch % bar_seconds, tz=UTC)
    parts = partial.setdefault(bucket, [])
    parts.append(payload)
    if start + timedelta(seconds=5) < bucket + timedelta(seconds=bar_seconds):
        return None
    del partial[bucket]
    for old in [b for b in partial if b < bucket]:
        del partial[old]
    return Bar(
        symbol=symbol,
        ts=bucket + timedelta(seconds=bar_seconds),
        open=float(parts[0].open_),
        high=max(float(p.high) for p in parts),
        low=min(float(p.low) for p in parts),
        close=float(parts[-1].close),
        volume=sum(float(p.volume) for p in parts),
    )


class BarBatcher:
    """Groups closed bars by close time; a group goes out when every active symbol is in or grace passed."""

    def __init__(self, *, grace_seconds: float) -> None:
        self.grace = grace_seconds
        self.last_ts: dict[str, datetime] = {}
        self._pending: dict[datetime, dict[str, Bar]] = {}
        self._first_seen: dict[datetime, float] = {}
        self.duplicates = 0

    def add(self, bar: Bar, now: float) -> bool:
        last = self.last_ts.get(bar.symbol)
        group = self._pending.setdefault(bar.ts, {})
        if (last is not None and bar.ts <= last) or bar.symbol in group:
            self.duplicates += 1
            if not group:
                del self._pending[bar.ts]
            return False
        group[bar.symbol] = bar
        self._first_seen.setdefault(bar.ts, now)
        return True

    def pop_ready(self, active: set[str], now: float) -> list[list[Bar]]:
        out: list[list[Bar]] = []
        for ts in sorted(self._pending):
            group = self._pending[ts]
            waiting = {s for s in active if self.last_ts.get(s) is None or self.last_ts[s] < ts}
            if not waiting <= set(group) and now - self._first_seen[ts] < self.grace:
                break
            del self._pending[ts]
            del self._first_seen[ts]
            batch = [
                group[s]
                for s in sorted(group)
                if self.last_ts.get(s) is None or self.last_ts[s] < ts
            ]
            for bar in batch:
                self.last_ts[bar.symbol] = ts
            if batch:
                out.append(batch)
        return out

    def next_deadline(self, now: float) -> float | None:
        if not self._first_seen:
            return None
        return max(0.0, min(self._first_seen.values()) + self.grace - now)
