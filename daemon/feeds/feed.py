"""The Feed protocol: where the daemon's closed bars come from (sim, replay, MQTT, IB).

A feed is an async context manager (entered by daemon/app.py) that fills the windows before
trading (`backfill`) and then yields batches of bars closed at one timestamp (`closed_bars`).
SimFeed, ReplayFeed, MqttBarFeed and IbFeed implement it; mypy checks each where app.py opens it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from typing import Protocol

from strategy.types import Bar


class Feed(Protocol):
    """Closed bars in batches by close time, oldest first."""

    @property
    def connected(self) -> bool:
        """False while the source is unreachable (a local feed is always connected)."""
        ...

    def closed_bars(self, resume_after: datetime | None = None) -> AsyncIterator[list[Bar]]:
        """Batches of bars closed strictly after resume_after, until the source ends."""
        ...

    async def backfill(self, n: int, before: datetime | None = None) -> list[list[Bar]]:
        """The last n batches closed at or before `before` (None: the latest), oldest first."""
        ...
