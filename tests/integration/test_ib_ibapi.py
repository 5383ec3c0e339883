"""IB's own Python client (ibapi-stable) against the fake gateway, so the fake is not just ib_async's mirror."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from ibapi.client import EClient
from ibapi.contract import Contract
from ibapi.order import Order
from ibapi.wrapper import EWrapper

from tests.ibgateway import SERVER_VERSION, FakeGateway
from tests.ibgateway.helpers import GatewayThread

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


class App(EWrapper, EClient):
    """Records what IB's reference client decodes."""

    def __init__(self) -> None:
        EWrapper.__init__(self)
        EClient.__init__(self, wrapper=self)
        self.next_id: int | None = None
        self.accounts = ""
        self.bars: list[Any] = []
        self.history_done = threading.Event()
        self.ready = threading.Event()
        self.filled = threading.Event()
        self.statuses: list[tuple[str, Decimal]] = []
        self.executions: list[Any] = []
        self.commissions: list[Any] = []
        self.open_orders: list[Any] = []
        self.errors: list[tuple[int, int]] = []

    def nextValidId(self, orderId: int) -> None:
        self.next_id = orderId
        self.ready.set()

    def managedAccounts(self, accountsList: str) -> None:
        self.accounts = accountsList

    def historicalData(self, reqId: int, bar: Any) -> None:
        self.bars.append(bar)

    def historicalDataEnd(self, reqId: int, start: str, end: str) -> None:
        self.history_done.set()

    def orderStatus(self, orderId: Any, status: str, filled: Decimal, *args: Any) -> None:
        self.statuses.append((status, filled))
        if status == "Filled":
            self.filled.set()

    def openOrder(self, orderId: Any, contract: Any, order: Any, orderState: Any) -> None:
        self.open_orders.append((order.orderRef, orderState.status))

    def execDetails(self, reqId: int, contract: Any, execution: Any) -> None:
        self.executions.append(execution)

    def commissionAndFeesReport(self, report: Any) -> None:
        self.commissions.append(report)

    def error(
        self, reqId: Any, errorTime: int, errorCode: int, errorString: str, advanced: str = ""
    ) -> None:
        self.errors.append((reqId, errorCode))


@pytest.fixture
def gateway() -> Iterator[tuple[GatewayThread, FakeGateway]]:
    runner = GatewayThread()
    with runner as gw:
        yield runner, gw


def test_ibapi_when_connecting_then_handshake_history_and_order_fill_decode(
    gateway: tuple[GatewayThread, FakeGateway],
) -> None:
    runner, gw = gateway
    app = App()
    app.connect("127.0.0.1", gw.port, clientId=7)
    reader = threading.Thread(target=app.run, daemon=True)
    reader.start()
    try:
        assert app.ready.wait(5), "no nextValidId"
        assert app.serverVersion() == SERVER_VERSION
        assert app.accounts == gw.account

        contract = Contract()
        contract.symbol, contract.secType, contract.exchange, contract.currency = (
            "AAPL",
            "STK",
            "SMART",
            "USD",
        )
        app.reqHistoricalData(1, contract, "", "600 S", "1 min", "TRADES", 0, 2, False, [])
        assert app.history_done.wait(5), "no historicalDataEnd"
        assert len(app.bars) == 11  # ten closed bars and the one still forming
        first = gw.market.bar("AAPL", gw.now.replace(minute=50, hour=14), 60)
        assert (app.bars[0].open, app.bars[0].close, app.bars[0].volume) == (
            first.open,
            first.close,
            Decimal(str(first.volume)),
        )

        order = Order()
        order.action, order.orderType, order.totalQuantity, order.orderRef = (
            "BUY",
            "MKT",
            Decimal(25),
            "IBAPI-1",
        )
        assert app.next_id is not None
        app.placeOrder(app.next_id, contract, order)
        assert app.filled.wait(5), f"not filled: {app.statuses} errors={app.errors}"
        runner.call(asyncio.sleep(0.1))
        assert app.statuses[-1] == ("Filled", Decimal(25))
        assert ("IBAPI-1", "Filled") in app.open_orders
        assert app.executions[0].orderRef == "IBAPI-1"
        assert app.executions[0].shares == Decimal(25)
        assert app.commissions[0].commissionAndFees == pytest.approx(1.0)
        assert gw.order_by_ref("IBAPI-1").client_id == 7
    finally:
        app.disconnect()
        reader.join(5)
