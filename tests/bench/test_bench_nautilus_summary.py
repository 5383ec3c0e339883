"""bench_nautilus's summary is generous to NautilusTrader: our median run against its best one."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from bench_nautilus import generous_ratios


def test_generous_ratios_when_runs_vary_then_our_median_over_its_best_run():
    runs = [
        {"ours_journal_100_bars_per_s": 60.0, "nautilus_100_bars_per_s": 10.0},
        {"ours_journal_100_bars_per_s": 90.0, "nautilus_100_bars_per_s": 20.0},
        {"ours_journal_100_bars_per_s": 70.0, "nautilus_100_bars_per_s": 15.0},
    ]
    ratios = generous_ratios(runs, [100])
    assert ratios == {"ours_journal_100_median_over_nautilus_best": pytest.approx(70.0 / 20.0)}


def test_generous_ratios_when_nautilus_did_not_run_then_no_ratio():
    runs = [{"ours_journal_1_bars_per_s": 60.0}]
    assert generous_ratios(runs, [1]) == {}
