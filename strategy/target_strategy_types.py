"""The target strategy's values: its config, a missed entry and a held entry.

Outside strategy/target_strategy.py so that msgspec reads their annotations when that module is compiled.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

import msgspec

PositiveFloat = Annotated[float, msgspec.Meta(gt=0)]
Unit = Annotated[float, msgspec.Meta(ge=0, le=1)]


class StrategyConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """When to go long, short or flat, and how big.

    p_up >= enter_threshold goes long, p_up <= 1 - enter_threshold goes short, both only with
    confidence >= min_confidence. A position is closed after hold_bars bars (0 = never on time),
    or, with exit_on_opposite, on a confident signal the other way (reversed when that signal
    clears enter_threshold and the new side is allowed). A confirming signal restarts the hold.
    Limit orders are priced limit_offset_bps beyond the last price (positive = willing to
    cross, negative = rest inside).

    Sizing: a position is worth position_fraction x equity when position_fraction is set, else
    position_notional; its quantity is rounded down to whole quantity_step units (1 = whole
    shares; 1e-8 for crypto), per symbol from quantity_steps when listed there, and capped at
    max_quantity. A position that rounds to 0 is not entered (counted in `sizing_misses`).
    """

    enter_threshold: Annotated[float, msgspec.Meta(gt=0.5, le=1)] = 0.6
    min_confidence: Unit = 0.3
    position_notional: PositiveFloat = 10_000.0
    position_fraction: Annotated[float, msgspec.Meta(gt=0, le=1)] | None = None
    quantity_step: PositiveFloat = 1.0
    quantity_steps: dict[str, PositiveFloat] = {}  # copied per instance, as a factory would be
    max_quantity: PositiveFloat = 100_000.0
    allow_short: bool = True
    hold_bars: Annotated[int, msgspec.Meta(ge=0)] = 5
    bar_seconds: Annotated[int, msgspec.Meta(gt=0)] = 60
    exit_on_opposite: bool = True
    order_type: Literal["market", "limit"] = "market"
    limit_offset_bps: Annotated[float, msgspec.Meta(ge=-1000, le=1000)] = 5.0
    price_decimals: Annotated[int, msgspec.Meta(ge=0, le=8)] = 2

    def step(self, symbol: str) -> float:
        """The smallest tradable quantity of a symbol."""
        return self.quantity_steps.get(symbol, self.quantity_step)


class SizingMiss(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """An entry the strategy wanted but could not size: its position rounds to 0 quantity."""

    symbol: str
    ts: datetime
    price: float
    notional: float
    step: float


class _Entry(msgspec.Struct, kw_only=True):
    direction: int
    ts: datetime
