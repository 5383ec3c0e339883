"""What the pipeline needs from a broker adapter: submit, cancel, and the events that came back."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Protocol

import msgspec

from strategy.types import Bar, Fill, Order, OrderEvent, Position


class BrokerUpdates(msgspec.Struct, frozen=True, kw_only=True):
    """Everything a broker reported since the last drain."""

    events: tuple[OrderEvent, ...] = ()
    fills: tuple[Fill, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.events or self.fills)


class BrokerView(msgspec.Struct, frozen=True, kw_only=True):
    """The broker's own account state, used to reconcile the journal at start."""

    orders: dict[str, Order]
    fills: tuple[Fill, ...]
    positions: dict[str, Position]
    # A simulated venue's clock: the newest bar it has acted on. The daemon never hands the
    # strategy a bar at or before it again (None for a real broker, whose market moves on).
    clock: datetime | None = None


class ExecutionClient(Protocol):
    """Adapter to a broker; orders are journaled by the caller before submit() is called."""

    async def submit(self, orders: Sequence[Order]) -> None: ...

    async def cancel(self, client_order_id: str) -> None: ...

    def on_market_bars(self, bars: Sequence[Bar]) -> None:
        """Let a simulated venue match resting orders against new bars (no-op for real brokers)."""

    def drain(self) -> BrokerUpdates: ...

    async def broker_view(self) -> BrokerView: ...
