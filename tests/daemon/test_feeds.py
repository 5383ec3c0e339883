"""The simulated and replay feeds: batches, pacing, max_bars, backfill, and file validation."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from daemon.errors import ConfigError, InputError
from daemon.feeds.replay import (
    ReplayFeed,
    ReplayFeedConfig,
    ReplayFileError,
    load_bars_frame,
    write_bars,
)
from daemon.feeds.sim import SimFeed, SimFeedConfig
from strategy.market_sim import MarketSimulator, SimMarketConfig, simulate_frame
from strategy.types import Bar

START = datetime(2026, 1, 5, 14, 30, tzinfo=UTC)
MARKET = SimMarketConfig(symbols=("AAA", "BBB", "CCC"), session_bars=64, pattern_rate=0.05)
MINUTE = timedelta(minutes=1)


def _streamed(n: int) -> list[list[Bar]]:
    sim = MarketSimulator(config=MARKET, start=START)
    return [sim.next_batch() for _ in range(n)]


async def _collect(
    feed: SimFeed | ReplayFeed, resume_after: datetime | None = None
) -> list[list[Bar]]:
    return [batch async for batch in feed.closed_bars(resume_after=resume_after)]


def _run_sim(config: SimFeedConfig, resume_after: datetime | None = None) -> list[list[Bar]]:
    async def main() -> list[list[Bar]]:
        async with SimFeed(config=config, start=START) as feed:
            return await _collect(feed, resume_after)

    return asyncio.run(main())


class FakeClock:
    """Virtual loop time: sleeping advances it instead of waiting; records the requested delays."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.delays: list[float] = []

    async def sleep(self, delay: float) -> None:
        self.delays.append(delay)
        self.now += max(delay, 0.0)


def _with_clock(
    monkeypatch: pytest.MonkeyPatch, main: Callable[[FakeClock], Coroutine[Any, Any, Any]]
) -> Any:
    clock = FakeClock()

    async def wrapper() -> Any:
        loop = asyncio.get_running_loop()
        monkeypatch.setattr(loop, "time", lambda: clock.now)
        monkeypatch.setattr(asyncio, "sleep", clock.sleep)
        return await main(clock)

    return asyncio.run(wrapper())


# ---- sim feed ---------------------------------------------------------------------------------
def test_closed_bars_when_max_bars_then_yields_exactly_that_many_streamed_batches() -> None:
    batches = _run_sim(SimFeedConfig(speed=0, max_bars=150, market=MARKET))
    assert batches == _streamed(150)


def test_closed_bars_when_high_speed_then_batches_arrive_in_order_on_bar_closes() -> None:
    batches = _run_sim(SimFeedConfig(speed=600_000, max_bars=20, market=MARKET))
    assert len(batches) == 20
    assert [b[0].ts for b in batches] == [START + i * MINUTE for i in range(20)]


def test_closed_bars_when_resuming_then_continues_after_the_given_close() -> None:
    resumed = _run_sim(
        SimFeedConfig(speed=0, max_bars=10, market=MARKET), resume_after=START + 99 * MINUTE
    )
    assert resumed == _streamed(110)[100:]


def test_closed_bars_when_paced_then_one_batch_per_bar_seconds_over_speed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = SimFeedConfig(speed=2.0, max_bars=4, market=MARKET)

    async def main(clock: FakeClock) -> list[float]:
        async with SimFeed(config=config, start=START) as feed:
            return [clock.now async for _ in feed.closed_bars()]

    times = _with_clock(monkeypatch, main)
    assert times == [1030.0, 1060.0, 1090.0, 1120.0]


