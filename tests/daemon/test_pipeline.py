"""The live pipeline over real parts: SQLite journal, paper venue, rule scorer, risk engine."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import pytest
import structlog

from daemon.execution.paper import PaperExecution
from daemon.journal import TABLES, Journal
from daemon.pipeline import ORDER_PATH_STAGES, Pipeline
from strategy.bars import BarStore, BarStoreConfig
from strategy.book import Book
from strategy.market_sim import MarketSimulator, SimMarketConfig
from strategy.risk import RiskConfig, RiskEngine
from strategy.rule_scorer import RuleScorer, RuleScorerConfig
from strategy.scoring import Scorer
from strategy.sim_broker import SimBrokerConfig
from strategy.target_strategy import StrategyConfig, TargetStrategy
from strategy.types import Bar, OrderIntent, Side

START = datetime(2026, 3, 2, 22, 0, tzinfo=UTC)


@pytest.fixture
def pipeline(tmp_path: Path) -> Iterator[Pipeline]:
    with pipeline_at(tmp_path) as p:
        yield p


@contextlib.contextmanager
def pipeline_at(
    directory: Path,
    *,
    scorer: Scorer | None = None,
    window: int = 16,
    strategy: StrategyConfig | None = None,
    synchronous: Literal["normal", "full"] = "normal",
    checkpoint_seconds: float | None = None,
) -> Iterator[Pipeline]:
    """The test pipeline with its journal and venue files in directory (rule scorer by default)."""
    directory.mkdir(parents=True, exist_ok=True)
    journal = Journal(
        directory / "journal.sqlite",
        synchronous=synchronous,
        checkpoint_seconds=checkpoint_seconds,
    )
    journal.open()
    venue = PaperExecution(config=SimBrokerConfig(), path=directory / "venue.sqlite")
    yield Pipeline(
        store=BarStore(config=BarStoreConfig(window=window)),
        scorer=scorer or RuleScorer(config=RuleScorerConfig()),
        strategy=TargetStrategy(
            config=strategy or StrategyConfig(hold_bars=3, position_notional=2_000)
        ),
        risk=RiskEngine(config=RiskConfig()),
        book=Book(starting_cash=100_000),
        journal=journal,
        execution=venue,
        order_prefix="T",
    )
    venue.close()
    journal.close()


def market(n: int) -> list[list[Bar]]:
    config = SimMarketConfig(symbols=["AAA", "BBB", "CCC"], seed=5, pattern_rate=0.1)
    sim = MarketSimulator(config=config, start=START)
    return [sim.next_batch() for _ in range(n)]


def run(pipeline: Pipeline, batches: list[list[Bar]]) -> None:
    async def go() -> None:
        for batch in batches:
            await pipeline.on_bars(batch)

    asyncio.run(go())


def test_on_bars_when_day_rolls_then_previous_day_pnl_is_journaled(pipeline: Pipeline) -> None:
    batches = market(200)  # 22:00 -> past midnight UTC
    assert batches[0][0].ts.date() != batches[-1][0].ts.date()
    run(pipeline, batches)
    rows = pipeline.journal.rows("daily_pnl")
    assert [r["day"] for r in rows] == [START.date().isoformat()]
    assert pipeline.stats.orders_submitted > 0


def test_on_bars_when_paused_then_no_new_orders_but_fills_still_apply(pipeline: Pipeline) -> None:
    batches = market(120)
    run(pipeline, batches[:80])
    submitted = pipeline.stats.orders_submitted
    assert submitted > 0
    pipeline.paused = True
    run(pipeline, batches[80:])
    assert pipeline.stats.orders_submitted == submitted
    assert pipeline.journal.counts()["orders"] == submitted


def test_on_bars_when_bar_is_bad_then_rejected_logged_journaled_and_trading_goes_on(
    pipeline: Pipeline,
) -> None:
    batches = market(40)
    good = batches[30][0]
    bad = Bar(symbol=good.symbol, ts=good.ts, open=good.open, high=good.low - 1.0, low=good.low,
              close=good.close, volume=good.volume)  # fmt: skip
    batches[30] = [bad, *batches[30][1:]]
    with structlog.testing.capture_logs() as logs:
        run(pipeline, batches)
    rejected = [e for e in logs if e["event"] == "bar.rejected"]
    assert [(e["symbol"], e["reason"]) for e in rejected] == [(good.symbol, "high_below_low")]
    assert pipeline.journal.counts()["bars_rejected"] == 1
    assert pipeline.stats.batches == 40


def test_submit_intents_when_flatten_then_reducing_order_journaled_before_broker(
    pipeline: Pipeline,
) -> None:
    batches = market(100)
    run(pipeline, batches)
    held = {s: p.quantity for s, p in pipeline.book.positions.items() if p.quantity}
    assert held, "the seeded market opens positions within 100 bars"
    symbol, quantity = next(iter(held.items()))
    now = pipeline.stats.last_bar_ts or START
    side = Side.SELL if quantity > 0 else Side.BUY
    intent = OrderIntent(symbol=symbol, ts=now, side=side, quantity=abs(quantity), reason="flatten")
    orders = asyncio.run(pipeline.submit_intents([intent], now))
    assert len(orders) == 1
    journaled = pipeline.journal.load_orders()[orders[0].client_order_id]
    assert journaled.quantity == abs(quantity)
    assert journaled.side is side


def test_on_bars_when_risk_rejects_then_reason_is_logged_and_journaled(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal.sqlite", checkpoint_seconds=None)
    journal.open()
    with PaperExecution(config=SimBrokerConfig(), path=tmp_path / "venue.sqlite") as venue:
        strict = Pipeline(
            store=BarStore(config=BarStoreConfig(window=16)),
            scorer=RuleScorer(config=RuleScorerConfig()),
            strategy=TargetStrategy(config=StrategyConfig(position_notional=2_000)),
            risk=RiskEngine(config=RiskConfig(max_order_quantity=1)),
            book=Book(starting_cash=100_000),
            journal=journal,
            execution=venue,
        )
        with structlog.testing.capture_logs() as logs:
            run(strict, market(100))
    reasons = {e["reason"] for e in logs if e["event"] == "risk.rejected"}
    assert reasons == {"max_order_quantity"}
    assert strict.stats.orders_submitted == 0
    rows = journal.rows("decisions")
    journal.close()
    assert rows
    assert all(r["reason"] == "max_order_quantity" and r["accepted"] == 0 for r in rows)


def test_on_bars_when_orders_go_out_then_each_stage_has_one_lap_per_batch_within_the_latency(
    pipeline: Pipeline,
) -> None:
    batches = market(60)
    run(pipeline, batches)
    assert pipeline.stats.orders_submitted > 0
    clock = pipeline.stage_clock
    assert set(clock.stages) == set(ORDER_PATH_STAGES)
    # Every batch passes the stages before scoring; the later ones once windows are full.
    assert clock.stages["venue"].count == clock.stages["intake"].count == len(batches)
    assert clock.cpu_stages["score"].count == clock.stages["score"].count
    assert 0 < clock.stages["submit"].count <= len(batches)
    # The stages up to the broker add up to no more than the slowest order's latency.
    to_broker = [s for s in ORDER_PATH_STAGES if s != "after"]
    fastest_sum = sum(clock.stages[s].percentile_ms(0) or 0.0 for s in to_broker)
    assert fastest_sum <= (pipeline.latency.percentile_ms(100) or 0.0)


def test_on_bars_when_orders_sent_then_their_log_lines_come_after_the_submit_lap(
    pipeline: Pipeline,
) -> None:
    """The submit lap is the venue taking the orders: their order.submitted lines (after work,
    like every log line) are written once it has lapped, and carry the latency recorded."""
    clock = pipeline.stage_clock
    laps_at_line: list[tuple[int, int]] = []

    def note_laps(_logger: object, _name: str, event: dict[str, object]) -> dict[str, object]:
        if event["event"] == "order.submitted":
            laps_at_line.append((clock.stages["journal"].count, clock.stages["submit"].count))
        return event

    with structlog.testing.capture_logs(processors=[note_laps]) as logs:
        run(pipeline, market(60))
    submitted = [e for e in logs if e["event"] == "order.submitted"]
    assert len(submitted) == pipeline.stats.orders_submitted > 0
    # Each line's batch has lapped both its journal and its submit stage when it is written.
    assert all(journal == submit for journal, submit in laps_at_line)
    recorded = sorted(round(s * 1000, 3) for s in pipeline.latency.samples())
    assert sorted(e["latency_ms"] for e in submitted) == recorded


@pytest.mark.parametrize("synchronous", ["normal", "full"])
def test_on_bars_when_wal_checkpointed_and_restarted_between_batches_then_same_rows_as_without(
    tmp_path: Path, synchronous: Literal["normal", "full"]
) -> None:
    """The checkpoint thread's WAL restart (an unchanged user_version) changes no row of the
    journal or the venue: the same batches give equal tables with and without it."""
    batches = market(60)
    tables: dict[bool, dict[str, list[dict[str, object]]]] = {}
    for gaps in (False, True):
        directory = tmp_path / ("gaps" if gaps else "straight")
        # an hour: the thread never runs on its own; the gaps run its pass by hand
        with pipeline_at(directory, synchronous=synchronous, checkpoint_seconds=3600) as p:

            async def go(p: Pipeline = p, gaps: bool = gaps) -> None:
                for batch in batches:
                    await p.on_bars(batch)
                    if gaps:
                        p.journal.flush()
                        p.journal.checkpoint()
                        assert isinstance(p.execution, PaperExecution)
                        p.execution.checkpoint()

            asyncio.run(go())
            assert p.stats.orders_submitted > 0
            tables[gaps] = {t: p.journal.rows(t) for t in TABLES}
            tables[gaps]["user_version"] = [{"v": p.journal.schema_version()}]
        with sqlite3.connect(directory / "venue.sqlite") as venue:
            for t in ("venue_orders", "venue_fills", "venue_tapes", "venue_log"):
                tables[gaps][t] = [
                    {"row": r} for r in venue.execute(f"SELECT * FROM {t} ORDER BY 1")
                ]
    assert tables[True] == tables[False]
