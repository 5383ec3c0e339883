"""IbFeed (real ib_async over TCP) against the fake IB Gateway: bars, reconnects, IB's codes."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from structlog.testing import capture_logs

from daemon.ib.bars import duration_for
from daemon.ib.config import IbBackoffConfig, IbContractConfig
from daemon.ib.feed import IbFeed
from daemon.ib.session import backoff_delay
from strategy.types import Bar
from tests.ibgateway import DEFAULT_CONTRACTS, FakeGateway, GatewayContract
from tests.ibgateway.helpers import Collector, fast_config, until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def assert_matches_market(gw: FakeGateway, bars: list[Bar], seconds: int = 60) -> None:
    for bar in bars:
        want = gw.market.bar(bar.symbol, bar.ts - timedelta(seconds=seconds), seconds)
        assert (bar.open, bar.high, bar.low, bar.close, bar.volume) == (
            want.open,
            want.high,
            want.low,
            want.close,
            want.volume,
        ), bar


def assert_contiguous(bars: list[Bar], seconds: int = 60) -> None:
    steps = {(b.ts - a.ts).total_seconds() for a, b in itertools.pairwise(bars)}
    assert steps <= {float(seconds)}, f"gaps or duplicates: {sorted(steps)}"


def test_backfill_when_connected_then_last_n_closed_bars_per_symbol_match_market() -> None:
    async def scenario() -> None:
        async with FakeGateway() as gw, IbFeed(config=fast_config(gw.port)) as feed:
            batches = await feed.backfill(10)
            assert len(batches) == 10
            assert all([b.symbol for b in batch] == ["AAPL", "MSFT"] for batch in batches)
            assert batches[-1][0].ts == gw.now  # the bar closing now, not the one still forming
            bars = [b for batch in batches for b in batch]
            assert_matches_market(gw, bars)
            before = await feed.backfill(3, before=gw.now - timedelta(minutes=30))
            assert [batch[0].ts for batch in before] == [
                gw.now - timedelta(minutes=m) for m in (32, 31, 30)
            ]

    run(scenario())


def test_start_when_a_symbol_does_not_qualify_then_it_is_skipped_and_others_stream() -> None:
    async def scenario() -> None:
        async with FakeGateway() as gw:
            with capture_logs() as logs:
                async with IbFeed(config=fast_config(gw.port, symbols=("AAPL", "NOPE"))) as feed:
                    assert set(feed.streams) == {"AAPL"}
                    assert "NOPE" in feed.skipped
            assert any(e["event"] == "contract.unqualified" and e["symbol"] == "NOPE" for e in logs)

    run(scenario())


def test_contracts_when_etf_future_and_forex_then_all_qualify_with_our_symbol_names() -> None:
    async def scenario() -> None:
        contracts = (
            IbContractConfig(symbol="SPY", sec_type="ETF"),
            IbContractConfig(symbol="ES", sec_type="FUT", last_trade_date="202512"),
            IbContractConfig(symbol="EURUSD", sec_type="CASH"),
        )
        async with (
            FakeGateway() as gw,
            IbFeed(config=fast_config(gw.port, contracts=contracts)) as feed,
        ):
            assert {s: st.contract.conId for s, st in feed.streams.items()} == {
                "SPY": 756733,
                "ES": 495512563,
                "EURUSD": 12087792,
            }
            batches = await feed.backfill(2)
            assert {b.symbol for batch in batches for b in batch} == {"SPY", "ES", "EURUSD"}

    run(scenario())


def test_closed_bars_when_market_advances_then_each_closed_bar_once_in_order_batched_by_ts() -> (
    None
):
    async def scenario() -> None:
        async with FakeGateway() as gw, IbFeed(config=fast_config(gw.port)) as feed:
            resume = gw.now
            got = Collector(feed.closed_bars(resume_after=resume))
            await until(lambda: feed.resubscriptions >= 2, what="subscriptions")
            for _ in range(5):
                await gw.advance(60)
                await asyncio.sleep(0.02)
            bars = await got.wait_bars("MSFT", 5)
            await got.close()
            assert [b.ts for b in got.bars("AAPL")] == [
                resume + timedelta(minutes=m) for m in range(1, 6)
            ]
            assert all(len(batch) == 2 and batch[0].ts == batch[1].ts for batch in got.batches)
            assert_matches_market(gw, bars + got.bars("AAPL"))

    run(scenario())


def test_closed_bars_when_resuming_from_an_older_bar_then_gap_is_backfilled_without_duplicates() -> (
    None
):
    async def scenario() -> None:
        async with FakeGateway() as gw, IbFeed(config=fast_config(gw.port)) as feed:
            resume = gw.now - timedelta(minutes=7)
            got = Collector(feed.closed_bars(resume_after=resume))
            bars = await got.wait_bars("AAPL", 7)
            await gw.advance(60)
            bars = await got.wait_bars("AAPL", 8)
            await got.close()
            assert bars[0].ts == resume + timedelta(minutes=1)
            assert_contiguous(bars)
            assert_matches_market(gw, bars)

    run(scenario())


def _drop(gw: FakeGateway) -> Any:
    async def fault() -> None:
        gw.drop_connections()

    return fault


def _restart(gw: FakeGateway) -> Any:
    async def fault() -> None:
        await gw.restart(outage=0.3)

    return fault


def _lost_then(gw: FakeGateway, *, data_lost: bool) -> Any:
    async def fault() -> None:
        gw.lose_connectivity()
        await asyncio.sleep(0.05)
        await gw.advance(60)
        await gw.advance(60)
        gw.restore_connectivity(data_lost=data_lost)

    return fault


@pytest.mark.parametrize(
    "fault_name", ["socket_drop", "nightly_restart", "1100_then_1102", "1100_then_1101"]
)
def test_stream_when_fault_mid_stream_then_reconnected_resubscribed_and_no_bar_missing_or_doubled(
    fault_name: str,
) -> None:
    async def scenario() -> None:
        async with FakeGateway() as gw, IbFeed(config=fast_config(gw.port)) as feed:
            faults = {
                "socket_drop": _drop(gw),
                "nightly_restart": _restart(gw),
                "1100_then_1102": _lost_then(gw, data_lost=False),
                "1100_then_1101": _lost_then(gw, data_lost=True),
            }
            resume = gw.now
            got = Collector(feed.closed_bars(resume_after=resume))
            await until(lambda: feed.resubscriptions >= 2, what="first subscriptions")
            await gw.advance(60)
            await got.wait_bars("AAPL", 1)
            subscriptions_before = feed.resubscriptions
            with capture_logs() as logs:
                await faults[fault_name]()
                await gw.advance(60)  # bars close while we are away (not delivered live)
                await until(
                    lambda: feed.resubscriptions >= subscriptions_before + 2,
                    timeout=10,
                    what="resubscription after the fault",
                )
                await gw.advance(60)
                bars = await got.wait_bars("AAPL", 5 if "1100" in fault_name else 3)
            await got.close()
            names = [e["event"] for e in logs]
            assert "feed.resubscribed" in names
            if fault_name in ("socket_drop", "nightly_restart"):
                assert "feed.disconnected" in names
                assert "feed.connected" in names
            else:
                assert "feed.link_lost" in names
                assert "feed.link_restored" in names
            assert bars[0].ts == resume + timedelta(minutes=1)
            assert bars[-1].ts == gw.now
            assert_contiguous(bars)
            assert_contiguous(got.bars("MSFT"))
            assert_matches_market(gw, bars)

    run(scenario())


def test_connect_when_first_client_id_in_use_then_326_moves_to_fallback_id() -> None:
    async def scenario() -> None:
        async with FakeGateway() as gw:
            gw.scenario.client_ids_in_use = {11}
            with capture_logs() as logs:
                async with IbFeed(
                    config=fast_config(gw.port, fallback_client_ids=(12, 13))
                ) as feed:
                    assert feed.session.client_id == 12
                    assert gw.client_ids() == [12]
            assert any(e["event"] == "ib.client_id_in_use" and e["client_id"] == 11 for e in logs)

    run(scenario())


def test_connect_when_every_client_id_in_use_then_clear_error_and_keeps_retrying() -> None:
    async def scenario() -> None:
        async with FakeGateway() as gw:
            gw.scenario.client_ids_in_use = {11, 12}
            feed = IbFeed(config=fast_config(gw.port, fallback_client_ids=(12,)))
            with capture_logs() as logs:
                enter = asyncio.create_task(feed.__aenter__())
                await until(
                    lambda: sum(e["event"] == "ib.client_ids_exhausted" for e in logs) >= 2,
                    what="two exhausted rounds",
                )
                gw.scenario.client_ids_in_use = set()
                await asyncio.wait_for(enter, 5)
            assert feed.session.client_id == 11
            await feed.__aexit__(None, None, None)

    run(scenario())


def test_connect_when_gateway_refuses_then_retries_at_fixed_interval_and_connects_when_it_listens() -> (
    None
):
    async def scenario() -> None:
        gw = FakeGateway()
        await gw.start()
        port = gw.port
        await gw.stop()  # nothing listens: connection refused
        feed = IbFeed(config=fast_config(port))
        with capture_logs() as logs:
            enter = asyncio.create_task(feed.__aenter__())
            await until(
                lambda: sum(e["event"] == "feed.reconnecting" for e in logs) >= 4, what="4 retries"
            )
            await gw.start()
            await asyncio.wait_for(enter, 5)
        retries = [e for e in logs if e["event"] == "feed.reconnecting"]
        # A refused port is the Gateway restarting: a short fixed interval, no growing backoff.
        assert {e["failure"] for e in retries} == {"refused"}
        assert {e["delay_seconds"] for e in retries} == {0.1}
        assert feed.connected
        await feed.__aexit__(None, None, None)
        await gw.stop()

    run(scenario())


def test_connect_when_port_answers_but_handshake_fails_then_backoff_grows() -> None:
    async def scenario() -> None:
        async def hang_up(_r: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.close()  # the port answers, the API handshake never completes

        server = await asyncio.start_server(hang_up, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        feed = IbFeed(config=fast_config(port, connect_timeout_seconds=0.2))
        with capture_logs() as logs:
            enter = asyncio.create_task(feed.__aenter__())
            await until(
                lambda: sum(e["event"] == "feed.reconnecting" for e in logs) >= 3, what="3 retries"
            )
            enter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await enter
        await feed.__aexit__(None, None, None)
        server.close()
        delays = [e["delay_seconds"] for e in logs if e["event"] == "feed.reconnecting"]
        assert {e["failure"] for e in logs if e["event"] == "feed.reconnecting"} == {"failed"}
        assert delays[0] < delays[2] <= 0.2 * 1.1 + 1e-9

    run(scenario())


def test_history_when_pacing_violation_162_then_waits_and_retries_instead_of_failing() -> None:
    async def scenario() -> None:
        async with FakeGateway() as gw, IbFeed(config=fast_config(gw.port)) as feed:
            gw.scenario.pacing_violations = 2
            with capture_logs() as logs:
                batches = await feed.backfill(3)
            assert len(batches) == 3
            assert sum(e["event"] == "feed.pacing_violation" for e in logs) == 2
            assert gw.scenario.pacing_violations == 0

    run(scenario())


def test_closed_bars_when_bar_size_under_a_minute_then_5s_realtime_bars_are_aggregated() -> None:
    async def scenario() -> None:
        async with (
            FakeGateway() as gw,
            IbFeed(config=fast_config(gw.port, symbols=("AAPL",), bar_size="15 secs")) as feed,
        ):
            resume = gw.now
            got = Collector(feed.closed_bars(resume_after=resume))
            await until(lambda: feed.resubscriptions >= 1, what="subscription")
            for _ in range(4):
                await gw.advance(15)
                await asyncio.sleep(0.02)
            bars = await got.wait_bars("AAPL", 4)
            await got.close()
            assert [b.ts for b in bars] == [resume + timedelta(seconds=15 * k) for k in range(1, 5)]
            for bar in bars:
                parts = [
                    gw.market.bar("AAPL", bar.ts - timedelta(seconds=15 - 5 * k), 5)
                    for k in range(3)
                ]
                assert bar.open == parts[0].open
                assert bar.close == parts[-1].close
                assert bar.high == max(p.high for p in parts)
                assert bar.volume == sum(p.volume for p in parts)

    run(scenario())


def test_watchdog_when_stream_goes_silent_then_stale_event_and_resubscription() -> None:
    async def scenario() -> None:
        async with (
            FakeGateway() as gw,
            IbFeed(config=fast_config(gw.port, symbols=("AAPL",), stale_factor=0.01)) as feed,
        ):  # 0.6 s for 1-minute bars
            with capture_logs() as logs:
                got = Collector(feed.closed_bars(resume_after=gw.now))
                await until(
                    lambda: feed.resubscriptions >= 2, timeout=5, what="watchdog resubscription"
                )
                await got.close()
            assert any(e["event"] == "feed.stale" and e["symbol"] == "AAPL" for e in logs)

    run(scenario())


def _with_hours(hours: str) -> list[GatewayContract]:
    """The default contracts, AAPL with these trading hours (UTC)."""
    return [
        dataclasses.replace(c, trading_hours=hours) if c.symbol == "AAPL" else c
        for c in DEFAULT_CONTRACTS
    ]


def _day(offset: int) -> str:
    return (datetime.now(UTC) + timedelta(days=offset)).strftime("%Y%m%d")


def test_watchdog_when_market_closed_by_trading_hours_then_silence_is_not_stale() -> None:
    closed = ";".join(f"{_day(k)}:CLOSED" for k in (-1, 0, 1))

    async def scenario() -> None:
        async with (
            FakeGateway(contracts=_with_hours(closed)) as gw,
            IbFeed(config=fast_config(gw.port, symbols=("AAPL",), stale_factor=0.01)) as feed,
        ):  # the same 0.6 s silence limit that resubscribes an open market's stream
            with capture_logs() as logs:
                got = Collector(feed.closed_bars(resume_after=gw.now))
                await until(lambda: feed.resubscriptions >= 1, what="subscription")
                await asyncio.sleep(2.0)
                await got.close()
            assert feed.resubscriptions == 1
            assert not [e for e in logs if e["event"] == "feed.stale"]
            assert [e["symbol"] for e in logs if e["event"] == "feed.market_closed"] == ["AAPL"]

    run(scenario())


def test_watchdog_when_trading_hours_say_open_then_silent_stream_is_resubscribed() -> None:
    open_now = f"{_day(-1)}:0000-{_day(1)}:2359"

    async def scenario() -> None:
        async with (
            FakeGateway(contracts=_with_hours(open_now)) as gw,
            IbFeed(config=fast_config(gw.port, symbols=("AAPL",), stale_factor=0.01)) as feed,
        ):
            with capture_logs() as logs:
                got = Collector(feed.closed_bars(resume_after=gw.now))
                await until(lambda: feed.resubscriptions >= 2, timeout=5, what="resubscription")
                await got.close()
            assert any(e["event"] == "feed.stale" for e in logs)
            assert not [e for e in logs if e["event"] == "feed.market_closed"]
            assert feed.streams["AAPL"].hours is not None

    run(scenario())


def test_reconnect_when_contract_hours_changed_then_stream_kept_with_new_hours() -> None:
    closed = ";".join(f"{_day(k)}:CLOSED" for k in (-1, 0, 1))

    async def scenario() -> None:
        async with (
            FakeGateway() as gw,
            IbFeed(config=fast_config(gw.port, symbols=("AAPL",))) as feed,
        ):
            got = Collector(feed.closed_bars(resume_after=gw.now))
            await until(lambda: feed.resubscriptions >= 1, what="subscription")
            stream = feed.streams["AAPL"]
            assert stream.hours is None  # the gateway listed none
            gw.contracts = tuple(_with_hours(closed))  # the next day's details
            gw.drop_connections()
            await until(lambda: stream.hours is not None, timeout=10, what="hours refreshed")
            assert feed.streams["AAPL"] is stream  # the same stream, not requalified from scratch
            assert stream.hours is not None
            assert stream.hours.is_open(datetime.now(UTC)) is False
            await got.close()

    run(scenario())


def test_farm_codes_when_broken_then_ok_then_resubscribed_once_and_ok_alone_ignored() -> None:
    async def scenario() -> None:
        async with (
            FakeGateway() as gw,
            IbFeed(config=fast_config(gw.port, symbols=("AAPL",))) as feed,
        ):
            with capture_logs() as logs:
                got = Collector(feed.closed_bars(resume_after=gw.now))
                await until(lambda: feed.resubscriptions >= 1, what="subscription")
                before = feed.resubscriptions
                # 2104 is also what IB says at every connect: alone it must not resubscribe.
                gw.broadcast_error(2104, "Market data farm connection is OK:usfarm")
                await asyncio.sleep(0.3)
                assert feed.resubscriptions == before
                gw.broadcast_error(2103, "Market data farm connection is broken:usfarm")
                await until(
                    lambda: any(e["event"] == "feed.farm_broken" for e in logs), what="broken"
                )
                gw.broadcast_error(2104, "Market data farm connection is OK:usfarm")
                await until(lambda: feed.resubscriptions > before, what="resubscribe after farm ok")
                await asyncio.sleep(0.3)
                assert feed.resubscriptions == before + 1  # once, not per message
                await gw.advance(60)  # and the stream delivers again
                bars = await got.wait_bars("AAPL", 1)
                await got.close()
            assert bars[-1].symbol == "AAPL"
            farm = [e for e in logs if e["event"] == "feed.farm_broken"]
            assert [e["code"] for e in farm] == [2103]

    run(scenario())


def test_backoff_when_attempts_grow_then_delay_grows_to_cap_within_jitter() -> None:
    cfg = IbBackoffConfig(initial_seconds=1.0, max_seconds=30.0, multiplier=2.0, jitter=0.2)
    assert [backoff_delay(a, cfg, rand=lambda: 0.5) for a in range(7)] == [1, 2, 4, 8, 16, 30, 30]
    assert backoff_delay(10, cfg, rand=lambda: 1.0) == pytest.approx(36.0)
    assert backoff_delay(10, cfg, rand=lambda: 0.0) == pytest.approx(24.0)


def test_duration_when_gap_given_then_shortest_ib_duration_string() -> None:
    assert duration_for(30) == "60 S"
    assert duration_for(3600.5) == "3601 S"
    assert duration_for(86401) == "2 D"
