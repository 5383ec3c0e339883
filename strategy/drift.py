"""Drift of a model's inputs: the population stability index (PSI) of each feature and of the
confidence against the training reference. DriftMonitor yields a DriftReport when a column
crosses the threshold (the daemon logs it as `model.drift_detected` with a retraining
recommendation). Nothing here retrains or trades."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Annotated

import msgspec
import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
PositiveInt = Annotated[int, msgspec.Meta(gt=0)]


class DriftConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """PSI above psi_threshold on any column, over the last window rows (at least min_samples)."""

    psi_threshold: Annotated[float, msgspec.Meta(gt=0)] = 0.25
    window: PositiveInt = 2000
    min_samples: PositiveInt = 500


class DriftReference(msgspec.Struct, frozen=True, kw_only=True):
    """Per column: interior bin edges (training quantiles) and the training fraction per bin."""

    names: tuple[str, ...]
    edges: tuple[tuple[float, ...], ...]
    fractions: tuple[tuple[float, ...], ...]


def drift_reference(x: npt.ArrayLike, names: Sequence[str], *, bins: int = 10) -> DriftReference:
    """Quantile bins of each training column (NaN gets its own bin)."""
    xa = np.asarray(x, dtype=np.float64)
    if xa.ndim != 2 or xa.shape[1] != len(names) or xa.shape[0] == 0:
        msg = f"drift reference needs rows of {len(names)} columns, got shape {xa.shape}"
        raise ValueError(msg)
    edges: list[tuple[float, ...]] = []
    fractions: list[tuple[float, ...]] = []
    for j in range(xa.shape[1]):
        col = xa[:, j]
        finite = col[np.isfinite(col)]
        cuts = (
            np.unique(np.quantile(finite, np.linspace(0, 1, bins + 1)[1:-1]))
            if finite.size
            else np.zeros(0)
        )
        edges.append(tuple(cuts.tolist()))
        fractions.append(tuple(_bin_fractions(col, cuts).tolist()))
    return DriftReference(names=tuple(names), edges=tuple(edges), fractions=tuple(fractions))


def _bin_index(col: FloatArray, cuts: FloatArray) -> npt.NDArray[np.int64]:
    """Bin of each value: 0..len(cuts) by the cuts, len(cuts) + 1 for NaN."""
    index = np.searchsorted(cuts, col, side="right").astype(np.int64)
    index[~np.isfinite(col)] = cuts.shape[0] + 1
    return index


def _bin_fractions(col: FloatArray, cuts: FloatArray) -> FloatArray:
    counts = np.bincount(_bin_index(col, cuts), minlength=cuts.shape[0] + 2).astype(np.float64)
    return np.asarray(counts / max(float(counts.sum()), 1.0), dtype=np.float64)


_PSI_FLOOR = 1e-4


def psi(reference: npt.ArrayLike, current: npt.ArrayLike, *, floor: float = _PSI_FLOOR) -> float:
    """Population stability index sum((c - r) * ln(c / r)) with fractions floored to avoid log(0)."""
    r = np.maximum(np.asarray(reference, dtype=np.float64), floor)
    c = np.maximum(np.asarray(current, dtype=np.float64), floor)
    return float(np.sum((c - r) * np.log(c / r)))


class DriftReport(msgspec.Struct, frozen=True, kw_only=True):
    """PSI per column over the recent window; drifted names the columns above the threshold."""

    ts: datetime | None
    psi: dict[str, float]
    drifted: tuple[str, ...]
    max_psi: float
    threshold: float
    samples: int
    recommendation: str = "retrain"


class DriftMonitor:
    """Rolling PSI of recent rows against the training reference; reports each crossing once."""

    def __init__(self, *, reference: DriftReference, config: DriftConfig) -> None:
        self.reference = reference
        self.config = config
        self._cuts = [np.asarray(e, dtype=np.float64) for e in reference.edges]
        # Every column's cuts in one (columns, most cuts) table, padded with +inf (never <= a
        # finite value), and each column's NaN bin: a value's bin is the number of its column's
        # cuts <= it, searchsorted(side="right") for all columns at once, one comparison per cut.
        most = max((c.shape[0] for c in self._cuts), default=0)
        self._cut_table = np.full((len(self._cuts), most), np.inf)
        for j, c in enumerate(self._cuts):
            self._cut_table[j, : c.shape[0]] = c
        self._nan_bins = np.array([c.shape[0] + 1 for c in self._cuts], dtype=np.int64)
        # Columns grouped by their number of bins, with the floored training fractions: psi() of
        # a group's columns is one 2-D expression, summed along rows (the same pairwise sum of
        # the same values as psi() of each column alone).
        by_bins: dict[int, list[int]] = {}
        for j, f in enumerate(reference.fractions):
            by_bins.setdefault(len(f), []).append(j)
        self._psi_groups = [
            (
                np.array(cols, dtype=np.intp),
                np.maximum(np.array([reference.fractions[j] for j in cols]), _PSI_FLOOR),
            )
            for cols in by_bins.values()
        ]
        # The window's rows as flat bin numbers (column j's bins start at j * stride) in a ring,
        # and their counts per flat bin: a batch of rows is added and evicted with two bincounts.
        self._stride = max((len(e) + 2 for e in reference.edges), default=1)
        self._offsets = np.arange(len(self._cuts), dtype=np.int64) * self._stride
        self._ring = np.zeros((config.window, len(self._cuts)), dtype=np.int64)
        self._head = 0
        self._filled = 0
        self._counts = np.zeros(len(self._cuts) * self._stride, dtype=np.int64)
        self._alerted = False

    def observe(self, x: npt.ArrayLike) -> None:
        """Add rows (n, columns in reference order) to the rolling window."""
        xa = np.atleast_2d(np.asarray(x, dtype=np.float64))
        if xa.shape[1] != len(self._cuts):
            msg = f"drift monitor expects {len(self._cuts)} columns, got {xa.shape[1]}"
            raise ValueError(msg)
        bins = self._bins(xa)
        size, total = self.config.window, self._counts.shape[0]
        for start in range(0, bins.shape[0], size):
            piece = bins[start : start + size] + self._offsets
            k = piece.shape[0]
            slots = (self._head + np.arange(k)) % size
            occupied = slots[(self._filled + np.arange(k)) >= size]  # the oldest rows, evicted
            self._counts -= np.bincount(self._ring[occupied].reshape(-1), minlength=total)
            self._ring[slots] = piece
            self._counts += np.bincount(piece.reshape(-1), minlength=total)
            self._head = (self._head + k) % size
            self._filled = min(size, self._filled + k)

    def _bins(self, xa: FloatArray) -> npt.NDArray[np.int64]:
        """_bin_index() of every column of xa, (rows, columns)."""
        counts = np.zeros(xa.shape, dtype=np.int64)
        for cuts in self._cut_table.T:  # a few cuts per column: one pass each over the rows
            counts += cuts <= xa
        return np.where(np.isfinite(xa), counts, self._nan_bins)

    def report(self, now: datetime | None = None) -> DriftReport:
        n = self._filled
        counts = self._counts.reshape(len(self._cuts), self._stride)
        by_column = np.zeros(len(self._cuts))
        for cols, r in self._psi_groups:  # psi() of each column, a group of columns at a time
            c = np.maximum(counts[cols, : r.shape[1]] / max(n, 1), _PSI_FLOOR)
            by_column[cols] = ((c - r) * np.log(c / r)).sum(axis=1)
        values = dict(zip(self.reference.names, by_column.tolist(), strict=True))
        threshold = self.config.psi_threshold
        drifted = tuple(k for k, v in values.items() if v > threshold)
        return DriftReport(
            ts=now,
            psi=values,
            drifted=drifted,
            max_psi=max(values.values(), default=0.0),
            threshold=threshold,
            samples=n,
        )

    def check(self, now: datetime | None = None) -> DriftReport | None:
        """A report when PSI first crosses the threshold (re-armed once it falls back below)."""
        if self._filled < self.config.min_samples:
            return None
        report = self.report(now)
        if report.drifted and not self._alerted:
            self._alerted = True
            return report
        if not report.drifted:
            self._alerted = False
        return None
