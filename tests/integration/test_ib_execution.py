"""IbExecution (real ib_async over TCP) against the fake IB Gateway: orders, fills, reconnects."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import pytest

from daemon.execution.base import BrokerUpdates
from daemon.ib.execution import IbExecution
from strategy.types import Fill, Order, OrderEvent, OrderStatus, OrderType, Side
from tests.ibgateway import FakeGateway
from tests.ibgateway.helpers import fast_config, until
from tests.ibgateway.protocol import In

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def order(
    coid: str, *, side: Side = Side.BUY, qty: float = 100, limit: float | None = None
) -> Order:
    return Order(
        client_order_id=coid,
        symbol="AAPL",
        side=side,
        quantity=qty,
        order_type=OrderType.LIMIT if limit else OrderType.MARKET,
        limit_price=limit,
        created_ts=datetime(2024, 1, 2, 15, tzinfo=UTC),
    )


class Updates:
    """Accumulates drain() output."""

    def __init__(self, ex: IbExecution) -> None:
        self.ex = ex
        self.events: list[OrderEvent] = []
        self.fills: list[Fill] = []

    def pull(self) -> BrokerUpdates:
        u = self.ex.drain()
        self.events += u.events
        self.fills += u.fills
        return u

    def statuses(self, coid: str) -> list[OrderStatus]:
        return [e.status for e in self.events if e.client_order_id == coid]

    async def until_status(self, coid: str, status: OrderStatus) -> None:
        def seen() -> bool:
            self.pull()
            return status in self.statuses(coid)

        await until(seen, what=f"{coid} {status}")


def place_count(gw: FakeGateway) -> int:
    return sum(1 for _, msg in gw.requests if msg == In.PLACE_ORDER)


def test_market_order_when_filled_then_orderref_events_fill_and_commission_come_back() -> None:
    async def scenario() -> None:
        async with FakeGateway() as gw, IbExecution(config=fast_config(gw.port)) as ex:
            u = Updates(ex)
            await ex.submit([order("VT-1")])
            await u.until_status("VT-1", OrderStatus.FILLED)
            await until(lambda: bool(u.pull().fills) or bool(u.fills), what="fill")
            assert gw.order_by_ref("VT-1").quantity == 100
            (fill,) = u.fills
            assert (fill.client_order_id, fill.symbol, fill.side, fill.quantity) == (
                "VT-1",
                "AAPL",
                Side.BUY,
                100,
            )
            assert fill.commission == pytest.approx(1.0)
            assert fill.price == gw.executions[0].price
            assert u.events[-1].filled_quantity == 100

    run(scenario())


def test_market_order_when_partially_filled_then_partial_status_and_two_fills() -> None:
    async def scenario() -> None:
        async with FakeGateway() as gw, IbExecution(config=fast_config(gw.port)) as ex:
            gw.scenario.fill = "partial"
            u = Updates(ex)
            await ex.submit([order("VT-2")])
            await u.until_status("VT-2", OrderStatus.FILLED)
            await until(lambda: (u.pull(), len(u.fills) == 2)[1], what="two fills")
            assert OrderStatus.PARTIALLY_FILLED in u.statuses("VT-2")
            assert sum(f.quantity for f in u.fills) == pytest.approx(100)
            assert len({f.fill_id for f in u.fills}) == 2

    run(scenario())


def test_order_when_rejected_then_rejected_event_with_broker_reason() -> None:
    async def scenario() -> None:
        async with FakeGateway() as gw, IbExecution(config=fast_config(gw.port)) as ex:
            gw.scenario.fill = "reject"
            u = Updates(ex)
            await ex.submit([order("VT-3")])
            await u.until_status("VT-3", OrderStatus.REJECTED)
            rejected = next(e for e in u.events if e.status is OrderStatus.REJECTED)
            assert rejected.reason.startswith("201")
            assert OrderStatus.CANCELLED not in u.statuses("VT-3")
            assert not u.fills

    run(scenario())


def test_limit_order_when_resting_then_cancel_gives_cancelled() -> None:
    async def scenario() -> None:
        async with FakeGateway() as gw, IbExecution(config=fast_config(gw.port)) as ex:
            u = Updates(ex)
            await ex.submit([order("VT-4", limit=1.0)])
            await u.until_status("VT-4", OrderStatus.ACCEPTED)
            await ex.cancel("VT-4")
            await u.until_status("VT-4", OrderStatus.CANCELLED)
            assert gw.order_by_ref("VT-4").status == "Cancelled"

    run(scenario())


def test_submit_when_same_client_order_id_twice_or_after_reconnect_then_sent_once() -> None:
    async def scenario() -> None:
        async with FakeGateway() as gw, IbExecution(config=fast_config(gw.port)) as ex:
            gw.scenario.fill = "hold"
            await ex.submit([order("VT-5")])
            await ex.submit([order("VT-5")])
            generation = ex.generation
            gw.drop_connections()
            await until(lambda: ex.generation > generation and ex.session.ready, what="reconnect")
            fresh = IbExecution(config=fast_config(gw.port, client_id=11), session=ex.session)
            await fresh.submit([order("VT-5")])  # a new adapter knows VT-5 from IB's open orders
            await asyncio.sleep(0.1)
            assert place_count(gw) == 1

    run(scenario())


def test_order_when_ack_is_delayed_then_status_arrives_later_and_nothing_is_resent() -> None:
    async def scenario() -> None:
        async with FakeGateway() as gw, IbExecution(config=fast_config(gw.port)) as ex:
            gw.scenario.ack_delay = 0.3
            u = Updates(ex)
            await ex.submit([order("VT-6")])
            await asyncio.sleep(0.1)
            u.pull()
            assert OrderStatus.FILLED not in u.statuses("VT-6")
            await u.until_status("VT-6", OrderStatus.FILLED)
            assert place_count(gw) == 1

    run(scenario())


def test_broker_view_when_fill_happened_while_disconnected_then_reconnect_shows_it_for_reconcile() -> (
    None
):
    async def scenario() -> None:
        async with FakeGateway() as gw, IbExecution(config=fast_config(gw.port)) as ex:
            gw.scenario.fill = "hold"
            await ex.submit([order("VT-8"), order("VT-9", side=Side.SELL, qty=50, limit=1.0)])
            await until(
                lambda: (
                    len(gw.orders) == 2 and all(o.status == "Submitted" for o in gw.orders.values())
                ),
                what="orders working",
            )
            generation = ex.generation
            await gw.stop()
            gw.fill(gw.order_by_ref("VT-8"))  # fills while we are away
            await gw.start()
            await until(
                lambda: ex.generation > generation and ex.session.ready,
                timeout=10,
                what="reconnect",
            )
            view = await ex.broker_view()
            assert view.orders["VT-8"].status is OrderStatus.FILLED
            assert view.orders["VT-9"].status is OrderStatus.ACCEPTED
            assert [f.client_order_id for f in view.fills] == ["VT-8"]
            assert view.fills[0].commission == pytest.approx(1.0)
            assert view.positions["AAPL"].quantity == 100
            assert place_count(gw) == 2

    run(scenario())


def test_broker_view_when_order_placed_by_another_client_then_reported_as_external() -> None:
    async def scenario() -> None:
        async with FakeGateway() as gw:
            async with IbExecution(config=fast_config(gw.port, client_id=21)) as other:
                gw.scenario.fill = "hold"
                await other.submit([order("MANUAL-1")])
                await until(lambda: len(gw.orders) == 1, what="order at gateway")
                async with IbExecution(config=fast_config(gw.port, client_id=22)) as ex:
                    view = await ex.broker_view()
            assert "MANUAL-1" in view.orders
            assert view.orders["MANUAL-1"].status is OrderStatus.ACCEPTED

    run(scenario())


def test_submit_when_link_lost_1100_then_waits_and_sends_once_restored() -> None:
    async def scenario() -> None:
        async with FakeGateway() as gw, IbExecution(config=fast_config(gw.port)) as ex:
            gw.lose_connectivity()
            await until(lambda: not ex.session.healthy.is_set(), what="1100 seen")
            submit = asyncio.create_task(ex.submit([order("VT-1")]))
            done, _ = await asyncio.wait({submit}, timeout=0.3)
            assert not done  # still waiting on the link: nothing sent into the outage
            assert place_count(gw) == 0
            gw.restore_connectivity(data_lost=False)
            await asyncio.wait_for(submit, 5)
            u = Updates(ex)
            await u.until_status("VT-1", OrderStatus.FILLED)
            assert gw.order_by_ref("VT-1").quantity == 100

    run(scenario())


def test_submit_when_link_stays_lost_past_submit_wait_then_rejected_with_reason_not_sent() -> None:
    async def scenario() -> None:
        async with FakeGateway() as gw:
            config = fast_config(gw.port, submit_wait_seconds=0.3)
            async with IbExecution(config=config) as ex:
                gw.lose_connectivity()
                await until(lambda: not ex.session.healthy.is_set(), what="1100 seen")
                await asyncio.wait_for(ex.submit([order("VT-1"), order("VT-2")]), 5)
                u = Updates(ex)
                u.pull()
                assert place_count(gw) == 0
                assert [(e.client_order_id, e.status, e.reason) for e in u.events] == [
                    ("VT-1", OrderStatus.REJECTED, "link_lost"),
                    ("VT-2", OrderStatus.REJECTED, "link_lost"),
                ]

    run(scenario())


def test_drain_when_filled_status_comes_before_its_commission_then_status_waits_for_the_fill() -> (
    None
):
    async def scenario() -> None:
        async with FakeGateway() as gw, IbExecution(config=fast_config(gw.port)) as ex:
            gw.scenario.commission_delay = 0.3
            await ex.submit([order("VT-1")])
            await until(
                lambda: any(t.orderStatus.status == "Filled" for t in ex.ib.trades()),
                what="Filled status at the client",
            )
            early = ex.drain()
            # The status already says 100 filled, but no fill has been handed out yet: it waits.
            assert OrderStatus.FILLED not in [e.status for e in early.events]
            assert early.fills == ()
            u = Updates(ex)
            await until(lambda: bool(u.pull().fills) or bool(u.fills), what="the fill")
            await u.until_status("VT-1", OrderStatus.FILLED)
            assert sum(f.quantity for f in u.fills) == 100
            filled = [e for e in u.events if e.status is OrderStatus.FILLED]
            assert [e.filled_quantity for e in filled] == [100]

    run(scenario())
