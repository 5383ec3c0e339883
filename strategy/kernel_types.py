"""The trading kernel's values: what a batch's intake did and what its decision sent.

Outside strategy/kernel.py so that msgspec reads their annotations when kernel.py is compiled.
"""

from __future__ import annotations

from datetime import datetime

import msgspec

from strategy.bars_types import BarRejected
from strategy.risk_types import TradingStateChange
from strategy.types import Fill, Order, OrderEvent, RiskDecision


class BatchIntake(msgspec.Struct, frozen=True, kw_only=True):
    """What the first half of a batch did: broker updates applied, bars stored, risk state."""

    now: datetime
    events: list[OrderEvent]
    fills: list[Fill]  # new fills only; repeats of a known fill_id are dropped
    rejected: list[BarRejected]
    accepted: list[str]  # symbols whose bar entered its window
    state_change: TradingStateChange | None


class BatchDecision(msgspec.Struct, frozen=True, kw_only=True):
    """What the second half decided: every risk decision, the orders to send, the cancels to request."""

    decisions: list[RiskDecision]
    orders: list[Order]
    cancels: list[str]

    @property
    def rejections(self) -> list[RiskDecision]:
        return [d for d in self.decisions if not d.accepted]
