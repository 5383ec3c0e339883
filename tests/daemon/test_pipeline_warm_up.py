"""Pipeline.on_warm_up_bars: bars fill windows and marks, are journaled, and never trade."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

import msgspec
from structlog.testing import capture_logs

from daemon.pipeline import Pipeline
from strategy.types import Bar
from tests.daemon.test_pipeline import market, pipeline_at


def _warm(pipeline: Pipeline, batches: list[list[Bar]]) -> None:
    async def go() -> None:
        for batch in batches:
            await pipeline.on_warm_up_bars(batch)

    asyncio.run(go())


def test_warm_up_when_many_backfilled_bars_then_windows_full_journaled_and_no_order(
    tmp_path: Path,
) -> None:
    batches = market(120)
    with pipeline_at(tmp_path) as pipeline:
        _warm(pipeline, batches)
        assert pipeline.stats.orders_submitted == 0
        assert pipeline.stats.signals == 0
        assert pipeline.stats.warm_up_bars == 360
        assert pipeline.journal.rows("orders") == []
        assert pipeline.journal.get("last_bar_ts") == batches[-1][0].ts.isoformat()
        assert all(pipeline.store.window(s) is not None for s in ("AAA", "BBB", "CCC"))
        assert pipeline.book.last_prices["AAA"] == batches[-1][0].close
    # The same bars as live ones do trade: the warm-up path is what keeps them out.
    with pipeline_at(tmp_path / "live") as live:

        async def go() -> None:
            for batch in batches:
                await live.on_bars(batch)

        asyncio.run(go())
        assert live.stats.orders_submitted > 0


def test_warm_up_when_gap_resets_a_window_then_window_reset_logged_with_gap_and_policy(
    tmp_path: Path,
) -> None:
    batches = market(40)
    later = [
        [msgspec.structs.replace(b, ts=b.ts + timedelta(minutes=30)) for b in batch]
        for batch in batches[30:]
    ]
    with pipeline_at(tmp_path) as pipeline, capture_logs() as logs:
        _warm(pipeline, [*batches[:30], *later])
        resets = [e for e in logs if e["event"] == "window.reset"]
    assert sorted(e["symbol"] for e in resets) == ["AAA", "BBB", "CCC"]
    assert {(e["gap_bars"], e["policy"]) for e in resets} == {(30, "reset")}
    assert pipeline.stats.window_resets == 3
