"""Which bars of a batch may trade: live bars that closed within max_age of the gateway's clock.

After a (re)connect, a resubscribe or a stale stream, a broker feed backfills the bars it missed.
They fill the windows and features, but an order on a bar minutes old would trade a market that
has moved on: those bars (origin backfill or replay, or live but too old by the gateway's clock)
only warm up. The gate is a value-in, value-out object (the caller passes the clock reading;
report() logs and journals what it returns); it tracks which symbols are warming so the daemon can say once how many
bars each used for warm-up and when it is tradable again.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

import structlog

from daemon.journal import Journal
from strategy.types import Bar

log = structlog.get_logger("daemon.trade_gate")


@dataclass(frozen=True, slots=True)
class GateVerdict:
    """One batch split in two, plus the symbols whose state changed with it."""

    warm: list[Bar]  # store and mark only
    trade: list[Bar]  # the normal path: score, decide, order
    warming: dict[str, str] = field(default_factory=dict)  # symbol -> why it stopped trading
    tradable: dict[str, int] = field(default_factory=dict)  # symbol -> warm-up bars it took


class TradeGate:
    """Splits batches into warm-up and tradable bars; remembers who is warming and for how long."""

    def __init__(self, *, bar_seconds: int, max_age_bars: float) -> None:
        self.max_age_seconds = bar_seconds * max_age_bars
        self._warming: dict[str, int] = {}  # symbol -> warm-up bars so far
        self.warm_up_bars = 0  # over the whole run

    @property
    def warming(self) -> tuple[str, ...]:
        return tuple(sorted(self._warming))

    def split(self, batch: Sequence[Bar], now: datetime | None) -> GateVerdict:
        """now is the gateway's clock (None: unknown, then only the origin decides)."""
        verdict = GateVerdict(warm=[], trade=[])
        for bar in batch:
            why = self._why_not(bar, now)
            if why is None:
                verdict.trade.append(bar)
                if bar.symbol in self._warming:
                    verdict.tradable[bar.symbol] = self._warming.pop(bar.symbol)
                continue
            verdict.warm.append(bar)
            self.warm_up_bars += 1
            if bar.symbol not in self._warming:
                self._warming[bar.symbol] = 0
                verdict.warming[bar.symbol] = why
            self._warming[bar.symbol] += 1
        return verdict

    def _why_not(self, bar: Bar, now: datetime | None) -> str | None:
        if bar.origin != "live":
            return bar.origin
        if now is not None and (now - bar.ts).total_seconds() > self.max_age_seconds:
            return "too_old"
        return None


def report(verdict: GateVerdict, gate: TradeGate, journal: Journal, bar_ts: datetime) -> None:
    """Log and journal the symbols that stopped trading (warming) or are tradable again."""
    if verdict.warming:
        log.warning(
            "warm_up.started",
            bar_ts=bar_ts.isoformat(),
            symbols=sorted(verdict.warming),
            reasons=verdict.warming,
        )
    if not verdict.tradable:
        return
    log.info(
        "warm_up.finished",
        bar_ts=bar_ts.isoformat(),
        symbols=sorted(verdict.tradable),
        warm_up_bars=verdict.tradable,
        still_warming=list(gate.warming),
    )
    entry = {"bar_ts": bar_ts.isoformat(), "warm_up_bars": verdict.tradable}
    journal.record(
        kv={
            "warm_up_bars_total": str(gate.warm_up_bars),
            "last_tradable": json.dumps(entry, sort_keys=True),
        }
    )
