"""TradeGate: only live bars within max_age of the gateway's clock trade; the rest warm up."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from daemon.trade_gate import TradeGate
from strategy.types import Bar

T0 = datetime(2024, 1, 2, 15, 0, tzinfo=UTC)


def _bar(symbol: str, minutes: int, origin: str = "live") -> Bar:
    return Bar(
        symbol=symbol,
        ts=T0 + timedelta(minutes=minutes),
        open=1.0,
        high=1.0,
        low=1.0,
        close=1.0,
        volume=1.0,
        origin=origin,  # type: ignore[arg-type]
    )


def test_split_when_backfilled_bars_then_warm_only_and_symbol_tradable_again_on_live_bar() -> None:
    gate = TradeGate(bar_seconds=60, max_age_bars=1)
    verdicts = [
        gate.split(
            [_bar("AAPL", m, "backfill"), _bar("MSFT", m, "backfill")], T0 + timedelta(minutes=3)
        )
        for m in (1, 2)
    ]
    assert all(v.trade == [] and len(v.warm) == 2 for v in verdicts)
    assert verdicts[0].warming == {"AAPL": "backfill", "MSFT": "backfill"}
    assert verdicts[1].warming == {}  # said once per episode
    assert gate.warming == ("AAPL", "MSFT")
    live = gate.split([_bar("AAPL", 3), _bar("MSFT", 3)], T0 + timedelta(minutes=3, seconds=1))
    assert [b.symbol for b in live.trade] == ["AAPL", "MSFT"]
    assert live.tradable == {"AAPL": 2, "MSFT": 2}
    assert gate.warming == ()
    assert gate.warm_up_bars == 4


def test_split_when_live_bar_older_than_max_age_by_gateway_clock_then_warm_too_old() -> None:
    gate = TradeGate(bar_seconds=60, max_age_bars=1)
    fresh = gate.split([_bar("SPY", 10)], T0 + timedelta(minutes=11))  # exactly one bar old
    assert [b.symbol for b in fresh.trade] == ["SPY"]
    stale = gate.split([_bar("SPY", 11)], T0 + timedelta(minutes=12, seconds=1))
    assert stale.trade == []
    assert stale.warming == {"SPY": "too_old"}


def test_split_when_batch_mixes_origins_then_split_per_bar_and_clock_unknown_trusts_origin() -> (
    None
):
    gate = TradeGate(bar_seconds=60, max_age_bars=2)
    verdict = gate.split(
        [_bar("AAPL", 5), _bar("MSFT", 5, "backfill"), _bar("SPY", 5, "replay")], None
    )
    assert [b.symbol for b in verdict.trade] == ["AAPL"]
    assert [b.symbol for b in verdict.warm] == ["MSFT", "SPY"]
    assert verdict.warming == {"MSFT": "backfill", "SPY": "replay"}
