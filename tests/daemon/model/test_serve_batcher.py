"""MicroBatcher and the control and predictor of `vlmtrader serve`, called directly (no HTTP)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from daemon.errors import InputError
from daemon.model.batcher import BatchConfig, MicroBatcher, Overloaded
from daemon.model.charts import png_size
from daemon.model.prediction import ChartRefused
from daemon.serve import ServeConfig, ServeControl
from strategy.types import Bar, TradingState

T0 = datetime(2024, 3, 1, 14, 30, tzinfo=UTC)


class Doubler:
    """A score function that records each call's items; "bad" items fail alone, "boom" fails the batch."""

    def __init__(self, gate: threading.Event | None = None) -> None:
        self.calls: list[list[object]] = []
        self.gate = gate

    def __call__(self, items: list[object]) -> list[object]:
        if self.gate is not None:
            self.gate.wait(5)
        self.calls.append(list(items))
        if "boom" in items:
            msg = "model exploded"
            raise RuntimeError(msg)
        return [InputError(f"bad item {i}") if i == "bad" else i * 2 for i in items]  # type: ignore[operator]


def _batcher(score: Doubler, **cfg: float) -> MicroBatcher[object, object]:
    return MicroBatcher(score=score, config=BatchConfig(**cfg))  # type: ignore[arg-type]


def test_submit_when_requests_arrive_together_then_scored_in_one_call_in_order() -> None:
    score = Doubler()

    async def scenario() -> list[object]:
        async with _batcher(score, max_items=32, max_wait_ms=50) as batcher:
            return await asyncio.gather(*(batcher.submit(i) for i in range(10)))

    assert asyncio.run(scenario()) == [i * 2 for i in range(10)]
    assert score.calls == [list(range(10))]


def test_submit_when_max_items_waiting_then_batch_closes_without_waiting_for_the_timer() -> None:
    score = Doubler()

    async def scenario() -> list[object]:
        async with _batcher(score, max_items=4, max_wait_ms=600_000) as batcher:
            return await asyncio.wait_for(
                asyncio.gather(*(batcher.submit(i) for i in range(8))), 30
            )

    assert asyncio.run(scenario()) == [i * 2 for i in range(8)]
    assert [len(c) for c in score.calls] == [4, 4]


def test_submit_when_one_item_fails_then_only_its_request_raises() -> None:
    score = Doubler()

    async def scenario() -> list[object]:
        async with _batcher(score, max_wait_ms=20) as batcher:
            return await asyncio.gather(
                batcher.submit(1), batcher.submit("bad"), batcher.submit(3), return_exceptions=True
            )

    one, bad, three = asyncio.run(scenario())
    assert (one, three) == (2, 6)
    assert isinstance(bad, InputError)
    assert "bad item" in str(bad)


def test_submit_when_score_raises_then_whole_batch_fails_and_next_batch_is_served() -> None:
    score = Doubler()

    async def scenario() -> tuple[list[object], object]:
        async with _batcher(score, max_wait_ms=20) as batcher:
            first = await asyncio.gather(
                batcher.submit(1), batcher.submit("boom"), return_exceptions=True
            )
            return first, await batcher.submit(5)

    first, after = asyncio.run(scenario())
    assert all(isinstance(r, RuntimeError) for r in first)
    assert after == 10


def test_submit_when_queue_full_then_overloaded_and_queued_requests_still_answered() -> None:
    gate = threading.Event()
    score = Doubler(gate)

    async def scenario() -> tuple[list[object], str]:
        async with _batcher(score, max_items=1, max_wait_ms=0, queue_size=2) as batcher:
            first = asyncio.create_task(batcher.submit(0))  # taken by the worker, held at the gate
            while score.calls == [] and batcher.depth == 1:
                await asyncio.sleep(0.001)
            await asyncio.sleep(0.01)
            queued = [asyncio.create_task(batcher.submit(i)) for i in (1, 2)]
            await asyncio.sleep(0.01)
            with pytest.raises(Overloaded, match="queue_size") as e:
                await batcher.submit(3)
            gate.set()
            return await asyncio.gather(first, *queued), str(e.value)

    results, error = asyncio.run(scenario())
    assert results == [0, 2, 4]
    assert "retry" in error


def test_close_when_requests_queued_then_drained_before_stop_and_later_submits_refused() -> None:
    score = Doubler()

    async def scenario() -> tuple[list[object], MicroBatcher[object, object]]:
        batcher = _batcher(score, max_items=2, max_wait_ms=100)
        async with batcher:
            tasks = [asyncio.create_task(batcher.submit(i)) for i in range(5)]
            await asyncio.sleep(0)
        return await asyncio.gather(*tasks), batcher

    results, batcher = asyncio.run(scenario())
    assert results == [0, 2, 4, 6, 8]
    assert sum(len(c) for c in score.calls) == 5

    async def after() -> None:
        with pytest.raises(Overloaded, match="not running"):
            await batcher.submit(1)

    asyncio.run(after())


