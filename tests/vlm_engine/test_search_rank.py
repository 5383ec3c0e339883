"""The ranking core of chart search: windows of bars, forward returns, top hits, precision@k (no model)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tests.vlm_engine.synth import random_window
from vlm_engine.clip.search import (
    QueryError,
    chart_windows,
    check_query,
    precision_at_k,
    top_hits,
    wilson_interval,
)


def _index(n: int = 40, need: int = 8, horizon: int = 3):
    series = {"B": random_window(n, seed=2, symbol="B"), "A": random_window(n, seed=1, symbol="A")}
    labels = {s: ["hammer" if i % 5 == 0 else "" for i in range(n)] for s in series}
    return series, chart_windows(series, bars_needed=need, horizon=horizon, labels=labels)


def test_chart_windows_when_bars_given_then_one_window_per_end_bar_with_forward_return() -> None:
    series, index = _index()
    assert len(index) == 2 * (40 - 8 + 1)
    assert index.symbols[0] == "A"  # symbols in sorted order
    first = index.windows([0])[0]
    assert len(first) == 8
    assert first.timestamps[-1] == index.ts[0] == series["A"].timestamps[7]
    close = series["A"].close
    assert index.forward_return[0] == pytest.approx(close[10] / close[7] - 1.0)
    tail = index.forward_return[: 40 - 7][-3:]  # the last 3 windows of A: horizon past the end
    assert np.isnan(tail).all()
    assert np.isfinite(index.forward_return[: 40 - 7][:-3]).all()
    assert index.labels[3] == "hammer"  # window ending on bar 10 of A


def test_top_hits_when_scores_given_then_best_first_with_none_for_missing_return() -> None:
    _, index = _index()
    scores = np.zeros(len(index), dtype=np.float32)
    scores[[32, 5, 40]] = [0.9, 0.8, 0.7]
    hits = top_hits(index, scores, 3)
    assert [h.row for h in hits] == [32, 5, 40]
    assert [h.rank for h in hits] == [1, 2, 3]
    assert hits[0].forward_return is None  # A's last window
    assert hits[1].forward_return is not None
    assert top_hits(index, scores, 10_000)[-1].rank == len(index)


def test_precision_at_k_when_top_rows_labelled_then_counts_hits_and_base_rate() -> None:
    _, index = _index()
    hammer = np.array([label == "hammer" for label in index.labels])
    scores = np.where(hammer, 1.0, 0.0).astype(np.float32)[:, None]
    scores[np.flatnonzero(hammer)[:2], 0] = -1.0  # two hammers pushed down the ranking
    (row,) = precision_at_k(index, scores, {"hammer": "a hammer"}, k=10)
    assert row.hits == min(10, int(hammer.sum()) - 2)
    assert row.precision == row.hits / 10
    assert row.base_rate == pytest.approx(hammer.mean())
    assert row.positives == int(hammer.sum())
    assert row.low < row.precision <= row.high


def test_wilson_interval_when_known_counts_then_textbook_values() -> None:
    low, high = wilson_interval(10, 20)
    assert (low, high) == (pytest.approx(0.2993, abs=1e-4), pytest.approx(0.7007, abs=1e-4))
    low, high = wilson_interval(0, 20)
    assert low == 0.0
    assert high == pytest.approx(0.1611, abs=1e-4)
    assert wilson_interval(0, 0) == (0.0, 1.0)
    assert not math.isnan(wilson_interval(20, 20)[0])


@pytest.mark.parametrize(
    ("text", "words"), [("", "empty"), (" \n\t", "empty"), ("x" * 301, "limit")]
)
def test_check_query_when_bad_then_query_error(text: str, words: str) -> None:
    with pytest.raises(QueryError, match=words):
        check_query(text)
    assert check_query("  hammer   after a  decline ") == "hammer after a decline"
