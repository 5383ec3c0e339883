"""The risk engine's values: its limits and a move of the trading state.

Outside strategy/risk.py so that msgspec reads their annotations when risk.py is compiled.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import msgspec

from strategy.trading_hours import TradingHours
from strategy.types import TradingState

PositiveFloat = Annotated[float, msgspec.Meta(gt=0)]
PositiveInt = Annotated[int, msgspec.Meta(gt=0)]
NonNegativeInt = Annotated[int, msgspec.Meta(ge=0)]
UnitFraction = Annotated[float, msgspec.Meta(gt=0, le=1)]
Probability = Annotated[float, msgspec.Meta(ge=0, le=1)]


class RiskConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Limits of the risk engine; `null` disables a check."""

    max_order_quantity: PositiveFloat | None = 10_000.0
    max_order_notional: PositiveFloat | None = 50_000.0
    max_position_quantity: PositiveFloat | None = None
    max_position_notional: PositiveFloat | None = 50_000.0
    max_gross_exposure: PositiveFloat | None = 200_000.0
    max_open_orders: PositiveInt | None = 100
    max_orders_per_minute: PositiveInt | None = 120
    max_daily_loss: PositiveFloat | None = 5_000.0
    max_drawdown: UnitFraction | None = 0.20
    reduce_at_daily_loss_fraction: UnitFraction | None = None
    trading_hours: TradingHours | None = None
    price_collar_bps: PositiveFloat | None = 500.0
    min_confidence: Probability | None = None
    cooldown_bars: NonNegativeInt = 0
    cooldown_seconds: PositiveFloat | None = None

    def __post_init__(self) -> None:
        if self.reduce_at_daily_loss_fraction is not None and self.max_daily_loss is None:
            msg = "reduce_at_daily_loss_fraction needs max_daily_loss: set max_daily_loss or drop the fraction"
            raise ValueError(msg)


class TradingStateChange(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """One move of the trading state, automatic (a breach) or by an operator."""

    previous: TradingState
    current: TradingState
    reason: str
    ts: datetime
    detail: str = ""
