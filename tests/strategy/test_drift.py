from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from strategy.drift import (
    DriftConfig,
    DriftMonitor,
    DriftReference,
    _bin_index,
    drift_reference,
    psi,
)


def _column(rng: np.random.Generator, kind: str, n: int) -> np.ndarray:
    if kind == "normal":
        return rng.normal(size=n)
    if kind == "few":  # few distinct values: fewer cuts after np.unique
        return rng.integers(0, 3, n).astype(np.float64)
    if kind == "nan":  # no finite value: no cuts at all
        return np.full(n, np.nan)
    col = rng.normal(size=n)
    col[rng.random(n) < 0.6] = np.nan
    return col


def _psi_of_each_column(ref: DriftReference, rows: np.ndarray) -> dict[str, float]:
    """psi() of each column alone, binned with _bin_index (the monitor's figures before they
    were computed a group of columns at a time)."""
    out = {}
    for j, (name, edges, fractions) in enumerate(
        zip(ref.names, ref.edges, ref.fractions, strict=True)
    ):
        index = _bin_index(rows[:, j], np.asarray(edges, dtype=np.float64))
        counts = np.bincount(index, minlength=len(edges) + 2)
        out[name] = psi(fractions, counts / max(rows.shape[0], 1))
    return out


@settings(max_examples=60, deadline=None)
@given(
    kinds=st.lists(st.sampled_from(["normal", "few", "nan", "sparse"]), min_size=1, max_size=8),
    batches=st.lists(st.integers(1, 70), min_size=1, max_size=6),
    window=st.integers(1, 120),
    shift=st.floats(-2.0, 2.0),
    seed=st.integers(0, 10_000),
)
def test_report_when_columns_grouped_by_bins_then_psi_of_each_column_bit_for_bit(
    kinds: list[str], batches: list[int], window: int, shift: float, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    train = np.column_stack([_column(rng, k, 400) for k in kinds])
    ref = drift_reference(train, [f"c{j}" for j in range(len(kinds))])
    monitor = DriftMonitor(reference=ref, config=DriftConfig(window=window, min_samples=1))
    seen = np.zeros((0, len(kinds)))
    for size in batches:
        rows = np.column_stack([_column(rng, k, size) for k in kinds]) + shift
        rows[rng.random(rows.shape) < 0.05] = np.inf  # non-finite: the NaN bin
        rows[rng.random(rows.shape) < 0.05] = -np.inf
        monitor.observe(rows)
        seen = np.vstack([seen, rows])[-window:]
        assert monitor.report().psi == _psi_of_each_column(ref, seen)  # exact, not approx
