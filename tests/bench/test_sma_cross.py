"""The benches' incremental SMA cross gives the signal that summing each window gives."""

from __future__ import annotations

import random
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from sma_cross import SmaCross, window_averages

from strategy.bars import BarStore, BarStoreConfig
from strategy.types import Bar
from vlm_engine.render.window import make_window

T0 = datetime(2024, 3, 1, 14, 30, tzinfo=UTC)


def _bars(rng: random.Random, steps: int) -> list[list[Bar]]:
    """Batches of two symbols: random walks with flat stretches (fast == slow) and reset gaps."""
    batches, price, minute = [], {"A": 100.0, "B": 50.0}, 0
    for i in range(steps):
        minute += 20 if rng.random() < 0.003 else 1  # 20 missing bars: the window resets
        flat = (i // 200) % 3 == 2  # equal closes: the averages tie, the window is summed afresh
        batch = []
        for s in ("A", "B"):
            if not flat:
                price[s] = round(price[s] * (1.0 + rng.uniform(-0.004, 0.004)), 2)
            p = price[s]
            batch.append(Bar(symbol=s, ts=T0 + timedelta(minutes=minute), open=p, high=p + 0.05,
                             low=p - 0.05, close=p, volume=100.0))  # fmt: skip
        batches.append(batch)
    return batches


def test_score_when_windows_stream_then_signals_equal_summing_each_window() -> None:
    store = BarStore(config=BarStoreConfig(window=30, max_jump_atr=0.0))
    scorer = SmaCross()
    scored = ties = 0
    for batch in _bars(random.Random(3), 3_000):
        for bar in batch:
            assert store.add(bar) is None
        windows = [w for w in (store.window(b.symbol) for b in batch) if w is not None]
        signals = scorer.score(windows)
        assert len(signals) == len(windows)
        for w, signal in zip(windows, signals, strict=True):
            fast, slow = window_averages(w)
            ties += fast == slow
            assert signal.p_up == (0.7 if fast > slow else 0.3), (w.symbol, w.ts)
            assert signal.ts == w.ts
            assert signal.symbol == w.symbol
            scored += 1
    assert scored > 5_000
    assert ties > 100  # the flat stretches were scored too


@settings(max_examples=200, deadline=None)
@given(
    ends=st.lists(
        st.one_of(
            st.integers(-(10**9), 4 * 10**9),  # anywhere from 1938 to 2096, back and forth
            st.sampled_from((60, 120, 86_400)),  # a move: added to the previous end below
        ),
        min_size=1,
        max_size=60,
    )
)
def test_score_when_window_ends_move_anyhow_then_signal_ts_is_fromtimestamp_of_the_end(
    ends: list[int],
) -> None:
    scorer = SmaCross()
    last = 1_700_000_000
    for end in ends:
        last = last + end if end in (60, 120, 86_400) else end
        times = np.arange(last - 29 * 60, last + 1, 60, dtype=np.int64)
        close = np.linspace(100.0, 101.0, 30)
        window = make_window(symbol="A", bar_seconds=60, timestamps=times, open=close,
                             high=close, low=close, close=close, volume=close)  # fmt: skip
        (signal,) = scorer.score([window])
        expected = datetime.fromtimestamp(last, tz=UTC)
        assert signal.ts == expected
        assert repr(signal.ts) == repr(expected)  # tzinfo too
