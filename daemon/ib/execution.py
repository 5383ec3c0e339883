"""Orders through IB Gateway (ib_async): market, limit and bracket, our client order id in orderRef.

Status changes, executions and commission reports are enqueued by ib_async callbacks and turned
into OrderEvents and Fills by drain(). A Fill is emitted once per execId, when its commission
report arrives. broker_view() fetches open orders, executions and positions for reconciliation,
which the daemon runs at start and whenever `generation` changes (every reconnect).

Over 400 lines: one ExecutionClient over one connection; submit, drain and broker_view share
its order and execution maps, and the ib_async-to-event mapping reads best beside them.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import structlog
from ib_async import Contract, ExecutionFilter, LimitOrder, MarketOrder, Trade
from ib_async import Order as IbOrder

from daemon.errors import TransientError
from daemon.execution.base import BrokerUpdates, BrokerView
from daemon.ib.config import IbConfig
from daemon.ib.contracts import symbol_of, to_ib_contract
from daemon.ib.session import IbSession
from strategy.types import Bar, Fill, Order, OrderEvent, OrderStatus, OrderType, Position, Side

log = structlog.get_logger("daemon.ib.execution")

_STATUS = {
    "PendingSubmit": OrderStatus.SUBMITTED,
    "ApiPending": OrderStatus.SUBMITTED,
    "PreSubmitted": OrderStatus.ACCEPTED,
    "Submitted": OrderStatus.ACCEPTED,
    "Filled": OrderStatus.FILLED,
    "Cancelled": OrderStatus.CANCELLED,
    "ApiCancelled": OrderStatus.CANCELLED,
    "Inactive": OrderStatus.REJECTED,
}
REJECT_CODES = frozenset({201, 203, 110, 382, 383, 10147, 10148})
FILL_WAIT_SECONDS = 5.0  # how long a status may wait for the fills it already counts


def map_status(ib_status: str, filled: float, remaining: float) -> OrderStatus:
    status = _STATUS.get(ib_status, OrderStatus.ACCEPTED)
    if status is OrderStatus.ACCEPTED and filled > 0 and remaining > 0:
        return OrderStatus.PARTIALLY_FILLED
    return status


class IbExecution:
    """ExecutionClient for IB; `async with` connects (order client id if configured)."""

    def __init__(self, *, config: IbConfig, session: IbSession | None = None) -> None:
        self.config = config
        ids = (
            (config.order_client_id,)
            if config.order_client_id is not None
            else (config.client_id, *config.fallback_client_ids)
        )
        self._own_session = session is None
        self.session = session or IbSession(config=config, client_ids=ids, name="orders")
        self._inbox: asyncio.Queue[tuple[Any, ...]] = asyncio.Queue()
        self._contracts: dict[str, Contract] = {}
        self._submitted: set[str] = set()
        self._fills_seen: set[str] = set()
        self._last_status: dict[str, tuple[OrderStatus, float]] = {}
        self._reject_reason: dict[int, str] = {}
        self._task: asyncio.Task[None] | None = None
        self._updated = asyncio.Event()  # set whenever something lands in the inbox
        self._delivered: dict[str, float] = {}  # quantity of the fills handed out, per order
        self._deferred: dict[str, Trade] = {}  # statuses waiting for their fills
        self._deferred_since: dict[str, float] = {}

    @property
    def ib(self) -> Any:
        return self.session.ib

    @property
    def generation(self) -> int:
        """Bumps on every (re)connect; reconcile when it changes."""
        return self.session.generation

    # ib_async callbacks: enqueue only.
    def _put(self, item: tuple[Any, ...]) -> None:
        self._inbox.put_nowait(item)
        self._updated.set()

    def _on_status(self, trade: Trade) -> None:
        self._put(("status", trade))

    def _on_commission(self, trade: Trade, fill: Any, report: Any) -> None:
        self._put(("fill", trade, fill))

    def _on_error(self, req_id: int, code: int, message: str, contract: Any = None) -> None:
        if code in REJECT_CODES:
            self._put(("error", req_id, code, message))

    async def wait_for_updates(self, seconds: float) -> bool:
        """Wait until IB reports something new (drain() has news), at most seconds; True if it did.
        False at once when disconnected: nothing can come."""
        if not self._inbox.empty():
            return True
        if not self.session.connected.is_set():
            return False
        self._updated.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._updated.wait(), seconds)
        return not self._inbox.empty()

    async def _wait_healthy(self) -> bool:
        """Wait, at most ib.submit_wait_seconds, for a connected link with no open 1100."""
        if self.session.healthy.is_set():
            return True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.session.healthy.wait(), self.config.submit_wait_seconds)
        return self.session.healthy.is_set()

    def _reject_unsent(self, orders: Sequence[Order]) -> None:
        """Orders that never reached IB because the link stayed down: rejected with a reason code."""
        reason = "link_lost" if self.session.connected.is_set() else "not_connected"
        for order in orders:
            self._put(("unsent", order.client_order_id, reason))
            log.error(
                "order.not_sent",
                client_order_id=order.client_order_id,
                symbol=order.symbol,
                reason=reason,
                waited_seconds=self.config.submit_wait_seconds,
            )

    async def __aenter__(self) -> IbExecution:
        self.ib.orderStatusEvent += self._on_status
        self.ib.commissionReportEvent += self._on_commission
        self.ib.errorEvent += self._on_error
        if self._own_session:
            self._task = asyncio.create_task(self.session.run(), name="ib-orders-session")
        await self.session.connected.wait()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.ib.orderStatusEvent -= self._on_status
        self.ib.commissionReportEvent -= self._on_commission
        self.ib.errorEvent -= self._on_error
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None

    async def _contract(self, symbol: str) -> Contract:
        if symbol in self._contracts:
            return self._contracts[symbol]
        spec = next((c for c in self.config.contracts if c.symbol == symbol), None)
        if spec is None:
            msg = f"symbol {symbol} is not in ib.contracts"
            raise TransientError(msg)
        details = await self.ib.reqContractDetailsAsync(to_ib_contract(spec))
        if len(details) != 1:
            msg = f"contract {symbol} did not qualify ({len(details)} matches)"
            raise TransientError(msg)
        contract: Contract = details[0].contract
        self._contracts[symbol] = contract
        return contract

    def _known_refs(self) -> set[str]:
        return {t.order.orderRef for t in self.ib.trades() if t.order.orderRef}

    async def submit(self, orders: Sequence[Order]) -> None:
        """Place orders; an order whose id was already sent (or is known at IB) is never sent again.

        Waits for a healthy link; if it stays down for ib.submit_wait_seconds the orders are
        rejected (reason link_lost or not_connected) instead of waiting for ever."""
        if not await self._wait_healthy():
            self._reject_unsent(orders)
            return
        known = self._known_refs()
        for order in orders:
            coid = order.client_order_id
            if coid in self._submitted or coid in known:
                log.warning("order.duplicate_skipped", client_order_id=coid)
                continue
            contract = await self._contract(order.symbol)
            ib_order = self._ib_order(order)
            self._submitted.add(coid)
            self.ib.placeOrder(contract, ib_order)
            log.info(
                "order.sent",
                client_order_id=coid,
                symbol=order.symbol,
                side=order.side.value,
                quantity=order.quantity,
                order_id=ib_order.orderId,
            )

    def _ib_order(self, order: Order) -> IbOrder:
        action = "BUY" if order.side is Side.BUY else "SELL"
        common: dict[str, Any] = {"orderRef": order.client_order_id, "tif": "DAY"}
        if self.config.effective_account:
            common["account"] = self.config.effective_account
        if order.order_type is OrderType.LIMIT and order.limit_price is not None:
            return LimitOrder(action, order.quantity, order.limit_price, **common)
        return MarketOrder(action, order.quantity, **common)

    async def cancel(self, client_order_id: str) -> None:
        if not self.session.connected.is_set():
            log.warning(
                "order.cancel_not_sent", client_order_id=client_order_id, reason="not_connected"
            )
            return
        trade = next((t for t in self.ib.openTrades() if t.order.orderRef == client_order_id), None)
        if trade is None:
            log.warning("order.cancel_unknown", client_order_id=client_order_id)
            return
        self.ib.cancelOrder(trade.order)

    def on_market_bars(self, bars: Sequence[Bar]) -> None:
        """Real brokers match orders themselves."""

    def drain(self) -> BrokerUpdates:
        """Everything IB reported since the last drain, as our events and fills.

        A status whose filled quantity is ahead of the fills delivered for its order (IB sends
        orderStatus before the commission report that makes our Fill) waits for those fills, at
        most FILL_WAIT_SECONDS: otherwise the journal and the book would count the quantity
        twice, once from the status and once from the fill."""
        events: list[OrderEvent] = []
        fills: list[Fill] = []
        now = datetime.now(UTC)
        items = []
        while not self._inbox.empty():
            items.append(self._inbox.get_nowait())
        for item in items:
            if item[0] == "error":
                _, order_id, code, message = item
                self._reject_reason[order_id] = f"{code}: {message}"
        statuses: dict[str, Trade] = self._deferred
        self._deferred = {}
        for item in items:
            if item[0] == "unsent":
                _, coid, reason = item
                self._last_status[coid] = (OrderStatus.REJECTED, 0.0)
                events.append(
                    OrderEvent(
                        client_order_id=coid, ts=now, status=OrderStatus.REJECTED, reason=reason
                    )
                )
                continue
            if item[0] == "error":
                continue
            trade: Trade = item[1]
            coid = trade.order.orderRef
            if not coid:
                continue
            if item[0] == "fill":
                fill = self._fill(coid, trade, item[2])
                if fill is not None:
                    fills.append(fill)
                    self._delivered[coid] = self._delivered.get(coid, 0.0) + fill.quantity
                continue
            statuses.pop(coid, None)
            statuses[coid] = trade  # its current state; one event per order and drain
        clock = time.monotonic()
        for coid, trade in statuses.items():
            if float(trade.orderStatus.filled) > self._delivered.get(coid, 0.0) + 1e-9:
                since = self._deferred_since.setdefault(coid, clock)
                if clock - since < FILL_WAIT_SECONDS:
                    self._deferred[coid] = trade
                    continue
            self._deferred_since.pop(coid, None)
            event = self._status_event(coid, trade, now)
            if event is not None:
                events.append(event)
        return BrokerUpdates(events=tuple(events), fills=tuple(fills))

    def _status_event(self, coid: str, trade: Trade, now: datetime) -> OrderEvent | None:
        st = trade.orderStatus
        status = map_status(st.status, st.filled, st.remaining)
        reason = ""
        if status in (OrderStatus.CANCELLED, OrderStatus.REJECTED):
            reason = self._reject_reason.get(trade.order.orderId, "")
            if reason.startswith(("201", "203", "110")):
                status = OrderStatus.REJECTED
        key = (status, float(st.filled))
        if self._last_status.get(coid) == key:
            return None
        self._last_status[coid] = key
        return OrderEvent(
            client_order_id=coid,
            ts=now,
            status=status,
            filled_quantity=float(st.filled),
            reason=reason,
            broker_order_id=str(trade.order.permId or trade.order.orderId),
        )

    def _fill(self, coid: str, trade: Trade, fill: Any) -> Fill | None:
        ex = fill.execution
        if ex.execId in self._fills_seen:
            return None
        self._fills_seen.add(ex.execId)
        return Fill(
            fill_id=ex.execId,
            client_order_id=coid,
            symbol=symbol_of(fill.contract),
            side=Side.BUY if ex.side == "BOT" else Side.SELL,
            quantity=float(ex.shares),
            price=float(ex.price),
            commission=float(fill.commissionReport.commission),
            ts=ex.time.astimezone(UTC) if ex.time else datetime.now(UTC),
        )

    async def broker_view(self) -> BrokerView:
        """Open orders, executions (with commissions) and positions as IB reports them now."""
        await self.session.connected.wait()
        timeout = self.config.request_timeout_seconds
        try:
            trades = await asyncio.wait_for(self.ib.reqAllOpenOrdersAsync(), timeout)
            await asyncio.wait_for(self.ib.reqExecutionsAsync(ExecutionFilter()), timeout)
            positions = await asyncio.wait_for(self.ib.reqPositionsAsync(), timeout)
        except (TimeoutError, ConnectionError) as e:
            msg = f"broker view from IB failed: {type(e).__name__}"
            raise TransientError(msg) from None
        now = datetime.now(UTC)
        orders: dict[str, Order] = {}
        for trade in [*self.ib.trades(), *trades]:
            o, st = trade.order, trade.orderStatus
            coid = o.orderRef or f"IB-{o.permId}"
            if o.totalQuantity <= 0:
                continue
            orders[coid] = Order(
                client_order_id=coid,
                symbol=symbol_of(trade.contract),
                side=Side.BUY if o.action == "BUY" else Side.SELL,
                quantity=float(o.totalQuantity),
                order_type=OrderType.LIMIT if o.orderType == "LMT" else OrderType.MARKET,
                created_ts=now,
                limit_price=o.lmtPrice if o.orderType == "LMT" else None,
                status=map_status(st.status, st.filled, st.remaining),
                filled_quantity=float(st.filled),
                average_fill_price=float(st.avgFillPrice),
                broker_order_id=str(o.permId or o.orderId),
            )
        fills = []
        account = self.config.effective_account  # "" = the login's only account: keep all
        for f in self.ib.fills():
            ex = f.execution
            if account and ex.acctNumber and ex.acctNumber != account:
                continue  # another account of the same login: never adopted as ours
            fills.append(
                Fill(
                    fill_id=ex.execId,
                    client_order_id=ex.orderRef or f"IB-{ex.permId}",
                    symbol=symbol_of(f.contract),
                    side=Side.BUY if ex.side == "BOT" else Side.SELL,
                    quantity=float(ex.shares),
                    price=float(ex.price),
                    commission=float(f.commissionReport.commission),
                    ts=ex.time.astimezone(UTC) if ex.time else now,
                )
            )
            self._fills_seen.add(ex.execId)
        for coid in {f.client_order_id for f in fills}:  # reconcile journals these fills
            delivered = sum(f.quantity for f in fills if f.client_order_id == coid)
            self._delivered[coid] = max(self._delivered.get(coid, 0.0), delivered)
        for fill in fills:  # filled while we were away and no longer open: resolve from executions
            if fill.client_order_id not in orders:
                done = [f for f in fills if f.client_order_id == fill.client_order_id]
                qty = sum(f.quantity for f in done)
                orders[fill.client_order_id] = Order(
                    client_order_id=fill.client_order_id,
                    symbol=fill.symbol,
                    side=fill.side,
                    quantity=qty,
                    order_type=OrderType.MARKET,
                    created_ts=now,
                    status=OrderStatus.FILLED,
                    filled_quantity=qty,
                    average_fill_price=sum(f.price * f.quantity for f in done) / qty,
                    reason="resolved_from_executions",
                )
        pos = {
            symbol_of(p.contract): Position(
                symbol=symbol_of(p.contract),
                quantity=float(p.position),
                average_price=float(p.avgCost),
            )
            for p in positions
            if p.position and (not account or p.account == account)
        }
        return BrokerView(orders=orders, fills=tuple(fills), positions=pos)
