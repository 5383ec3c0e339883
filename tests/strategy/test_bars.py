"""BarStore: every invariant of a bar is checked, a bad bar never enters the window."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta, timezone

import msgspec
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from strategy.bars import BarRejected, BarStore, BarStoreConfig, Window, bar_at
from strategy.types import Bar

T0 = datetime(2024, 3, 1, 14, 30, tzinfo=UTC)
STEP = 60


def _bar(i: int, *, symbol: str = "AAPL", price: float = 100.0, **changes: object) -> Bar:
    fields: dict[str, object] = {
        "symbol": symbol,
        "ts": T0 + timedelta(seconds=STEP * i),
        "open": price,
        "high": price + 1.0,
        "low": price - 1.0,
        "close": price + 0.5,
        "volume": 1000.0,
    }
    fields.update(changes)
    return Bar(**fields)  # type: ignore[arg-type]


def _store(window: int = 8, **config: object) -> BarStore:
    return BarStore(config=BarStoreConfig(window=window, bar_seconds=STEP, **config))  # type: ignore[arg-type]


def _filled(n: int = 8, window: int = 8, **config: object) -> BarStore:
    store = _store(window, **config)
    for i in range(n):
        assert store.add(_bar(i, price=100.0 + i)) is None
    return store


def _snapshot(store: BarStore, symbol: str = "AAPL") -> tuple[object, ...]:
    w = store.window(symbol)
    arrays = (
        None
        if w is None
        else tuple(a.tolist() for a in (w.timestamps, w.open, w.high, w.low, w.close, w.volume))
    )
    return store.count(symbol), store.last_ts(symbol), arrays


# ---- valid OHLCV, built so every invariant holds exactly in floating point ------------------
prices = st.floats(min_value=0.01, max_value=1e5, allow_nan=False, allow_infinity=False)
spans = st.floats(min_value=0.0, max_value=1e3, allow_nan=False, allow_infinity=False)
units = st.floats(min_value=0.0, max_value=1.0)
volumes = st.floats(min_value=0.0, max_value=1e9, allow_nan=False, allow_infinity=False)


@st.composite
def ohlcv(draw: st.DrawFn) -> dict[str, float]:
    low, span = draw(prices), draw(spans)
    return {
        "low": low,
        "high": low + span,
        "open": low + draw(units) * span,
        "close": low + draw(units) * span,
        "volume": draw(volumes),
    }


@st.composite
def broken(draw: st.DrawFn) -> tuple[str, dict[str, object]]:
    """A bar's values with exactly one invariant broken, and the reason code expected."""
    values: dict[str, object] = dict(draw(ohlcv()))
    kind = draw(
        st.sampled_from(
            [
                "non_finite",
                "non_positive_price",
                "negative_volume",
                "high_below_low",
                "high_below_body",
                "low_above_body",
                "misaligned_ts",
                "naive_ts",
            ]
        )
    )
    if kind == "non_finite":
        field = draw(st.sampled_from(["open", "high", "low", "close", "volume"]))
        values[field] = draw(st.sampled_from([math.nan, math.inf, -math.inf]))
    elif kind == "non_positive_price":
        field = draw(st.sampled_from(["open", "high", "low", "close"]))
        values[field] = -draw(st.floats(min_value=0.0, max_value=1e5))
    elif kind == "negative_volume":
        values["volume"] = -draw(st.floats(min_value=1e-6, max_value=1e9))
    elif kind == "high_below_low":
        low = draw(prices)
        values.update(low=low, open=low, close=low, high=low * draw(st.floats(0.01, 0.999)))
    elif kind == "high_below_body":
        low = draw(prices)
        top = low * draw(st.floats(1.01, 2.0))
        high = low + draw(st.floats(0.0, 0.99)) * (top - low)
        body = {"open": top, "close": low} if draw(st.booleans()) else {"open": low, "close": top}
        values.update(low=low, high=high, **body)
    elif kind == "low_above_body":
        bottom = draw(prices)
        high = bottom * draw(st.floats(1.01, 2.0))
        low = high - draw(st.floats(0.0, 0.99)) * (high - bottom)
        body = (
            {"open": bottom, "close": high}
            if draw(st.booleans())
            else {"open": high, "close": bottom}
        )
        values.update(low=low, high=high, **body)
    elif kind == "misaligned_ts":
        values["ts"] = T0 + timedelta(seconds=STEP * 20 + draw(st.integers(1, STEP - 1)))
    else:
        values["ts"] = (T0 + timedelta(seconds=STEP * 20)).replace(tzinfo=None)
    return kind, values