def test_submit_when_caller_gives_up_then_item_is_not_scored() -> None:
    gate = threading.Event()
    score = Doubler(gate)

    async def scenario() -> int:
        async with _batcher(score, max_items=1, max_wait_ms=0) as batcher:
            first = asyncio.create_task(batcher.submit(0))
            await asyncio.sleep(0.01)
            leaving = asyncio.create_task(batcher.submit(1))
            await asyncio.sleep(0.01)
            leaving.cancel()
            gate.set()
            await first
            assert await batcher.submit(2) == 4
            return batcher.stats.abandoned

    assert asyncio.run(scenario()) == 1
    assert [1] not in score.calls


@settings(max_examples=25, deadline=None)
@given(
    waves=st.lists(st.integers(min_value=1, max_value=20), min_size=1, max_size=5),
    max_items=st.integers(min_value=1, max_value=8),
)
def test_submit_when_waves_of_any_size_then_each_request_gets_its_own_answer(
    waves: list[int], max_items: int
) -> None:
    score = Doubler()

    async def scenario() -> list[list[object]]:
        out = []
        async with _batcher(score, max_items=max_items, max_wait_ms=1) as batcher:
            for n in waves:
                out.append(await asyncio.gather(*(batcher.submit(i) for i in range(n))))
        return out

    results = asyncio.run(scenario())
    assert results == [[i * 2 for i in range(n)] for n in waves]
    assert all(1 <= len(c) <= max_items for c in score.calls)
    assert sum(len(c) for c in score.calls) == sum(waves)


# ---- ServeControl with the rule scorer ----------------------------------------------------------
def _bars(n: int, symbol: str = "AAA") -> list[Bar]:
    return [
        Bar(
            symbol=symbol,
            ts=T0 + timedelta(minutes=i),
            open=100.0 + i,
            high=102.0 + i,
            low=99.0 + i,
            close=101.0 + i,
            volume=1000.0,
        )
        for i in range(n)
    ]


def test_predict_when_rules_and_windows_concurrent_then_rule_signals_per_symbol() -> None:
    service = ServeControl(config=ServeConfig(batch=BatchConfig(max_wait_ms=20)))

    async def scenario() -> Sequence[object]:
        async with service.batcher:
            return await asyncio.gather(
                *(service.predictor.predict(s, _bars(30, s)) for s in ("AAA", "BBB", "CCC"))
            )

    predictions = asyncio.run(scenario())
    signals = [p.signal for p in predictions]  # type: ignore[attr-defined]
    assert [s.symbol for s in signals] == ["AAA", "BBB", "CCC"]
    assert {s.scorer for s in signals} == {"rules"}
    assert {p.bundle_id for p in predictions} == {None}  # type: ignore[attr-defined]
    assert service.batcher.stats.batches == 1
    assert service.readiness() == {"model_warm": True, "accepting": False}


def test_predict_when_window_short_or_misaligned_then_input_error_naming_the_bar() -> None:
    service = ServeControl(config=ServeConfig())

    async def scenario() -> None:
        async with service.batcher:
            with pytest.raises(InputError, match="3 bars given, the model needs at least 8"):
                await service.predictor.predict("AAA", _bars(3))
            bars = _bars(10)
            bars[4] = msgspec.structs.replace(bars[4], ts=T0 + timedelta(seconds=210))
            with pytest.raises(InputError, match=r"bars\[4\]: misaligned_ts"):
                await service.predictor.predict("AAA", bars)

    asyncio.run(scenario())


def test_predict_chart_when_only_rules_loaded_then_refused_asking_for_a_bundle() -> None:
    service = ServeControl(config=ServeConfig())

    async def scenario() -> None:
        async with service.batcher:
            with pytest.raises(ChartRefused, match="bundle"):
                await service.predictor.predict_chart(b"\x89PNG\r\n\x1a\n")

    asyncio.run(scenario())


@pytest.mark.parametrize(
    "command",
    [
        lambda s: s.pause("x"),
        lambda s: s.resume("x"),
        lambda s: s.flatten(None, "x"),
        lambda s: s.set_trading_state(TradingState.HALTED, "x"),
        lambda s: s.reload_strategy(),
        lambda s: s.reload_bundle(None),
    ],
)
def test_control_when_trading_command_or_nothing_to_reload_then_input_error(
    command: object,
) -> None:
    service = ServeControl(config=ServeConfig())
    with pytest.raises(InputError):
        asyncio.run(command(service))  # type: ignore[operator]


def test_png_size_when_header_read_then_width_height_or_none() -> None:
    header = (
        b"\x89PNG\r\n\x1a\n"
        + b"\x00\x00\x00\x0dIHDR"
        + (64).to_bytes(4, "big")
        + (48).to_bytes(4, "big")
    )
    assert png_size(header) == (64, 48)
    assert png_size(b"GIF89a" + b"\x00" * 30) is None
    assert png_size(b"\x89PNG") is None
