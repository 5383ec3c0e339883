"""The callers that held many bars and stored them one add() at a time now store them with one
BarStore.add_batch call (add() costs +14% per bar since add_batch landed): the backtest's
iter_windows, POST /predict's build_window and the cluster's symbol_windows. Each yields exactly
what the one-by-one loop yielded, and none of them calls add() for bars it holds together."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given, settings

from daemon.cluster.bars_input import BarsAt, symbol_windows
from daemon.errors import InputError
from daemon.model.scoring import build_window
from strategy.backtest.data import frame_batches, iter_windows
from strategy.bars import BarStore, BarStoreConfig, Window
from strategy.market_sim import SimMarketConfig, simulate_frame
from strategy.types import Bar
from tests.daemon.model.test_scoring import _bars
from tests.strategy.test_batch_equals_one_by_one import streams

_ONE_BY_ONE = BarStore.add


def _refuse_add(self: BarStore, bar: Bar, *, now: datetime | None = None) -> None:
    msg = "one bar at a time"
    raise AssertionError(msg)


def _arrays(windows: list[Window]) -> list[object]:
    return [(w.symbol, w.timestamps.tolist(), w.close.tolist()) for w in windows]


def _one_by_one(batches: list[list[Bar]], config: BarStoreConfig) -> list[Window]:
    store = BarStore(config=config)
    out = []
    for batch in batches:
        for bar in batch:
            if _ONE_BY_ONE(store, bar) is None and (w := store.window(bar.symbol)) is not None:
                out.append(w)
    return out


@settings(max_examples=60, deadline=None)
@given(streams())
def test_iter_windows_when_batches_have_bad_bars_and_repeats_then_same_windows_without_add(
    stream: tuple[list[list[Bar]], BarStoreConfig],
) -> None:
    batches, config = stream
    expected = _arrays(_one_by_one(batches, config))
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(BarStore, "add", _refuse_add)
        got = [w for chunk in iter_windows(batches, config, chunk=7) for w in chunk]
    assert _arrays(got) == expected


def test_build_window_when_bars_good_then_one_batch_call_and_full_window(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(BarStore, "add", _refuse_add)
    window = build_window("AAA", _bars(20), bar_seconds=60, min_bars=10)
    assert window.close.tolist() == [b.close for b in _bars(20)]


@pytest.mark.parametrize("bad", [0, 7, 19])
def test_build_window_when_a_bar_is_bad_then_error_names_its_index_as_before(bad: int) -> None:
    bars = _bars(20)
    bars[bad] = Bar(
        **{**{f: getattr(bars[bad], f) for f in bars[bad].__struct_fields__}, "high": 1.0}
    )
    if bad < 19:  # a later bad bar too: the first one is named
        bars[19] = bars[18]
    with pytest.raises(InputError, match=rf"^bars\[{bad}\]: high_below_low: "):
        build_window("AAA", bars, bar_seconds=60, min_bars=10)


def test_symbol_windows_when_range_starts_late_then_earlier_bars_stored_in_one_batch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "bars.csv"
    market = SimMarketConfig(symbols=("A", "B"), seed=4)
    frame = simulate_frame(market, datetime(2024, 1, 1, tzinfo=UTC), 400)
    frame.drop(columns=["pattern", "direction"]).to_csv(path, index=False)
    config = BarStoreConfig(window=30, bar_seconds=60)
    bars_a = [b for batch in frame_batches(frame) for b in batch if b.symbol == "A"]
    start, stop = int(bars_a[300].ts.timestamp()), int(bars_a[350].ts.timestamp())
    expected = [
        w for w in _one_by_one([[b] for b in bars_a], config) if start <= w.timestamps[-1] < stop
    ]
    calls = 0

    def counted(self: BarStore, bar: Bar, *, now: datetime | None = None) -> object:
        nonlocal calls
        calls += 1
        return _ONE_BY_ONE(self, bar, now=now)

    monkeypatch.setattr(BarStore, "add", counted)
    got = symbol_windows(BarsAt(path=str(path)), "A", config, start=start, stop=stop)
    assert _arrays(got) == _arrays(expected)
    assert len(got) == 50
    assert calls <= 51  # the 300 bars before start went in one add_batch
