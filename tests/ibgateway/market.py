"""A deterministic market: each bar is a pure function of (symbol, bar start), so tests can check
that nothing went missing or was doubled after a reconnect by comparing against market.bar()."""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta


@dataclass(frozen=True)
class MarketBar:
    start: datetime
    open: float
    high: float
    low: float
    close: float
    volume: float
    wap: float
    count: int


def _unit(*parts: object) -> float:
    """A stable pseudo-random number in [0, 1) from its inputs."""
    digest = hashlib.blake2b("|".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


class Market:
    """Prices for any symbol at any time, trading 24/7; no state, no clock."""

    def __init__(self, *, seed: int = 7, base_prices: dict[str, float] | None = None) -> None:
        self.seed = seed
        self.base_prices = base_prices or {}

    def price(self, symbol: str, ts: datetime) -> float:
        base = self.base_prices.get(symbol, 50.0 + 150.0 * _unit(self.seed, symbol))
        t = ts.timestamp()
        wave = 0.02 * math.sin(t / 1800.0 + _unit(symbol) * 6.28) + 0.01 * math.sin(t / 300.0)
        noise = 0.002 * (_unit(self.seed, symbol, int(t)) - 0.5)
        return round(base * (1.0 + wave + noise), 2)

    def bar(self, symbol: str, start: datetime, seconds: int) -> MarketBar:
        """The finished bar that starts at `start` and lasts `seconds`."""
        end = start + timedelta(seconds=seconds)
        open_ = self.price(symbol, start)
        close = self.price(symbol, end)
        spread = 0.001 * open_ * (0.5 + _unit(self.seed, symbol, "hl", start.timestamp()))
        high = round(max(open_, close) + spread, 2)
        low = round(min(open_, close) - spread, 2)
        volume = float(100 * (1 + int(50 * _unit(self.seed, symbol, "v", start.timestamp()))))
        wap = round((open_ + close + high + low) / 4.0, 4)
        return MarketBar(
            start=start,
            open=open_,
            high=high,
            low=low,
            close=close,
            volume=volume,
            wap=wap,
            count=int(volume // 100),
        )

    def partial(self, symbol: str, start: datetime, seconds: int) -> MarketBar:
        """The same bar part-way through (as IB shows the bar still forming)."""
        done = self.bar(symbol, start, seconds)
        mid = self.price(symbol, start + timedelta(seconds=seconds / 2))
        return MarketBar(
            start=start,
            open=done.open,
            high=max(done.open, mid),
            low=min(done.open, mid),
            close=mid,
            volume=done.volume // 2,
            wap=done.wap,
            count=done.count // 2,
        )


def align(ts: datetime, seconds: int) -> datetime:
    """Floor ts to a multiple of `seconds` since the epoch."""
    epoch = int(ts.timestamp())
    return datetime.fromtimestamp(epoch - epoch % seconds, tz=UTC)
