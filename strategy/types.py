"""Frozen values passed between the stages of one bar's trip, from Bar to OrderEvent."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Literal

import msgspec


class Side(enum.StrEnum):
    BUY = "buy"
    SELL = "sell"

    @property
    def sign(self) -> int:
        return 1 if self is Side.BUY else -1


class OrderType(enum.StrEnum):
    MARKET = "market"
    LIMIT = "limit"


class OrderStatus(enum.StrEnum):
    """Life of an order; PENDING_SUBMIT is journaled before the broker sees it."""

    PENDING_SUBMIT = "pending_submit"
    SUBMITTED = "submitted"
    ACCEPTED = "accepted"
    PARTIALLY_FILLED = "partially_filled"
    FILLED = "filled"
    CANCELLED = "cancelled"
    REJECTED = "rejected"

    @property
    def is_terminal(self) -> bool:
        return self in _TERMINAL


_TERMINAL = frozenset({OrderStatus.FILLED, OrderStatus.CANCELLED, OrderStatus.REJECTED})


class TradingState(enum.StrEnum):
    """ACTIVE trades; REDUCING only shrinks positions; HALTED allows cancels and reductions only after a breach."""

    ACTIVE = "active"
    REDUCING = "reducing"
    HALTED = "halted"


BarOrigin = Literal["live", "backfill", "replay"]


class Bar(msgspec.Struct, frozen=True, kw_only=True, gc=False, omit_defaults=True):
    """One OHLCV bar; ts is the bar's close time, timezone-aware UTC.

    origin says where the bar came from: live (streamed as it closed), backfill (history fetched
    to fill a window after a (re)connect, resubscribe or stale stream) or replay (a recorded
    file). Only live bars may be traded; the others warm windows. A live bar omits the field when
    encoded, so journal and MQTT payloads stay as they were.
    """

    symbol: str
    ts: datetime
    open: float
    high: float
    low: float
    close: float
    volume: float
    origin: BarOrigin = "live"


class Signal(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """A scorer's calibrated view of one symbol at one bar close.

    p_up is the probability that price rises over the scorer's horizon; confidence is
    in [0, 1] (0 = no opinion). disagreement and entropy describe fused signals.
    """

    symbol: str
    ts: datetime
    p_up: float
    confidence: float
    scorer: str
    reasons: tuple[str, ...] = ()
    disagreement: float = 0.0
    entropy: float = 0.0

    @property
    def direction(self) -> int:
        """+1 long, -1 short, 0 no opinion."""
        if self.p_up > 0.5:
            return 1
        if self.p_up < 0.5:
            return -1
        return 0


class OrderIntent(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """What the strategy wants done; not yet an order until risk accepts it."""

    symbol: str
    ts: datetime
    side: Side
    quantity: float
    order_type: OrderType = OrderType.MARKET
    limit_price: float | None = None
    reason: str = ""
    confidence: float = 1.0
    is_cancel: bool = False
    cancel_client_order_id: str | None = None

    @property
    def signed_quantity(self) -> float:
        return self.quantity * self.side.sign


class RiskDecision(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """The risk engine's verdict on one intent; a rejection is a value with a reason code."""

    intent: OrderIntent
    accepted: bool
    reason: str = "ok"
    detail: str = ""
    ts: datetime | None = None


class Order(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """An accepted intent with our client order id; journaled before it is submitted."""

    client_order_id: str
    symbol: str
    side: Side
    quantity: float
    order_type: OrderType
    created_ts: datetime
    limit_price: float | None = None
    status: OrderStatus = OrderStatus.PENDING_SUBMIT
    filled_quantity: float = 0.0
    average_fill_price: float = 0.0
    reason: str = ""
    broker_order_id: str | None = None

    @property
    def remaining(self) -> float:
        return max(self.quantity - self.filled_quantity, 0.0)

    @property
    def signed_remaining(self) -> float:
        return self.remaining * self.side.sign


class OrderEvent(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """A status change of one order, as reported by the broker (or by us for PENDING_SUBMIT)."""

    client_order_id: str
    ts: datetime
    status: OrderStatus
    filled_quantity: float = 0.0
    reason: str = ""
    broker_order_id: str | None = None


class Fill(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """One execution; fill_id is unique per broker."""

    fill_id: str
    client_order_id: str
    symbol: str
    side: Side
    quantity: float
    price: float
    commission: float
    ts: datetime

    @property
    def signed_quantity(self) -> float:
        return self.quantity * self.side.sign


class Position(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """Net holding of one symbol; quantity is signed (negative = short)."""

    symbol: str
    quantity: float = 0.0
    average_price: float = 0.0
    realized_pnl: float = 0.0

    def apply(self, fill: Fill) -> Position:
        """Return the position after one fill (average cost, realized P&L net of commission)."""
        q0, q = self.quantity, fill.signed_quantity
        q1 = q0 + q
        realized = self.realized_pnl - fill.commission
        if q0 == 0 or (q0 > 0) == (q > 0):
            avg = (self.average_price * abs(q0) + fill.price * abs(q)) / abs(q1) if q1 else 0.0
        else:
            closed = min(abs(q), abs(q0))
            realized += closed * (fill.price - self.average_price) * (1 if q0 > 0 else -1)
            if abs(q) > abs(q0):
                avg = fill.price
            elif q1 == 0:
                avg = 0.0
            else:
                avg = self.average_price
        if abs(q1) < 1e-9:
            q1 = 0.0
        return Position(symbol=self.symbol, quantity=q1, average_price=avg, realized_pnl=realized)

    def unrealized_pnl(self, price: float) -> float:
        return (price - self.average_price) * self.quantity
