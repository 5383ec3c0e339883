"""FusionEngine.fuse_observe (whole columns, the live scorer's path) against fuse() + observe()
row by row: the same floats, bit for bit, and the same monitor state, for every method."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from strategy.fusion import (
    FUSED,
    AdaptationConfig,
    Fused,
    FusionConfig,
    FusionEngine,
    MonitorConfig,
    Recalibration,
    StackingParams,
)

CONFIGS = {
    "weighted": FusionConfig(
        weights={"clip": 0.7, "xgb": 0.3},
        disagreement_penalty=0.5,
        recalibrate={"clip": Recalibration(a=0.15, b=0.02)},
    ),
    "clip_weight_zero": FusionConfig(weights={"clip": 0.0, "xgb": 1.0}),
    "confidence_weighted": FusionConfig(method="confidence_weighted"),
    "stacking": FusionConfig(
        method="stacking",
        stacking=StackingParams(models=("clip", "xgb"), coef=(0.8, 1.3), intercept=-0.1),
        recalibrate={"xgb": Recalibration(a=1.2, b=-0.05)},
    ),
    # the row-by-row path, with maps (each row recalibrated once for fusion and monitor alike)
    "smoothed": FusionConfig(
        smoothing_bars=3,
        recalibrate={"clip": Recalibration(a=0.15, b=0.02), FUSED: Recalibration(a=1.1, b=0.01)},
    ),
    "adaptive": FusionConfig(
        adaptation=AdaptationConfig(enabled=True, min_outcomes=2),
        monitor=MonitorConfig(horizon_bars=1, window=20),
        recalibrate={"xgb": Recalibration(a=1.2, b=-0.05)},
    ),
}

probability = st.one_of(
    st.floats(min_value=0.0, max_value=1.0),
    st.sampled_from([0.0, 0.5, 1.0, 1e-9, 1 - 1e-9, math.nan]),
)


@st.composite
def batches(draw: st.DrawFn) -> list[tuple[list[str], list[float], dict[str, list[float]]]]:
    """A few batches of rows: symbols (some repeating across batches), closes and P per model."""
    models = draw(st.sampled_from([("clip", "xgb"), ("xgb",), ("clip", "xgb", "other")]))
    out = []
    for _ in range(draw(st.integers(1, 4))):
        n = draw(st.integers(0, 6))
        symbols = draw(st.lists(st.sampled_from("ABCDEFG"), min_size=n, max_size=n, unique=True))
        closes = draw(st.lists(st.floats(1.0, 2.0), min_size=n, max_size=n))
        probs = {m: draw(st.lists(probability, min_size=n, max_size=n)) for m in models}
        out.append((symbols, closes, probs))
    return out


def _row_by_row(engine: FusionEngine, symbols, closes, probs):  # type: ignore[no-untyped-def]
    out = []
    for i, (symbol, close) in enumerate(zip(symbols, closes, strict=True)):
        row = {m: p[i] for m, p in probs.items()}
        fused = engine.fuse(row, symbol=symbol)
        engine.observe(symbol, close, {**row, FUSED: fused.p_up})
        out.append(fused)
    return out


def _bits(values: list[Fused]) -> list[tuple[int, ...]]:
    """Each fused value's floats as their bit patterns."""
    return [
        tuple(
            int(np.float64(x).view(np.int64))
            for x in (v.p_up, v.confidence, v.disagreement, v.entropy)
        )
        for v in values
    ]


@settings(max_examples=60, deadline=None)
@given(name=st.sampled_from(sorted(CONFIGS)), data=batches())
def test_fuse_observe_and_fuse_columns_when_any_rows_then_bit_identical_to_row_by_row(
    name: str, data: list
) -> None:  # type: ignore[type-arg]
    rows, columns, later = (FusionEngine(config=CONFIGS[name]) for _ in range(3))
    for symbols, closes, probs in data:
        expected = _row_by_row(rows, symbols, closes, probs)
        arrays = {m: np.array(p, dtype=np.float64) for m, p in probs.items()}
        got = columns.fuse_observe(symbols, np.array(closes), arrays)
        assert _bits(got) == _bits(expected)
        # fuse_columns leaves the monitor untouched for observe_columns (None: observed already,
        # with smoothing or adaptation, where the next row's fusion reads the monitor)
        before = _pending(later), later.stats()
        fused, observation = later.fuse_columns(symbols, np.array(closes), arrays)
        assert _bits(fused) == _bits(expected)
        if observation is not None:
            assert (_pending(later), later.stats()) == before
            later.observe_columns(observation)
        else:
            assert CONFIGS[name].smoothing_bars > 1 or CONFIGS[name].adaptation.enabled
    for engine in (columns, later):
        assert engine.weights == rows.weights
        assert engine.stats() == rows.stats()
        assert _pending(engine) == _pending(rows)


def _pending(engine: FusionEngine) -> str:
    """The monitor's unresolved predictions, as text (NaN compares equal to itself there)."""
    return repr({s: list(q) for s, q in engine.monitor._pending.items()})
