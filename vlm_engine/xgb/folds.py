"""Walk-forward folds in time, purged and embargoed: no training label window touches the test block."""

from __future__ import annotations

import msgspec
import numpy as np
import numpy.typing as npt

IntArray = npt.NDArray[np.int64]


class Fold(msgspec.Struct, frozen=True, kw_only=True):
    """Row indexes of one fold; test_start/test_end are the test block's first and last sample ts."""

    train: IntArray
    test: IntArray
    test_start: int
    test_end: int


def walk_forward_folds(
    ts: npt.ArrayLike,
    label_end: npt.ArrayLike,
    *,
    n_folds: int,
    embargo_seconds: int = 0,
    min_train_fraction: float = 0.2,
) -> list[Fold]:
    """Expanding-window folds over time: train on the past, test on the next block.

    The unique sample times are cut into blocks: the first min_train_fraction of them is only
    ever trained on, the rest is split into n_folds test blocks. A sample is used for training
    only when its label window ends before the test block starts minus the embargo (purging),
    so no training label overlaps a test sample's bar or label.
    """
    tsa = np.asarray(ts, dtype=np.int64)
    ends = np.asarray(label_end, dtype=np.int64)
    if tsa.shape != ends.shape:
        msg = "ts and label_end must have the same length"
        raise ValueError(msg)
    if n_folds < 1:
        msg = f"n_folds must be >= 1, got {n_folds}"
        raise ValueError(msg)
    times = np.unique(tsa)
    first_test = int(len(times) * min_train_fraction)
    if len(times) - first_test < n_folds or first_test < 1:
        msg = f"{len(times)} distinct times are too few for {n_folds} walk-forward folds"
        raise ValueError(msg)
    edges = np.linspace(first_test, len(times), n_folds + 1).astype(np.int64)
    folds: list[Fold] = []
    for k in range(n_folds):
        start, stop = int(times[edges[k]]), int(times[edges[k + 1] - 1])
        test = np.flatnonzero((tsa >= start) & (tsa <= stop))
        train = np.flatnonzero((tsa < start) & (ends < start - embargo_seconds))
        folds.append(Fold(train=train, test=test, test_start=start, test_end=stop))
    return folds


def holdout_split(
    ts: npt.ArrayLike, label_end: npt.ArrayLike, *, valid_fraction: float, embargo_seconds: int = 0
) -> tuple[IntArray, IntArray]:
    """Time-ordered train/validation split for early stopping, purged like the folds."""
    tsa = np.asarray(ts, dtype=np.int64)
    ends = np.asarray(label_end, dtype=np.int64)
    times = np.unique(tsa)
    cut = int(times[min(max(int(len(times) * (1 - valid_fraction)), 1), len(times) - 1)])
    valid = np.flatnonzero(tsa >= cut)
    train = np.flatnonzero((tsa < cut) & (ends < cut - embargo_seconds))
    return train, valid
