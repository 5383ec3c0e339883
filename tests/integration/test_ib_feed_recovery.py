"""IbFeed recovery against the fake gateway: pacing waits during a resubscribe, a timed restart,
and bars that say where they came from."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from typing import Any

import pytest
from structlog.testing import capture_logs

from daemon.ib.config import IbBackoffConfig, IbPacingConfig
from daemon.ib.feed import IbFeed
from tests.ibgateway import FakeGateway
from tests.ibgateway.helpers import Collector, fast_config, until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]
SYMBOLS = ("AAPL", "MSFT", "SPY")


def run(coro: Any) -> Any:
    return asyncio.run(coro)


async def _tick(gw: FakeGateway) -> None:
    """The market keeps moving (one bar per 20 ms) while the feed waits on the pacer."""
    while True:
        await gw.advance(60)
        await asyncio.sleep(0.02)


def test_resubscribe_when_pacer_delays_requests_then_every_symbol_backfilled_to_its_gap() -> None:
    async def scenario() -> None:
        pacing = IbPacingConfig(identical_seconds=0.2, violation_pause_seconds=0.4)
        async with FakeGateway() as gw:
            cfg = fast_config(gw.port, symbols=SYMBOLS, pacing=pacing)
            async with IbFeed(config=cfg) as feed:
                got = Collector(feed.closed_bars(resume_after=gw.now))
                await until(lambda: feed.resubscriptions >= 3, what="first subscriptions")
                await gw.advance(60)
                await got.wait_bars("SPY", 1)
                gw.scenario.pacing_violations = 3  # 162 on the next requests: pacing pauses
                ticker = asyncio.create_task(_tick(gw))
                with capture_logs() as logs:
                    gw.restore_connectivity(data_lost=True)  # 1101: every symbol resubscribes
                    await until(
                        lambda: sum(e["event"] == "feed.resubscribed" for e in logs) >= 3,
                        timeout=15,
                        what="three resubscriptions",
                    )
                ticker.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await ticker
                await gw.advance(60)
                for symbol in SYMBOLS:
                    await until(
                        lambda s=symbol: bool(got.bars(s)) and got.bars(s)[-1].ts == gw.now,
                        what=f"{symbol} live again",
                    )
                await got.close()
        resubscribed = [e for e in logs if e["event"] == "feed.resubscribed"]
        assert sum(e["event"] == "feed.pacing_violation" for e in logs) == 3
        # Each symbol fetched the gap it had when its request went out, however long it waited.
        assert max(e["gap_bars"] for e in resubscribed) >= 10
        assert all(e["backfilled"] >= e["gap_bars"] for e in resubscribed), resubscribed
        for symbol in SYMBOLS:
            bars = got.bars(symbol)
            steps = {(b.ts - a.ts).total_seconds() for a, b in itertools.pairwise(bars)}
            assert steps == {60.0}, f"{symbol}: a hole or a repeat in {len(bars)} bars"
            origins = [b.origin for b in bars]
            assert origins[-1] == "live"
            assert "backfill" in origins

    run(scenario())


def test_restart_when_gateway_down_n_seconds_then_data_session_back_within_n_plus_5() -> None:
    outage = 5.0

    async def scenario() -> None:
        async with FakeGateway() as gw:
            # The shipped reconnect settings: 1 s backoff doubling to 60 s, 2 s on a refused port.
            cfg = fast_config(gw.port, backoff=IbBackoffConfig())
            async with IbFeed(config=cfg) as feed:
                got = Collector(feed.closed_bars(resume_after=gw.now))
                await until(lambda: feed.resubscriptions >= 2, what="first subscriptions")
                loop = asyncio.get_running_loop()
                with capture_logs() as logs:
                    down = loop.time()
                    await gw.restart(outage)  # refuses connections for `outage` seconds
                    await until(
                        lambda: feed.connected and feed.session.generation >= 2,
                        timeout=outage + 10,
                        what="reconnect",
                    )
                    back = loop.time() - down
                    await gw.advance(60)
                    await got.wait_bars("AAPL", 1)
                await got.close()
        retries = [e for e in logs if e["event"] == "feed.reconnecting"]
        assert retries
        assert all(e["failure"] == "refused" and e["delay_seconds"] == 2.0 for e in retries)
        assert back <= outage + 5, f"data session back after {back:.1f}s"

    run(scenario())
