"""Forward-outcome labels for the direction task: return over a horizon and its sign with a dead band."""

from __future__ import annotations

from typing import Annotated, Final

import msgspec
import numpy as np
import numpy.typing as npt

DIRECTIONS: Final = ("down", "flat", "up")


class OutcomeConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """horizon in bars; |return| below dead_band (a fraction, 0.001 = 10 bp) is flat."""

    horizon: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 5
    dead_band: Annotated[float, msgspec.Meta(ge=0.0, lt=1.0)] = 0.001


def forward_returns(close: npt.NDArray[np.float64], horizon: int) -> npt.NDArray[np.float64]:
    """close[t + horizon] / close[t] - 1, NaN for the last `horizon` bars."""
    out = np.full(close.shape, np.nan, dtype=np.float64)
    if close.shape[0] > horizon:
        out[:-horizon] = close[horizon:] / close[:-horizon] - 1.0
    return out


def direction_index(ret: float, dead_band: float) -> int:
    """0 = down, 1 = flat, 2 = up (index into DIRECTIONS)."""
    if not np.isfinite(ret):
        msg = f"forward return is not finite ({ret})"
        raise ValueError(msg)
    if ret > dead_band:
        return 2
    if ret < -dead_band:
        return 0
    return 1