def test_closed_bars_when_consumer_is_slow_then_clock_catches_up_without_drift(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = SimFeedConfig(speed=1.0, max_bars=4, market=MARKET)

    async def main(clock: FakeClock) -> list[float]:
        arrivals = []
        async with SimFeed(config=config, start=START) as feed:
            async for _ in feed.closed_bars():
                arrivals.append(clock.now)
                if len(arrivals) == 1:
                    clock.now += 90.0  # the consumer takes one and a half bars on the first batch
        return arrivals

    assert _with_clock(monkeypatch, main) == [1060.0, 1150.0, 1180.0, 1240.0]


def test_backfill_when_before_given_then_equals_streamed_batches_up_to_it() -> None:
    streamed = _streamed(200)

    async def main() -> tuple[list[list[Bar]], list[list[Bar]], list[list[Bar]]]:
        async with SimFeed(config=SimFeedConfig(speed=0, market=MARKET), start=START) as feed:
            mid = await feed.backfill(30, before=START + 150 * MINUTE)
            early = await feed.backfill(30, before=START + 4 * MINUTE)
            none = await feed.backfill(30, before=START - MINUTE)
            return mid, early, none

    mid, early, none = asyncio.run(main())
    assert mid == streamed[121:151]
    assert early == streamed[:5]
    assert none == []


def test_backfill_when_before_is_none_then_ends_at_the_last_batch_yielded() -> None:
    async def main() -> tuple[list[list[Bar]], list[list[Bar]]]:
        async with SimFeed(
            config=SimFeedConfig(speed=0, max_bars=70, market=MARKET), start=START
        ) as feed:
            yielded = await _collect(feed)
            return yielded, await feed.backfill(8)

    yielded, history = asyncio.run(main())
    assert history == yielded[-8:]


def test_sim_feed_when_entered_twice_then_runtime_error() -> None:
    async def main() -> None:
        feed = SimFeed(config=SimFeedConfig(market=MARKET), start=START)
        async with feed:
            with pytest.raises(RuntimeError, match="re-entered"):
                await feed.__aenter__()
        async with feed:  # reusable after exit
            pass

    asyncio.run(main())


@pytest.mark.parametrize(
    ("yaml", "where"),
    [
        ("start: 2026-01-05T14:30:30Z", "not a multiple of market.bar_seconds"),
        ("start: 2026-01-05T14:30:00", "timezone"),
        ("speed: -1", "$.speed"),
        ("max_bars: 0", "$.max_bars"),
        ("market: {seed: -3}", "$.market.seed"),
        ("sped: 10", "sped"),
    ],
)
def test_decode_when_bad_sim_feed_config_then_error_names_the_key(yaml: str, where: str) -> None:
    with pytest.raises(msgspec.ValidationError) as excinfo:
        msgspec.yaml.decode(yaml, type=SimFeedConfig)
    assert where in str(excinfo.value)


def test_decode_when_aware_aligned_start_then_accepted() -> None:
    config = msgspec.yaml.decode("start: 2026-01-05T14:30:00+00:00\nspeed: 0", type=SimFeedConfig)
    assert config.start == START


# ---- replay: files ----------------------------------------------------------------------------
@pytest.fixture
def sim_bars() -> pd.DataFrame:
    return simulate_frame(MARKET, START, 120)


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_write_bars_when_read_back_then_identical(
    tmp_path: Path, sim_bars: pd.DataFrame, suffix: str
) -> None:
    bars = [bar for batch in _streamed(120) for bar in batch]
    path = write_bars(tmp_path / f"bars{suffix}", bars)
    frame = load_bars_frame(path)
    assert frame["symbol"].tolist() == sim_bars["symbol"].tolist()
    assert frame["ts"].tolist() == sim_bars["ts"].tolist()
    for column in ("open", "high", "low", "close", "volume"):
        assert frame[column].tolist() == sim_bars[column].tolist()


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_replay_feed_when_file_of_sim_bars_then_same_batches_as_the_simulator(
    tmp_path: Path, sim_bars: pd.DataFrame, suffix: str
) -> None:
    path = write_bars(tmp_path / f"bars{suffix}", sim_bars)

    async def main() -> tuple[datetime, list[list[Bar]]]:
        async with ReplayFeed(config=ReplayFeedConfig(path=str(path))) as feed:
            return feed.first_ts(), await _collect(feed)

    first, batches = asyncio.run(main())
    assert first == START
    assert batches == _streamed(120)


def test_replay_feed_when_symbols_max_bars_and_resume_then_filtered_window(
    tmp_path: Path, sim_bars: pd.DataFrame
) -> None:
    path = write_bars(tmp_path / "bars.parquet", sim_bars)
    config = ReplayFeedConfig(path=str(path), symbols=("BBB",), max_bars=5)

    async def main() -> tuple[list[list[Bar]], list[list[Bar]], list[list[Bar]]]:
        async with ReplayFeed(config=config) as feed:
            batches = await _collect(feed, resume_after=START + 9 * MINUTE)
            return (
                batches,
                await feed.backfill(3),
                await feed.backfill(4, before=START + 2 * MINUTE),
            )

    batches, recent, early = asyncio.run(main())
    expected = [[b for b in batch if b.symbol == "BBB"] for batch in _streamed(15)]
    assert batches == expected[10:15]
    assert recent == expected[12:15]
    assert early == expected[:3]


def test_replay_feed_when_paced_then_waits_by_file_time_over_speed(
    tmp_path: Path, sim_bars: pd.DataFrame, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_bars(tmp_path / "bars.csv", sim_bars)
    config = ReplayFeedConfig(path=str(path), speed=30.0, max_bars=3)

    async def main(clock: FakeClock) -> list[float]:
        async with ReplayFeed(config=config) as feed:
            return [clock.now async for _ in feed.closed_bars()]

    assert _with_clock(monkeypatch, main) == [1000.0, 1002.0, 1004.0]


def test_load_bars_frame_when_bad_bars_then_passed_through_for_bar_store(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(
        "symbol,ts,open,high,low,close,volume\n"
        "AAA,2026-01-05T14:31:00Z,10,9,11,10,100\n"  # high < low
        "AAA,2026-01-05T14:30:00Z,nan,10,9,10,-5\n"  # NaN and negative volume, out of order
    )
    frame = load_bars_frame(path)
    assert frame["high"].tolist() == [9.0, 10.0]
    assert pd.isna(frame["open"].iloc[1])
    assert frame["volume"].iloc[1] == -5.0
    assert frame["ts"].tolist() == [
        pd.Timestamp("2026-01-05T14:31:00Z"),
        pd.Timestamp("2026-01-05T14:30:00Z"),
    ]


@pytest.mark.parametrize(
    ("ts_text", "expected"),
    [
        ("1767623400", "2026-01-05T14:30:00Z"),
        ("1767623400000", "2026-01-05T14:30:00Z"),
        ("2026-01-05 14:30:00", "2026-01-05T14:30:00Z"),
        ("2026-01-05T15:30:00+01:00", "2026-01-05T14:30:00Z"),
    ],
)
def test_load_bars_frame_when_ts_in_other_formats_then_utc(
    tmp_path: Path, ts_text: str, expected: str
) -> None:
    path = tmp_path / "bars.csv"
    path.write_text(f"symbol,ts,open,high,low,close,volume\nAAA,{ts_text},10,11,9,10,100\n")
    assert load_bars_frame(path)["ts"].iloc[0] == pd.Timestamp(expected)


HEADER = "symbol,ts,open,high,low,close,volume\n"
GOOD = "AAA,2026-01-05T14:30:00Z,10,11,9,10,100\n"


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("cols.csv", "symbol,ts,open,high,close,volume\n", "missing column 'low'"),
        (
            "num.csv",
            HEADER + GOOD + "AAA,2026-01-05T14:31:00Z,10,1l,9,10,100\n",
            "row 2, column 'high': cannot parse '1l' as a number",
        ),
        (
            "empty_value.csv",
            HEADER + GOOD + GOOD + "AAA,2026-01-05T14:32:00Z,10,11,9,10,\n",
            "row 3, column 'volume': missing value",
        ),
        (
            "time.csv",
            HEADER + "AAA,yesterday,10,11,9,10,100\n",
            "row 1, column 'ts': cannot parse 'yesterday'",
        ),
        (
            "symbol.csv",
            HEADER + GOOD + ",2026-01-05T14:31:00Z,10,11,9,10,100\n",
            "row 2, column 'symbol': missing",
        ),
        ("fields.csv", HEADER + "AAA,2026-01-05T14:30:00Z,10,11,9,10,100,7\n", "more fields"),
        (
            "fields2.csv",
            HEADER + GOOD + "AAA,2026-01-05T14:31:00Z,10,11,9,10,100,7\n",
            "cannot read",
        ),
        ("none.csv", HEADER, "contains no bars"),
        ("blank.csv", "", "file is empty"),
        ("bars.json", "[]", "unsupported file type '.json'"),
    ],
)
def test_load_bars_frame_when_structural_problem_then_one_line_error_naming_file_row_column(
    tmp_path: Path, name: str, text: str, message: str
) -> None:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ReplayFileError) as excinfo:
        load_bars_frame(path)
    error = str(excinfo.value)
    assert error.startswith(str(path))
    assert message in error
    assert "\n" not in error
    assert isinstance(excinfo.value, InputError)


