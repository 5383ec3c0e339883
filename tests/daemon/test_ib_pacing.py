"""RequestPacer: IB's historical pacing rules as pure arithmetic on a `now` argument."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given
from hypothesis import strategies as st

from daemon.ib.config import IbPacingConfig
from daemon.ib.pacing import PacedGate, RequestPacer


def test_delay_when_identical_request_within_15s_then_waits_until_15s_after_the_first() -> None:
    pacer = RequestPacer()
    pacer.started("AAPL|1D", "AAPL", now=100.0)
    pacer.finished()
    assert pacer.delay("AAPL|1D", "AAPL", now=105.0) == pytest.approx(10.0)
    assert pacer.delay("AAPL|2D", "MSFT", now=105.0) == 0.0


def test_delay_when_six_requests_for_one_contract_in_2s_then_seventh_waits() -> None:
    pacer = RequestPacer()
    for i in range(6):
        pacer.started(f"AAPL|{i}", "AAPL", now=10.0 + i * 0.1)
        pacer.finished()
    assert pacer.delay("AAPL|x", "AAPL", now=10.6) == pytest.approx(2.0 - 0.6)
    assert pacer.delay("MSFT|x", "MSFT", now=10.6) == 0.0


def test_delay_when_60_requests_in_10_minutes_then_61st_waits_for_the_window() -> None:
    pacer = RequestPacer(config=IbPacingConfig(same_contract_requests=1000))
    for i in range(60):
        pacer.started(f"k{i}", f"c{i}", now=float(i))
        pacer.finished()
    assert pacer.delay("k60", "c60", now=60.0) == pytest.approx(600.0 - 60.0)
    assert pacer.delay("k60", "c60", now=600.0) == 0.0


def test_delay_when_50_requests_open_then_waits_until_one_finishes() -> None:
    pacer = RequestPacer(config=IbPacingConfig(window_requests=1000, same_contract_requests=1000))
    for i in range(50):
        pacer.started(f"k{i}", f"c{i}", now=0.0)
    assert pacer.delay("k50", "c50", now=1.0) > 0
    pacer.finished()
    assert pacer.delay("k50", "c50", now=1.0) == 0.0


def test_delay_when_pacing_violation_162_then_everything_pauses() -> None:
    pacer = RequestPacer(config=IbPacingConfig(violation_pause_seconds=30))
    pacer.violated(now=5.0)
    assert pacer.delay("a", "a", now=10.0) == pytest.approx(25.0)
    assert pacer.delay("a", "a", now=35.0) == 0.0


@given(st.lists(st.floats(min_value=0, max_value=5), min_size=1, max_size=80))
def test_schedule_when_requests_follow_the_pacer_then_no_rule_is_ever_broken(
    gaps: list[float],
) -> None:
    cfg = IbPacingConfig()
    pacer = RequestPacer(config=cfg)
    now, sent = 0.0, []
    for i, gap in enumerate(gaps):
        now += gap
        key, contract = f"k{i % 7}", f"c{i % 3}"
        now += pacer.delay(key, contract, now)
        pacer.started(key, contract, now)
        pacer.finished()
        sent.append((now, key, contract))
    for t, key, contract in sent:
        assert sum(1 for u, k, _ in sent if k == key and t - cfg.identical_seconds < u <= t) == 1
        assert sum(1 for u, _, _ in sent if t - cfg.window_seconds < u <= t) <= cfg.window_requests
        assert (
            sum(1 for u, _, c in sent if c == contract and t - cfg.same_contract_seconds < u <= t)
            <= cfg.same_contract_requests
        )


def test_gate_when_identical_requests_then_second_waits_on_the_clock() -> None:
    clock = {"now": 0.0}
    gate = PacedGate(
        pacer=RequestPacer(config=IbPacingConfig(identical_seconds=0.05)),
        clock=lambda: clock["now"],
    )

    async def scenario() -> None:
        async with gate.slot("a", "a"):
            pass
        clock["now"] = 0.01

        async def later() -> None:
            await asyncio.sleep(0.01)
            clock["now"] = 0.06

        task = asyncio.create_task(later())
        async with gate.slot("a", "a"):
            assert clock["now"] >= 0.05
        await task

    asyncio.run(scenario())
    assert gate.waited_seconds > 0