@settings(max_examples=300, deadline=None)
@given(case=broken())
def test_add_when_bar_breaks_one_invariant_then_rejected_with_reason_and_window_unchanged(
    case: tuple[str, dict[str, object]],
) -> None:
    kind, values = case
    store = _filled()
    before = _snapshot(store)
    fields: dict[str, object] = {"symbol": "AAPL", "ts": T0 + timedelta(seconds=STEP * 8)}
    fields.update(values)
    bar = Bar(**fields)  # type: ignore[arg-type]

    problem = store.add(bar)

    assert isinstance(problem, BarRejected)
    assert problem.reason == kind
    assert problem.symbol == "AAPL"
    assert problem.ts == bar.ts
    assert problem.detail
    assert _snapshot(store) == before


@settings(max_examples=100, deadline=None)
@given(
    bars=st.lists(
        st.tuples(ohlcv(), st.integers(min_value=1, max_value=3)), min_size=1, max_size=40
    ),
    window=st.integers(min_value=8, max_value=16),
)
def test_add_when_sequence_is_valid_then_all_accepted_and_window_is_last_bars(
    bars: list[tuple[dict[str, float], int]], window: int
) -> None:
    # Independent random bars jump around by construction: the cross-bar jump check (tested on its
    # own) is off here, this is about sequence, gaps and the window.
    store = _store(window, max_gap_bars=2, gap_policy="reject", max_jump_atr=0.0)
    accepted: list[Bar] = []
    step_index = 0
    for values, steps in bars:
        step_index += steps
        bar = Bar(symbol="MSFT", ts=T0 + timedelta(seconds=STEP * step_index), **values)
        assert store.add(bar) is None
        accepted.append(bar)

    w = store.window("MSFT")
    if len(accepted) < window:
        assert w is None
        assert store.count("MSFT") == len(accepted)
        return
    assert w is not None
    tail = accepted[-window:]
    assert len(w) == window
    assert w.ts == tail[-1].ts
    assert w.open.tolist() == [b.open for b in tail]
    assert w.high.tolist() == [b.high for b in tail]
    assert w.low.tolist() == [b.low for b in tail]
    assert w.close.tolist() == [b.close for b in tail]
    assert w.volume.tolist() == [b.volume for b in tail]
    assert w.timestamps.tolist() == [int(b.ts.timestamp()) for b in tail]


def test_add_when_timestamp_repeats_then_duplicate_ts_and_window_unchanged() -> None:
    store = _filled()
    before = _snapshot(store)
    problem = store.add(_bar(7, price=50.0))
    assert problem is not None
    assert problem.reason == "duplicate_ts"
    assert _snapshot(store) == before


def test_add_when_timestamp_goes_back_then_out_of_order_and_window_unchanged() -> None:
    store = _filled()
    before = _snapshot(store)
    problem = store.add(_bar(3))
    assert problem is not None
    assert problem.reason == "out_of_order"
    assert _snapshot(store) == before


def test_add_when_gap_within_max_gap_bars_then_accepted_without_reset() -> None:
    store = _filled(max_gap_bars=5, gap_policy="reject")
    assert store.add(_bar(7 + 6)) is None  # 5 bars missing
    assert store.count("AAPL") == 8
    assert store.last_ts("AAPL") == _bar(13).ts


def test_add_when_gap_too_long_and_policy_reject_then_rejected_and_window_unchanged() -> None:
    store = _filled(max_gap_bars=5, gap_policy="reject")
    before = _snapshot(store)
    problem = store.add(_bar(7 + 7))  # 6 bars missing
    assert problem is not None
    assert problem.reason == "gap"
    assert "6 bars missing" in problem.detail
    assert _snapshot(store) == before


def test_add_when_gap_too_long_and_policy_reset_then_window_restarts_from_bar() -> None:
    store = _filled(max_gap_bars=5, gap_policy="reset")
    assert store.add(_bar(100, price=42.0)) is None
    assert store.count("AAPL") == 1
    assert store.window("AAPL") is None
    assert store.last_ts("AAPL") == _bar(100).ts
    for i in range(101, 108):
        assert store.add(_bar(i, price=42.0)) is None
    w = store.window("AAPL")
    assert w is not None
    assert w.timestamps[0] == int(_bar(100).ts.timestamp())
    assert w.open.tolist() == [42.0] * 8


def test_add_when_gap_too_long_and_policy_accept_then_kept_in_window() -> None:
    store = _filled(max_gap_bars=0, gap_policy="accept")
    assert store.add(_bar(50, price=7.0)) is None
    w = store.window("AAPL")
    assert w is not None
    assert w.open[-1] == 7.0
    assert w.open[-2] == 107.0


def test_window_when_fewer_bars_than_length_then_none() -> None:
    store = _filled(n=7)
    assert store.window("AAPL") is None
    assert store.window("UNKNOWN") is None
    assert store.add(_bar(7)) is None
    assert store.window("AAPL") is not None


