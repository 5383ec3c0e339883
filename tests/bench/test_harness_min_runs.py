"""The bench harness repeats a measurement until two runs agree, and at least min_runs times."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import pytest
from harness import QUICK_ENV, RESULTS_ENV, Session


@pytest.fixture(autouse=True)
def _no_results_file(monkeypatch):
    """Sessions here write no results file and run at full size, whatever the caller's environment."""
    monkeypatch.delenv(RESULTS_ENV, raising=False)
    monkeypatch.delenv(QUICK_ENV, raising=False)


def _counting(values: list[float]):
    calls: list[float] = []

    def measure() -> dict[str, float]:
        calls.append(values[len(calls)])
        return {"x": calls[-1]}

    return measure, calls


def test_until_stable_when_two_runs_agree_then_it_stops_after_two():
    measure, calls = _counting([1.0, 1.01, 1.02, 1.03])
    with Session("t") as bench:
        bench.until_stable(measure, key="x")
    assert len(calls) == 2


def test_until_stable_when_min_runs_is_six_then_agreeing_runs_go_on_to_six():
    measure, calls = _counting([1.0] * 10)
    with Session("t") as bench:
        last = bench.until_stable(measure, key="x", min_runs=6)
    assert len(calls) == 6
    assert last == {"x": 1.0}
    assert bench.settled["x"]["runs"] == 6


def test_until_stable_when_min_runs_exceeds_max_runs_then_min_runs_wins():
    measure, calls = _counting([1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0])
    with Session("t", max_runs=3) as bench:
        bench.until_stable(measure, key="x", min_runs=7)
    assert len(calls) == 7
    assert bench.settled["x"]["agreed"] is False
