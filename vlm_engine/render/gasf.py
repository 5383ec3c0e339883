"""Gramian Angular Summation Field of a close series, as a field and as an RGB image."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]


def gasf(series: npt.ArrayLike) -> FloatArray:
    """NxN GASF: cos(phi_i + phi_j) with phi = arccos of the series min-max scaled to [-1, 1]."""
    x = np.asarray(series, dtype=np.float64)
    if x.ndim != 1 or x.size == 0:
        msg = f"gasf: expected a non-empty 1-d series, got shape {x.shape}"
        raise ValueError(msg)
    lo, hi = float(x.min()), float(x.max())
    scaled = np.zeros_like(x) if hi == lo else (2.0 * (x - lo) / (hi - lo) - 1.0)
    scaled = np.clip(scaled, -1.0, 1.0)
    sine = np.sqrt(1.0 - scaled**2)
    field: FloatArray = np.outer(scaled, scaled) - np.outer(sine, sine)
    return field


def gasf_image(series: npt.ArrayLike, *, height: int, width: int) -> npt.NDArray[np.uint8]:
    """GASF resized (nearest) to height x width, coloured blue (-1) through green (0) to red (+1)."""
    field = gasf(series)
    n = field.shape[0]
    rows = np.arange(height) * n // height
    cols = np.arange(width) * n // width
    v = (field + 1.0) / 2.0
    rgb = np.rint(np.stack([v, 1.0 - np.abs(2.0 * v - 1.0), 1.0 - v], axis=-1) * 255.0)
    coloured = rgb.astype(np.uint8)
    # nearest resize: rows and cols are non-decreasing, so repeating each source row/column
    # by how often it is picked is the same as coloured[rows[:, None], cols[None, :]], faster
    out: npt.NDArray[np.uint8] = coloured.repeat(np.bincount(rows, minlength=n), axis=0).repeat(
        np.bincount(cols, minlength=n), axis=1
    )
    return out