def test_window_when_returned_then_arrays_are_read_only_copies() -> None:
    store = _filled()
    w = store.window("AAPL")
    assert w is not None
    with pytest.raises(ValueError, match="read-only"):
        w.close[0] = 1.0
    with pytest.raises(ValueError, match="read-only"):
        w.timestamps[0] = 1
    assert store.add(_bar(8, price=110.0)) is None
    assert w.open[-1] == 107.0  # the earlier window does not change under later adds
    assert w.open.dtype == np.float64
    assert w.timestamps.dtype == np.int64
    assert isinstance(w, Window)


def test_window_when_ring_wraps_many_times_then_oldest_first() -> None:
    store = _store(8)
    for i in range(37):
        assert store.add(_bar(i, price=float(i + 10))) is None
    w = store.window("AAPL")
    assert w is not None
    assert w.open.tolist() == [float(i + 10) for i in range(29, 37)]
    assert bar_at(w, -1) == _bar(36, price=46.0)
    assert bar_at(w, 0) == _bar(29, price=39.0)
    assert w.bar_seconds == STEP


def test_add_when_symbols_interleave_then_windows_are_independent() -> None:
    store = _store(8)
    for i in range(8):
        assert store.add(_bar(i, symbol="A", price=10.0)) is None
        assert store.add(_bar(i, symbol="B", price=20.0)) is None
    assert store.add(_bar(3, symbol="A")) is not None
    a, b = store.window("A"), store.window("B")
    assert a is not None
    assert b is not None
    assert a.open.tolist() == [10.0] * 8
    assert b.open.tolist() == [20.0] * 8
    assert set(store.symbols) == {"A", "B"}


def test_reset_when_called_then_symbol_starts_over_and_older_bar_accepted() -> None:
    store = _filled()
    store.reset("AAPL")
    assert store.window("AAPL") is None
    assert store.last_ts("AAPL") is None
    assert store.symbols == ()
    assert store.add(_bar(0)) is None
    assert store.count("AAPL") == 1
    store.reset("NEVER_SEEN")


def test_add_when_ts_in_other_timezone_then_accepted_on_same_grid() -> None:
    store = _store(8)
    eastern = timezone(timedelta(hours=-5))
    assert store.add(_bar(0, ts=T0.astimezone(eastern))) is None
    assert store.add(_bar(1)) is None
    problem = store.add(_bar(1, ts=_bar(1).ts.astimezone(eastern)))
    assert problem is not None
    assert problem.reason == "duplicate_ts"


def test_add_when_ts_has_microseconds_then_misaligned() -> None:
    store = _store(8)
    problem = store.add(_bar(0, ts=T0 + timedelta(microseconds=1)))
    assert problem is not None
    assert problem.reason == "misaligned_ts"
    assert store.count("AAPL") == 0


@pytest.mark.parametrize(
    ("raw", "path"),
    [
        ({"window": 4}, "$.window"),
        ({"bar_seconds": 0}, "$.bar_seconds"),
        ({"gap_policy": "fill"}, "$.gap_policy"),
        ({"max_gap_bars": -1}, "$.max_gap_bars"),
        ({"windows": 64}, "windows"),
    ],
)
def test_config_when_value_invalid_then_validation_error_names_key(
    raw: dict[str, object], path: str
) -> None:
    with pytest.raises(msgspec.ValidationError, match=path.replace("$", r"\$")):
        msgspec.convert(raw, BarStoreConfig)


def test_config_when_defaults_then_documented_values() -> None:
    cfg = BarStoreConfig()
    assert (cfg.window, cfg.bar_seconds, cfg.gap_policy, cfg.max_gap_bars) == (64, 60, "reset", 5)


def test_add_batch_when_more_bars_than_the_window_then_ring_holds_the_last_ones() -> None:
    store = BarStore(config=BarStoreConfig(window=8, bar_seconds=60))
    t0 = datetime(2024, 1, 2, 15, 0, tzinfo=UTC)
    bars = [
        Bar(symbol="AAPL", ts=t0 + timedelta(minutes=i), open=1.0 + i, high=2.0 + i,
            low=0.5 + i, close=1.5 + i, volume=10.0 * i)
        for i in range(300)  # past the window and past the first chunk (cap 264)
    ]  # fmt: skip
    assert store.add_batch(bars).accepted == bars
    ring = store._rings["AAPL"]
    assert (ring.count, ring.close, ring.last_dt) == (8, 300.5, t0 + timedelta(minutes=299))
    assert ring.last_ts == int((t0 + timedelta(minutes=299)).timestamp())
    assert list(ring.columns[3][ring.end - 3 : ring.end]) == [298.5, 299.5, 300.5]
    assert list(ring.stamps[ring.end - 2 : ring.end]) == [
        int((t0 + timedelta(minutes=i)).timestamp()) for i in (298, 299)
    ]
