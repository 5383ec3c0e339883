"""Start-up reconciliation: journal (our record) against the broker's view; never resubmit an order."""

from __future__ import annotations

from datetime import datetime

import msgspec
import structlog

from daemon.adoption import (
    ADOPTED,
    ADOPTED_AT_KEY,
    AdoptionRefused,
    adopted,
    broker_has_state,
    position_rests,
)
from daemon.execution.base import BrokerView
from daemon.journal import Journal
from strategy.book import Book
from strategy.types import Fill, Order, OrderEvent, OrderStatus

log = structlog.get_logger("daemon.reconcile")


class ReconcileReport(msgspec.Struct, frozen=True, kw_only=True):
    orders_adopted: int = 0
    orders_resolved: int = 0
    fills_recovered: int = 0
    external_orders: int = 0
    position_mismatches: tuple[str, ...] = ()
    adopted: bool = False  # the journal had no trading history and took the broker's state
    positions_adopted: tuple[str, ...] = ()  # symbols whose position the executions did not explain
    # Why the broker's state could not be adopted (nothing journaled): the daemon must not trade.
    refused: str = ""


def restore_book(journal: Journal, *, starting_cash: float) -> Book:
    """Rebuild positions and cash by replaying the journal's fills (the source of truth)."""
    book = Book(starting_cash=starting_cash)
    for fill in journal.load_fills():
        book.apply_fill(fill)
        book.set_price(fill.symbol, fill.price)
    peak = journal.get("peak_equity")
    if peak is not None:
        book.peak_equity = max(book.peak_equity, float(peak))
    return book


def reconcile(
    journal: Journal, book: Book, view: BrokerView, *, now: datetime, adopt: bool = False
) -> ReconcileReport:
    """Bring journal and book in line with the broker; returns what changed (also journaled).

    adopt (at start): a journal without any order or fill while the broker has state takes the
    broker's state over (daemon/adoption.py) before anything can trade; when that is impossible
    nothing is journaled and the report says why (`refused`)."""
    ever_journaled = journal.load_orders()
    journaled = {c: o for c, o in ever_journaled.items() if not o.status.is_terminal}  # open ones
    known_fills = journal.fill_ids()
    adopting = adopt and not ever_journaled and not known_fills and broker_has_state(view)
    events: list[OrderEvent] = []
    fills: list[Fill] = []
    rest_orders: list[Order] = []
    adopted_orders = resolved = external = 0

    for fill in view.fills:
        if fill.fill_id not in known_fills:
            fills.append(fill)
    if adopting:
        rests = position_rests(view.positions, fills, now=now)
        if isinstance(rests, AdoptionRefused):
            return ReconcileReport(refused=rests.reason)  # the caller halts and says how to recover
        rest_orders, rest_fills = rests
        fills = [*rest_fills, *fills]  # the older holdings first, then today's executions
    recovered: dict[str, float] = {}
    for fill in fills:
        recovered[fill.client_order_id] = recovered.get(fill.client_order_id, 0.0) + fill.quantity

    for coid, order in journaled.items():
        at_broker = view.orders.get(coid)
        if at_broker is None:
            # Journaled but never reached the broker (crash between journal and submit): drop it.
            status = (
                OrderStatus.CANCELLED
                if order.status is OrderStatus.PENDING_SUBMIT
                else OrderStatus.REJECTED
            )
            events.append(
                OrderEvent(
                    client_order_id=coid,
                    ts=now,
                    status=status,
                    filled_quantity=order.filled_quantity,
                    reason="not_at_broker_on_restart",
                )
            )
            resolved += 1
            continue
        book.add_order(order)
        adopted_orders += 1
        if at_broker.status != order.status or at_broker.filled_quantity != order.filled_quantity:
            events.append(
                OrderEvent(
                    client_order_id=coid,
                    ts=now,
                    status=at_broker.status,
                    filled_quantity=at_broker.filled_quantity,
                    broker_order_id=at_broker.broker_order_id,
                    reason="reconciled",
                )
            )

    for coid, at_broker in view.orders.items():
        if coid not in ever_journaled and not at_broker.status.is_terminal:
            external += 1
            book.add_order(_before_fills(at_broker, recovered))
            events.append(
                OrderEvent(
                    client_order_id=coid,
                    ts=now,
                    status=at_broker.status,
                    filled_quantity=at_broker.filled_quantity,
                    reason=ADOPTED if adopting else "external",
                )
            )

    # Fills change positions before the status events close the orders they belong to.
    book.apply_updates(events, fills)

    mismatches = tuple(
        sorted(
            s
            for s in set(book.positions) | set(view.positions)
            if abs(book.position(s) - (view.positions[s].quantity if s in view.positions else 0.0))
            > 1e-9
        )
    )
    # Written as they stood before the recovered fills, which the journal then adds once.
    external_orders = [
        _before_fills(adopted(o) if adopting else o, recovered)
        for o in view.orders.values()
        if o.client_order_id not in ever_journaled
    ]
    kv = {"cash": repr(book.cash)}
    if adopting:
        kv[ADOPTED_AT_KEY] = now.isoformat()
        # The numbers the lost journal handed out are unknown where the broker no longer reports
        # those orders: new ones start at the adoption time in seconds, above any of them.
        journal.skip_order_sequence(int(now.timestamp()))
    journal.record(
        orders=[*rest_orders, *external_orders],
        order_events=events,
        fills=fills,
        positions=[book.positions[s] for s in {f.symbol for f in fills}],
        kv=kv,
    )
    report = ReconcileReport(
        orders_adopted=adopted_orders,
        orders_resolved=resolved,
        fills_recovered=len(fills) - len(rest_orders),
        external_orders=external,
        position_mismatches=mismatches,
        adopted=adopting,
        positions_adopted=tuple(o.symbol for o in rest_orders),
    )
    log.info("broker.reconciled", **msgspec.structs.asdict(report))
    if adopting:
        log.warning(
            "journal.adopted",
            orders=len(external_orders),
            open_orders=external,
            fills=report.fills_recovered,
            positions={s: p.quantity for s, p in book.positions.items() if p.quantity},
            positions_adopted=list(report.positions_adopted),
        )
    for symbol in mismatches:
        log.error(
            "broker.position_mismatch",
            symbol=symbol,
            journal=book.position(symbol),
            broker=view.positions[symbol].quantity if symbol in view.positions else 0.0,
        )
    return report


def _before_fills(order: Order, recovered: dict[str, float]) -> Order:
    """The broker's order without the fills being recovered now (each fill counts once, when
    the journal and the book apply it)."""
    quantity = recovered.get(order.client_order_id, 0.0)
    if not quantity:
        return order
    before = max(order.filled_quantity - quantity, 0.0)
    return msgspec.structs.replace(
        order,
        filled_quantity=before,
        average_fill_price=order.average_fill_price if before > 1e-12 else 0.0,
    )
