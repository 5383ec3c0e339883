"""bench_nautilus's summary is generous to NautilusTrader (our median run against its best one) and
reads the runs' own ratios as a sample (median, its interval, the sign test against the goal)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from bench_nautilus import generous_ratios, ratio_sample


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


def _ratios(*values: float) -> list[dict[str, float]]:
    return [{"ours_journal_100_over_nautilus": v} for v in values]


def test_ratio_sample_when_eight_runs_then_median_interval_and_sign_test():
    runs = _ratios(5.13, 5.21, 5.44, 5.82, 4.95, 5.81, 4.92, 5.03)
    sample = ratio_sample(runs, [100], goal=5.0)
    assert sample["ours_journal_100_over_nautilus_median"] == pytest.approx((5.13 + 5.21) / 2)
    assert sample["ours_journal_100_over_nautilus_runs"] == 8
    # order statistics: for 8 runs the 95% interval of the median runs from the 1st to the 8th
    assert sample["ours_journal_100_over_nautilus_median_low"] == pytest.approx(4.92)
    assert sample["ours_journal_100_over_nautilus_median_high"] == pytest.approx(5.82)
    # 6 of 8 above 5x: P(6 or more of 8 heads) = (28 + 8 + 1) / 256
    assert sample["ours_journal_100_over_nautilus_above_goal_p"] == pytest.approx(37 / 256)


def test_ratio_sample_when_every_run_clears_the_goal_then_the_sign_test_says_so():
    sample = ratio_sample(_ratios(5.6, 5.9, 6.1, 5.7, 5.8, 6.0, 5.5, 5.65), [100], goal=5.0)
    assert sample["ours_journal_100_over_nautilus_above_goal_p"] == pytest.approx(1 / 256)
    assert sample["ours_journal_100_over_nautilus_median_low"] > 5.0


def test_ratio_sample_when_fewer_than_six_runs_then_no_interval_is_claimed(capsys):
    sample = ratio_sample(_ratios(5.1, 5.3, 4.9), [100], goal=5.0)
    assert "ours_journal_100_over_nautilus_median_low" not in sample
    assert sample["ours_journal_100_over_nautilus_above_goal_p"] == pytest.approx(0.5)
    assert "no 95% interval from 3 runs" in capsys.readouterr().out


def test_ratio_sample_when_nautilus_did_not_run_then_nothing():
    assert ratio_sample([{"ours_journal_1_bars_per_s": 60.0}], [1], goal=5.0) == {}