def test_load_bars_frame_when_file_missing_then_replay_file_error(tmp_path: Path) -> None:
    with pytest.raises(ReplayFileError, match="file not found"):
        load_bars_frame(tmp_path / "nope.parquet")


def test_load_bars_frame_when_parquet_null_then_error_names_row_and_column(tmp_path: Path) -> None:
    table = pa.table(
        {
            "symbol": ["AAA", "AAA"],
            "ts": [1767623400, 1767623460],
            "open": [10.0, 10.0],
            "high": [11.0, 11.0],
            "low": [9.0, None],
            "close": [10.0, 10.0],
            "volume": [1.0, 1.0],
        }
    )
    path = tmp_path / "bars.parquet"
    pq.write_table(table, path)
    with pytest.raises(ReplayFileError, match=r"bars\.parquet: row 2, column 'low': missing value"):
        load_bars_frame(path)


def test_load_bars_frame_when_parquet_not_parquet_then_replay_file_error(tmp_path: Path) -> None:
    path = tmp_path / "bars.parquet"
    path.write_text("not parquet at all")
    with pytest.raises(ReplayFileError, match="cannot read"):
        load_bars_frame(path)


def test_replay_feed_when_file_is_bad_then_config_error_naming_the_key(tmp_path: Path) -> None:
    path = tmp_path / "bars.csv"
    path.write_text("symbol,ts\n")

    async def main() -> None:
        async with ReplayFeed(config=ReplayFeedConfig(path=str(path))):
            pass

    with pytest.raises(ConfigError, match=r"feed\.replay\.path: .*bars\.csv: missing columns"):
        asyncio.run(main())


def test_replay_feed_when_symbol_filter_matches_nothing_then_config_error(
    tmp_path: Path, sim_bars: pd.DataFrame
) -> None:
    path = write_bars(tmp_path / "bars.csv", sim_bars)

    async def main() -> None:
        async with ReplayFeed(config=ReplayFeedConfig(path=str(path), symbols=("ZZZ",))):
            pass

    with pytest.raises(ConfigError, match="no bars for"):
        asyncio.run(main())
