"""IbConfig: how to reach IB Gateway, which contracts to trade, and how to pace and reconnect."""

from __future__ import annotations

import os
from typing import Annotated, Literal

import msgspec

PositiveInt = Annotated[int, msgspec.Meta(gt=0)]
PositiveFloat = Annotated[float, msgspec.Meta(gt=0)]
NonNegativeFloat = Annotated[float, msgspec.Meta(ge=0)]
ClientId = Annotated[int, msgspec.Meta(ge=0, le=2**31 - 1)]
Port = Annotated[int, msgspec.Meta(gt=0, lt=65536)]

SecType = Literal["STK", "ETF", "FUT", "CASH"]
ACCOUNT_ENV = "VLMTRADER_IB_ACCOUNT"

# IB's bar size settings and their length in seconds; sizes under a minute come from 5-second bars.
BAR_SIZES: dict[str, int] = {
    "5 secs": 5,
    "10 secs": 10,
    "15 secs": 15,
    "30 secs": 30,
    "1 min": 60,
    "2 mins": 120,
    "3 mins": 180,
    "5 mins": 300,
    "10 mins": 600,
    "15 mins": 900,
    "20 mins": 1200,
    "30 mins": 1800,
    "1 hour": 3600,
    "2 hours": 7200,
    "3 hours": 10800,
    "4 hours": 14400,
    "8 hours": 28800,
}
# Short spellings accepted on the command line (`--bar 1min`).
BAR_ALIASES: dict[str, str] = {
    "5s": "5 secs",
    "10s": "10 secs",
    "15s": "15 secs",
    "30s": "30 secs",
    "1min": "1 min",
    "2min": "2 mins",
    "3min": "3 mins",
    "5min": "5 mins",
    "10min": "10 mins",
    "15min": "15 mins",
    "20min": "20 mins",
    "30min": "30 mins",
    "1h": "1 hour",
    "2h": "2 hours",
    "3h": "3 hours",
    "4h": "4 hours",
    "8h": "8 hours",
}


class IbContractConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One instrument; `symbol` is also the name bars carry (EURUSD for forex, ES for futures)."""

    symbol: str
    sec_type: SecType = "STK"
    exchange: str = ""
    currency: str = "USD"
    primary_exchange: str = ""
    last_trade_date: str = ""
    local_symbol: str = ""
    multiplier: str = ""

    @property
    def default_exchange(self) -> str:
        if self.exchange:
            return self.exchange
        return {"CASH": "IDEALPRO", "FUT": "CME"}.get(self.sec_type, "SMART")


class IbBackoffConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Reconnect delays: initial * multiplier**attempt, capped at max, times 1 +- jitter.

    A refused connection (nothing listens: the Gateway restarts) is retried every
    refused_retry_seconds instead, so the session is back within seconds of the port opening.
    """

    initial_seconds: PositiveFloat = 1.0
    max_seconds: PositiveFloat = 60.0
    multiplier: Annotated[float, msgspec.Meta(ge=1)] = 2.0
    jitter: Annotated[float, msgspec.Meta(ge=0, le=1)] = 0.2
    refused_retry_seconds: PositiveFloat = 2.0


class IbPacingConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """IB's historical data pacing limits (defaults are IB's published rules)."""

    max_open: PositiveInt = 50
    identical_seconds: NonNegativeFloat = 15.0
    window_requests: PositiveInt = 60
    window_seconds: PositiveFloat = 600.0
    same_contract_requests: PositiveInt = 6
    same_contract_seconds: NonNegativeFloat = 2.0
    min_spacing_seconds: NonNegativeFloat = 0.0
    violation_pause_seconds: NonNegativeFloat = 15.0


class IbConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """IB Gateway connection (paper 4002, live 4001), contracts, bars, pacing and reconnects."""

    host: str = "127.0.0.1"
    port: Port = 4002
    client_id: ClientId = 1
    fallback_client_ids: tuple[ClientId, ...] = ()
    order_client_id: ClientId | None = None
    account: str = ""  # empty: $VLMTRADER_IB_ACCOUNT, else the single managed account
    contracts: tuple[IbContractConfig, ...] = ()
    bar_size: str = "1 min"
    what_to_show: Literal["TRADES", "MIDPOINT", "BID", "ASK", "BID_ASK"] = "TRADES"
    use_rth: bool = False
    connect_timeout_seconds: PositiveFloat = 10.0
    request_timeout_seconds: PositiveFloat = 60.0
    stale_factor: PositiveFloat = 2.0
    batch_grace_seconds: NonNegativeFloat = 2.0
    # A bar is traded only if it is live and closed at most this many bar intervals before the
    # gateway's clock; older and backfilled bars only warm the windows.
    max_bar_age_bars: PositiveFloat = 1.0
    # submit() waits this long for a healthy link (connected, no open 1100), then rejects the order.
    submit_wait_seconds: PositiveFloat = 10.0
    backoff: IbBackoffConfig = msgspec.field(default_factory=IbBackoffConfig)
    pacing: IbPacingConfig = msgspec.field(default_factory=IbPacingConfig)

    @property
    def effective_account(self) -> str:
        """ib.account, else the VLMTRADER_IB_ACCOUNT environment variable ("" = IB's only account)."""
        return self.account or os.environ.get(ACCOUNT_ENV, "").strip()

    @property
    def bar_seconds(self) -> int:
        return BAR_SIZES[self.bar_size]

    @property
    def uses_realtime_bars(self) -> bool:
        """Sizes under one minute are built from reqRealTimeBars' 5-second bars."""
        return self.bar_seconds < 60

    def symbols(self) -> tuple[str, ...]:
        return tuple(c.symbol for c in self.contracts)


def normalize_bar_size(text: str) -> str:
    """'1min' or '1 min' -> '1 min'; raises ValueError naming the accepted sizes."""
    size = BAR_ALIASES.get(text.strip().lower().replace(" ", ""), text.strip())
    if size not in BAR_SIZES:
        msg = f"unknown bar size {text!r}: use one of {', '.join(BAR_ALIASES)}"
        raise ValueError(msg)
    return size


def check_ib(cfg: IbConfig, *, bar_seconds: int | None = None) -> str | None:
    """Cross-field rules; returns a sentence a human can act on, or None."""
    if cfg.bar_size not in BAR_SIZES:
        return (
            f"ib.bar_size {cfg.bar_size!r} is not an IB bar size: use one of {', '.join(BAR_SIZES)}"
        )
    if bar_seconds is not None and cfg.bar_seconds != bar_seconds:
        return (
            f"ib.bar_size ({cfg.bar_size} = {cfg.bar_seconds}s) differs from bars.bar_seconds "
            f"({bar_seconds}): make them equal"
        )
    if not cfg.contracts:
        return "ib.contracts is empty: list at least one contract (symbol, sec_type)"
    symbols = [c.symbol for c in cfg.contracts]
    if len(set(symbols)) != len(symbols):
        return "ib.contracts lists a symbol twice: each symbol once"
    ids = [cfg.client_id, *cfg.fallback_client_ids]
    if cfg.order_client_id is not None and cfg.order_client_id in ids:
        return "ib.order_client_id must differ from ib.client_id and ib.fallback_client_ids"
    for c in cfg.contracts:
        if c.sec_type == "FUT" and not (c.last_trade_date or c.local_symbol):
            return (
                f"ib.contracts {c.symbol}: a future needs last_trade_date (YYYYMM) or local_symbol"
            )
        if c.sec_type == "CASH" and len(c.symbol) != 6:
            return f"ib.contracts {c.symbol}: a forex pair is six letters, like EURUSD"
    return None
