"""A fake IB Gateway speaking the TWS API wire protocol, for integration tests."""

from tests.ibgateway.market import Market, MarketBar
from tests.ibgateway.protocol import SERVER_VERSION
from tests.ibgateway.server import DEFAULT_CONTRACTS, FakeGateway, GatewayContract, Scenario

__all__ = [
    "DEFAULT_CONTRACTS",
    "SERVER_VERSION",
    "FakeGateway",
    "GatewayContract",
    "Market",
    "MarketBar",
    "Scenario",
]
