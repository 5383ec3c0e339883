"""Adopting the broker's state into a journal that has no trading history (new, emptied or lost).

A journal with no orders and no fills while the broker reports orders, executions or positions
for the account means the daemon's record is gone, not that nothing happened. Trading on from an
empty book would send again what the broker already has. Reconcile then adopts, before the first
order: every broker order is journaled under the broker's client order id (reason `adopted`),
every execution becomes a fill, and the part of a position that the executions do not explain
(IB reports executions of the current day only) becomes one fill per symbol at the broker's
average price, so that the journal's fills rebuild the broker's positions on every later start.
New client order numbers then start at the adoption time in seconds, above any number the lost
journal can have handed out. Pure functions; daemon/reconcile.py calls them.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from datetime import datetime

import msgspec

from daemon.execution.base import BrokerView
from strategy.types import Fill, Order, OrderStatus, OrderType, Position, Side

ADOPTED = "adopted"  # reason of every order and event journaled by an adoption
ADOPTED_POSITION = "adopted_position"  # reason of the orders that stand for a position's rest
ADOPTED_AT_KEY = "adopted_at"  # journal kv: when the journal last took the broker's state
RECOVER = (
    "restore the journal from a backup, or close the positions the broker cannot price and "
    "restart (a journal without trading history adopts what the broker reports)"
)
RECOVER_MISMATCH = (
    "restore the journal from a backup, or move it away and restart to adopt the broker's "
    "state, or lift the halt (set_trading_state active) once the difference is understood"
)
_EPSILON = 1e-9


class AdoptionRefused(msgspec.Struct, frozen=True, kw_only=True):
    """The broker's state cannot be taken over; trading must not start (recover: RECOVER)."""

    reason: str


def broker_has_state(view: BrokerView) -> bool:
    """True when the broker reports anything for the account: orders, executions or positions."""
    return bool(
        view.orders
        or view.fills
        or any(abs(p.quantity) > _EPSILON for p in view.positions.values())
    )


def adopted(order: Order) -> Order:
    """The broker's order marked as adopted (its own reason kept after the colon)."""
    reason = f"{ADOPTED}:{order.reason}" if order.reason else ADOPTED
    return msgspec.structs.replace(order, reason=reason)


def position_rests(
    positions: Mapping[str, Position], fills: Iterable[Fill], *, now: datetime
) -> tuple[list[Order], list[Fill]] | AdoptionRefused:
    """One filled order and fill per symbol for the part of the broker's position that `fills`
    do not explain, at the broker's average price (else the fills' average price); refused when
    neither gives a usable price."""
    explained: dict[str, float] = {}
    traded: dict[str, tuple[float, float]] = {}  # symbol -> (quantity, notional) of the fills
    for fill in fills:
        explained[fill.symbol] = explained.get(fill.symbol, 0.0) + fill.signed_quantity
        quantity, notional = traded.get(fill.symbol, (0.0, 0.0))
        traded[fill.symbol] = (quantity + fill.quantity, notional + fill.quantity * fill.price)
    orders: list[Order] = []
    rests: list[Fill] = []
    stamp = now.strftime("%Y%m%dT%H%M%S%f")
    for symbol in sorted(set(positions) | set(explained)):
        held = positions[symbol].quantity if symbol in positions else 0.0
        rest = held - explained.get(symbol, 0.0)
        if abs(rest) <= _EPSILON:
            continue
        price = positions[symbol].average_price if symbol in positions else 0.0
        if not (math.isfinite(price) and price > 0) and symbol in traded:
            quantity, notional = traded[symbol]  # a position closed today: its fills' price
            price = notional / quantity
        if not (math.isfinite(price) and price > 0):
            return AdoptionRefused(
                reason=(
                    f"the broker holds {held:g} {symbol} but its executions explain "
                    f"{explained.get(symbol, 0.0):g} and it gives no average price for the rest"
                )
            )
        coid = f"{ADOPTED}-{symbol}-{stamp}"
        side = Side.BUY if rest > 0 else Side.SELL
        orders.append(
            Order(
                client_order_id=coid,
                symbol=symbol,
                side=side,
                quantity=abs(rest),
                order_type=OrderType.MARKET,
                created_ts=now,
                status=OrderStatus.FILLED,
                reason=ADOPTED_POSITION,
            )
        )
        rests.append(
            Fill(
                fill_id=coid,
                client_order_id=coid,
                symbol=symbol,
                side=side,
                quantity=abs(rest),
                price=price,
                commission=0.0,
                ts=now,
            )
        )
    return orders, rests
