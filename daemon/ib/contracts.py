"""Our contract configs as ib_async contracts, and back to our symbol names."""

from __future__ import annotations

from ib_async import Contract, Forex, Future, Stock

from daemon.ib.config import IbContractConfig


def to_ib_contract(c: IbContractConfig) -> Contract:
    """Our contract config as an ib_async Contract (ETF is an STK at IB)."""
    exchange = c.default_exchange
    if c.sec_type == "CASH":
        return Forex(c.symbol, exchange=exchange)
    if c.sec_type == "FUT":
        return Future(
            c.symbol,
            c.last_trade_date,
            exchange,
            localSymbol=c.local_symbol,
            multiplier=c.multiplier,
            currency=c.currency,
        )
    return Stock(c.symbol, exchange, c.currency, primaryExchange=c.primary_exchange)


def symbol_of(contract: Contract) -> str:
    """Our symbol name for a broker contract (EURUSD for forex)."""
    if contract.secType == "CASH":
        return f"{contract.symbol}{contract.currency}"
    return str(contract.symbol)
