"""The simulated broker's values: its config, order records, tapes, a batch's matches and its state.

Outside strategy/sim_broker.py so that msgspec reads their annotations when sim_broker.py is compiled.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import msgspec

from strategy.types import Bar, Fill, Order, OrderEvent

NonNegativeFloat = Annotated[float, msgspec.Meta(ge=0)]


class SimBrokerConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Costs and matching rules of the simulated broker (IB-like fixed commissions by default).

    Commission per order is min(max(min_commission, commission_per_share * shares),
    max_commission_fraction * notional), charged as the order fills. Market orders pay half
    of spread_bps plus slippage_bps. latency_bars=1 fills market orders at the next bar's open;
    latency_bars=0 fills them on submit at the close of the symbol's last bar.
    price_collar: a bar whose high or low lies further than this fraction of the previous
    close from it fills nothing (a bad print) unless the next bar confirms its level; 0 = off.
    """

    commission_per_share: NonNegativeFloat = 0.005
    min_commission: NonNegativeFloat = 1.0
    max_commission_fraction: NonNegativeFloat = 0.01
    slippage_bps: NonNegativeFloat = 1.0
    spread_bps: NonNegativeFloat = 2.0
    max_volume_fraction: Annotated[float, msgspec.Meta(gt=0, le=1)] = 0.1
    latency_bars: Annotated[int, msgspec.Meta(ge=0, le=1)] = 1
    price_collar: Annotated[float, msgspec.Meta(ge=0, le=1e6)] = 0.5


class VenueOrder(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """The broker's record of one order: the order as the broker sees it plus matching state."""

    order: Order
    sequence: int
    submitted_ts: datetime
    commission: float = 0.0
    fill_count: int = 0


class SymbolTape(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """The last bar the broker saw for a symbol and the volume already filled against it."""

    bar: Bar
    volume_used: float = 0.0


class BarsMatched(msgspec.Struct, frozen=True):
    """What one batch of bars did at the venue: events and fills, in order, and the latest bar time
    of the batch's symbols' tapes (None when none has a tape): the venue's clock moves to it."""

    events: list[OrderEvent]
    fills: list[Fill]
    latest: datetime | None


class SimBrokerState(msgspec.Struct, frozen=True, kw_only=True):
    """Everything a SimBroker needs to resume exactly where it stopped; positions follow from fills."""

    orders: tuple[VenueOrder, ...] = ()
    fills: tuple[Fill, ...] = ()
    tapes: dict[str, SymbolTape] = {}  # copied per instance, as a factory would be
    sequence: int = 0
    pending_events: tuple[OrderEvent, ...] = ()
    pending_fills: tuple[Fill, ...] = ()
